"""JAX fused LSTM: cuDNN through jax.experimental.rnn on GPU, a compiled
lax.scan elsewhere."""

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from keras_lstm.backend import cpu
from keras_lstm.backend.cell import STANDARD

_DTYPES = ("float16", "bfloat16", "float32", "float64")
# cuDNN's LSTM in jax.experimental.rnn takes float32 only (its lowering
# refuses 16-bit types, and float64 is not wired to the kernel): 16-bit
# inputs compute in float32 there; float64 runs the scan on the GPU.
_CUDNN_DTYPES = ("float16", "bfloat16", "float32")


def _on_gpu() -> bool:
    # Under jit the inputs are tracers without a device: the default backend
    # is where the computation lands.
    return jax.default_backend() == "gpu"


def _cudnn(inputs, cell=STANDARD) -> bool:
    return _on_gpu() and cell.standard and str(inputs.dtype) in _CUDNN_DTYPES


def name(inputs, cell=STANDARD) -> str:
    return "jax-cudnn" if _cudnn(inputs, cell) else "jax-scan"


def scan_runs_under_xla() -> bool:
    """jax.lax.scan compiles and differentiates under XLA."""
    return True


def xla_hides_fused() -> bool:
    """Every JAX kernel here runs inside jit (cuDNN too)."""
    return False


def _math_dtype(inputs, cell=STANDARD) -> str:
    """XLA on CPU has no fast 16-bit path (bfloat16 was 1.3x to 2.2x slower
    than float32 here, benchmarks/ `--workloads mixed`, and about 2x on an
    AVX-512 Xeon with AMX): the scan computes in float32 there."""
    dtype = str(inputs.dtype)
    if _cudnn(inputs, cell):
        return "float32"
    if _on_gpu():
        return dtype
    return cpu.math_dtype(dtype, fast_bfloat16=False)


def notes(inputs, units, cell=STANDARD) -> tuple[str, ...]:
    del units
    notes = cpu.notes(
        str(inputs.dtype),
        _math_dtype(inputs, cell),
        "jax.experimental.rnn's cuDNN LSTM takes float32 only"
        if _cudnn(inputs, cell)
        else "XLA on CPU has no fast 16-bit path",
    )
    if _on_gpu() and not cell.standard:
        notes += (
            f"cuDNN's LSTM computes tanh and sigmoid without recurrent "
            f"dropout; this step ({cell.describe()}) runs the compiled "
            "scan on the GPU",
        )
    if _cudnn(inputs, cell) and _tf32():
        notes += (
            "float32 may run as TF32 on this GPU (JAX's default matmul "
            "precision; jax.default_matmul_precision('highest'), or "
            "keras_lstm.full_float32(), for full float32)",
        )
    return notes


def _tf32() -> bool:
    """Whether JAX's matmul precision leaves float32 free to run as TF32
    (its default on GPUs with tensor cores)."""
    precision = jax.config.jax_default_matmul_precision
    return str(precision).lower() not in (
        "highest",
        "float32",
        "precision.highest",
    )


def _cudnn_precision():
    """The precision passed to cuDNN: HIGHEST (no TF32) or HIGH (TF32), as
    JAX's matmul precision says. Passed explicitly: a "default" or
    "bfloat16" matmul precision makes jax.experimental.rnn raise
    ("bfloat16 support not implemented for LSTM"), and TF32 is the nearest
    cuDNN has to it."""
    return jax.lax.Precision.HIGH if _tf32() else jax.lax.Precision.HIGHEST


@contextlib.contextmanager
def full_float32():
    """JAX's matmul precision at "highest" (no TF32), restored after."""
    with jax.default_matmul_precision("highest"):
        yield


def syncs_to_branch(inputs) -> bool:
    """A data-dependent branch runs on the device (a conditional in the
    compiled program or graph, or an eager host value): no sync."""
    return False


def takes_mask(inputs, cell=STANDARD) -> bool:
    """The scan selects per step from a mask as cheaply as from lengths;
    cuDNN needs lengths."""
    return not _cudnn(inputs, cell)


def unsupported(inputs, cell=STANDARD) -> tuple[str, ...]:
    if str(inputs.dtype) not in _DTYPES:
        return (
            f"the {name(inputs, cell)} kernel does not take {inputs.dtype}",
        )
    return ()


def bidirectional_unsupported(inputs, masked_with_states) -> tuple[str, ...]:
    del masked_with_states  # cuDNN reverses each row within its length
    if not _on_gpu():
        return (
            "JAX has a fused bidirectional LSTM only on GPU (cuDNN, "
            "jax.experimental.rnn); here each direction runs its own "
            "jax-scan kernel",
        )
    if not _cudnn(inputs):
        return (
            f"jax.experimental.rnn's cuDNN LSTM does not take "
            f"{inputs.dtype}; each direction runs its own jax-scan kernel",
        )
    return unsupported(inputs)


def pack_cudnn_weights(*directions):
    """Keras weights as the flat cuDNN parameter vector of jax.experimental.rnn.

    Each direction is (kernel, recurrent_kernel, bias); one for a
    unidirectional layer, forward then backward for a bidirectional one.
    cuDNN (like torch) stores, for every direction, W_ih (4u, features) and
    W_hh (4u, u), then, for every direction, b_ih and b_hh; gates i, f, g, o:
    the Keras gate order, transposed. Keras has one bias, so b_hh is zero.
    """
    weights = [
        w.T.ravel()
        for kernel, recurrent_kernel, _ in directions
        for w in (kernel, recurrent_kernel)
    ]
    biases = [
        b for *_, bias in directions for b in (bias, jnp.zeros_like(bias))
    ]
    return jnp.concatenate(weights + biases)


