"""JAX fused LSTM: cuDNN through jax.experimental.rnn on GPU, a compiled
lax.scan elsewhere."""

import jax
import jax.numpy as jnp
from jax.experimental import rnn

_SCAN_DTYPES = ("float16", "bfloat16", "float32", "float64")
# cuDNN's LSTM in jax.experimental.rnn: float32 (bfloat16 is refused there).
_CUDNN_DTYPES = ("float32",)


def _on_gpu() -> bool:
    # Under jit the inputs are tracers without a device: the default backend
    # is where the computation lands.
    return jax.default_backend() == "gpu"


def name(inputs) -> str:
    return "jax-cudnn" if _on_gpu() else "jax-scan"


def xla_hides_fused() -> bool:
    """Every JAX kernel here runs inside jit (cuDNN too)."""
    return False


def unsupported(inputs) -> tuple[str, ...]:
    dtypes = _CUDNN_DTYPES if _on_gpu() else _SCAN_DTYPES
    if str(inputs.dtype) not in dtypes:
        return (f"the {name(inputs)} kernel does not take {inputs.dtype}",)
    return ()


def pack_cudnn_weights(kernel, recurrent_kernel, bias):
    """Keras weights as the flat cuDNN parameter vector of jax.experimental.rnn.

    cuDNN (like torch) stores W_ih (4u, features), W_hh (4u, u), b_ih and
    b_hh, gates i, f, g, o: the Keras gate order, transposed. Keras has one
    bias, so b_hh is zero.
    """
    return jnp.concatenate(
        [
            kernel.T.ravel(),
            recurrent_kernel.T.ravel(),
            bias,
            jnp.zeros_like(bias),
        ]
    )


def _cudnn(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    batch, timesteps, features = inputs.shape
    units = recurrent_kernel.shape[0]
    if lengths is None:
        lengths = jnp.full((batch,), timesteps, "int32")
    sequence, h, c = rnn.lstm(
        inputs,
        h0[None],
        c0[None],
        pack_cudnn_weights(kernel, recurrent_kernel, bias),
        lengths.astype("int32"),
        input_size=features,
        hidden_size=units,
        num_layers=1,
        dropout=0.0,
        bidirectional=False,
    )
    return sequence, h[0], c[0]


@jax.jit
def _scan(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    # The input projection runs inside the step, not hoisted out as one big
    # matmul: on XLA CPU the hoisted (timesteps, batch, 4u) intermediate
    # makes predict 1.9x and a train step 1.25x slower (benchmarks/, main
    # shape).
    steps = jnp.arange(inputs.shape[1])

    def step(carry, xs):
        h, c = carry
        x, t = xs
        z = x @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        if lengths is not None:
            # Past a row's length the states stay: they end as the states
            # after its last valid step.
            valid = (t < lengths)[:, None]
            h_new = jnp.where(valid, h_new, h)
            c_new = jnp.where(valid, c_new, c)
        return (h_new, c_new), h_new

    xs = (jnp.swapaxes(inputs, 0, 1), steps)
    (h, c), sequence = jax.lax.scan(step, (h0, c0), xs)
    return jnp.swapaxes(sequence, 0, 1), h, c


def lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    if _on_gpu():
        return _cudnn(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias)
    return _scan(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias)