def _cudnn_lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    batch, timesteps, features = inputs.shape
    units = recurrent_kernel.shape[0]
    if lengths is None:
        lengths = jnp.full((batch,), timesteps, "int32")
    sequence, h, c = rnn.lstm(
        inputs,
        h0[None],
        c0[None],
        pack_cudnn_weights((kernel, recurrent_kernel, bias)),
        lengths.astype("int32"),
        input_size=features,
        hidden_size=units,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
        precision=_cudnn_precision(),
    )
    return sequence, h[0], c[0]


@functools.partial(jax.jit, static_argnames=("sequence", "cell", "unroll"))
def _scan(
    inputs,
    h0,
    c0,
    mask,
    recurrent_mask,
    kernel,
    recurrent_kernel,
    bias,
    sequence,
    cell,
    unroll,
):
    activation, recurrent_activation = cell.functions(jnp.tanh, jax.nn.sigmoid)

    # The input projection runs inside the step, not hoisted out as one big
    # matmul: on XLA CPU the hoisted (timesteps, batch, 4u) intermediate
    # makes predict 1.9x and a train step 1.25x slower (benchmarks/, main
    # shape).
    def step(carry, xs):
        h, c = carry
        x, valid = xs
        h_rec = h if recurrent_mask is None else h * recurrent_mask
        z = x @ kernel + h_rec @ recurrent_kernel + bias
        i, f, g, o = jnp.split(z, 4, axis=-1)
        # Each gate on its own, as the keras.ops path computes them.
        i = recurrent_activation(i)
        f = recurrent_activation(f)
        o = recurrent_activation(o)
        c_new = f * c + i * activation(g)
        h_new = o * activation(c_new)
        if valid is not None:
            # An invalid step keeps the states: they end as the states
            # after the row's last valid step.
            h_new = jnp.where(valid[:, None], h_new, h)
            c_new = jnp.where(valid[:, None], c_new, c)
        # Without `sequence` the outputs are not stacked.
        return (h_new, c_new), h_new if sequence else None

    steps_valid = None if mask is None else jnp.swapaxes(mask, 0, 1)
    xs = (jnp.swapaxes(inputs, 0, 1), steps_valid)
    (h, c), outputs = jax.lax.scan(step, (h0, c0), xs, unroll=unroll)
    if sequence:
        outputs = jnp.swapaxes(outputs, 0, 1)
    return outputs, h, c


# unroll=True: the scan unrolled by this factor (the numbers do not change).
UNROLL = 1


def lstm(
    inputs,
    h0,
    c0,
    valid,
    kernel,
    recurrent_kernel,
    bias,
    sequence=True,
    cell=STANDARD,
    recurrent_mask=None,
):
    dtype, math = inputs.dtype, _math_dtype(inputs, cell)
    floats = [
        a.astype(math) for a in (inputs, h0, c0, kernel, recurrent_kernel, bias)
    ]
    if recurrent_mask is not None:
        recurrent_mask = recurrent_mask.astype(math)
    if _cudnn(inputs, cell):
        # cuDNN makes the sequence anyway.
        results = _cudnn_lstm(*floats[:3], valid, *floats[3:])
    else:
        if valid is not None and valid.ndim == 1:  # lengths: as a mask
            valid = jnp.arange(inputs.shape[1])[None, :] < valid[:, None]
        results = _scan(
            *floats[:3],
            valid,
            recurrent_mask,
            *floats[3:],
            sequence=sequence,
            cell=cell._replace(unroll=False),
            unroll=UNROLL if cell.unroll else 1,
        )
    return tuple(None if r is None else r.astype(dtype) for r in results)


def lstm_bidirectional(inputs, lengths, forward, backward):
    """Both directions in one cuDNN call (GPU only; see
    `bidirectional_unsupported`).

    `forward` and `backward` are (h0, c0, kernel, recurrent_kernel, bias).
    Returns each direction's (sequence, h, c) as `lstm` would: the backward
    one over each row's valid steps in reverse, its sequence in that order.
    """
    dtype = inputs.dtype
    inputs = inputs.astype("float32")
    forward = [a.astype("float32") for a in forward]
    backward = [a.astype("float32") for a in backward]
    batch, timesteps, features = inputs.shape
    units = forward[0].shape[-1]
    if lengths is None:
        lengths = jnp.full((batch,), timesteps, "int32")
    lengths = lengths.astype("int32")
    sequence, h, c = rnn.lstm(
        inputs,
        jnp.stack([forward[0], backward[0]]),
        jnp.stack([forward[1], backward[1]]),
        pack_cudnn_weights(forward[2:], backward[2:]),
        lengths,
        input_size=features,
        hidden_size=units,
        num_layers=1,
        dropout=0.0,
        bidirectional=True,
        precision=_cudnn_precision(),
    )
    # cuDNN gives the backward outputs in input order: put them in the
    # backward direction's own order, row by row within its length.
    source = jnp.maximum(lengths[:, None] - 1 - jnp.arange(timesteps), 0)
    backward_sequence = jnp.take_along_axis(
        sequence[..., units:], source[..., None], axis=1
    )
    results = (
        (sequence[..., :units], h[0], c[0]),
        (backward_sequence, h[1], c[1]),
    )
    return tuple(tuple(r.astype(dtype) for r in d) for d in results)
