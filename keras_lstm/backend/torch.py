"""PyTorch fused LSTM: torch's own kernel (oneDNN on CPU, cuDNN on CUDA)."""

import contextlib

import torch

from keras_lstm.backend import cpu, torch_export, torch_loop
from keras_lstm.backend import torch_denormals as denormals
from keras_lstm.backend.cell import STANDARD

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# "meta": Keras infers shapes by calling the layer on meta tensors (building
# a model, and again on the first train step); see `_run`.
_DTYPES = {"cpu": _FLOATS, "cuda": _FLOATS, "meta": _FLOATS}
_NAMES = {"cuda": "torch-cudnn", "meta": "torch-meta"}


def name(inputs, cell=STANDARD) -> str:
    if torch_export.exporting():
        return "torch-export"
    if not cell.standard and inputs.device.type != "meta":
        return "torch-loop"
    return _NAMES.get(inputs.device.type, "torch-cpu")


def scan_runs_under_xla() -> bool:
    """Keras never XLA-compiles a torch model (torch.compile runs the
    keras.ops loop fine)."""
    return True


def xla_hides_fused() -> bool:
    """Keras never XLA-compiles a torch model: nothing to hide."""
    return False


def _math_dtype(inputs) -> torch.dtype:
    """On CPU, oneDNN's bfloat16 kernels beat float32 where the CPU has
    bfloat16 units (1.5x on a train step here, AVX512-BF16); float16 (160x
    slower than float32 here), and bfloat16 elsewhere, compute in
    float32."""
    if inputs.device.type == "cuda":
        if inputs.dtype == torch.bfloat16 and not _cudnn_takes_bfloat16():
            return torch.float32
        return inputs.dtype
    if inputs.device.type != "cpu":
        return inputs.dtype
    name = str(inputs.dtype).removeprefix("torch.")
    math = cpu.math_dtype(name, fast_bfloat16=cpu.has_bfloat16_units())
    return getattr(torch, math)


def _cudnn_takes_bfloat16() -> bool:
    """cuDNN's RNN takes bfloat16 from cuDNN 9.13 (torch's own check,
    supportsBFloat16RNNWithCuDNN); before, torch runs bfloat16 through a
    slow non-cuDNN path, so the kernel computes in float32 on cuDNN."""
    return (torch.backends.cudnn.version() or 0) >= 91300


def notes(inputs, units, cell=STANDARD) -> tuple[str, ...]:
    if not cell.standard:
        notes = (
            f"torch's fused LSTM op computes tanh and sigmoid without "
            f"recurrent dropout; this step ({cell.describe()}) runs the "
            "torch loop (keras_lstm/backend/torch_loop.py)",
        )
        if not cell.elementwise:
            notes += (
                "an activation that is not one of Keras's elementwise "
                "ones: autograd records the loop's backward pass",
            )
        return notes + _compile_note()
    notes = cpu.notes(
        str(inputs.dtype).removeprefix("torch."),
        str(_math_dtype(inputs)).removeprefix("torch."),
        "this cuDNN has no bfloat16 LSTM (cuDNN 9.13 has)"
        if inputs.device.type == "cuda"
        else "this CPU has no fast path for it",
    )
    # (Not asked while exporting: the exportable form never flushes, and
    # the question would bound a dynamic time axis under torch.export.)
    if not torch_export.exporting() and _flushes_denormals(inputs, units):
        notes += (
            "denormal floats are flushed to zero in the forward and "
            "backward passes of the fused op, as XLA does on CPU (each "
            "thread's own setting is restored after)",
        )
    if inputs.device.type == "cuda" and inputs.dtype == torch.float32:
        if cudnn_rnn_tf32():
            notes += (
                "float32 runs as TF32 on cuDNN (torch's setting: "
                "torch.backends.cudnn.allow_tf32 is True; set it to False, "
                "or use keras_lstm.full_float32(), for full float32)",
            )
    if torch_export.exporting():
        notes += (
            "exporting (torch.export, torch.onnx, torch.jit.trace): torch's "
            "LSTM op alone, which ONNX's exporters write as its LSTM op; a "
            "mask's valid steps always move to the front",
        )
    return notes + _compile_note()


def _compile_note() -> tuple[str, ...]:
    if torch.compiler.is_compiling() and not torch_export.exporting():
        return (
            "torch.compile: the kernel runs outside the compiled graph "
            "(a graph break), since Dynamo cannot trace torch's fused op",
        )
    return ()


def cudnn_rnn_tf32() -> bool:
    """Whether cuDNN's LSTM rounds float32 products to TF32: torch's own
    setting (`torch.backends.cudnn.allow_tf32`, True by default; from
    torch 2.9 also `torch.backends.cudnn.rnn.fp32_precision`)."""
    rnn = getattr(torch.backends.cudnn, "rnn", None)
    if rnn is not None:
        return rnn.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32


@contextlib.contextmanager
def full_float32():
    """TF32 off for cuDNN and CUDA matmuls, torch's settings back after."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    try:
        saved = [f.allow_tf32 for f in flags]
    except RuntimeError:
        # torch refuses to read the legacy flags once the newer
        # fp32_precision ones disagree: set and restore those instead.
        yield from _full_float32_by_precision()
        return
    for f in flags:
        f.allow_tf32 = False
    try:
        yield
    finally:
        for f, value in zip(flags, saved, strict=True):
            f.allow_tf32 = value


def _full_float32_by_precision():
    flags = (
        torch.backends.cuda.matmul,
        torch.backends.cudnn.rnn,
        torch.backends.cudnn.conv,
    )
    saved = [f.fp32_precision for f in flags]
    for f in flags:
        f.fp32_precision = "ieee"
    try:
        yield
    finally:
        for f, value in zip(flags, saved, strict=True):
            f.fp32_precision = value


def syncs_to_branch(inputs) -> bool:
    """A data-dependent branch of eager torch reads its condition on the
    host: on CUDA that waits for the GPU, stalling the queue of work the
    host runs ahead. An exported graph cannot branch on data at all."""
    return inputs.device.type == "cuda" or torch_export.exporting()


def takes_mask(inputs, cell=STANDARD) -> bool:
    """torch's op takes lengths (through the padding feature); the torch
    loop selects per step from a mask as cheaply as from lengths."""
    return not cell.standard


def export_refusal(cell) -> str | None:
    """Why torch.jit.trace (torch.onnx's TorchScript exporter, which Keras
    uses for dynamic axes) cannot export this step for any length, or
    None: a step torch's LSTM op does not compute runs the keras.ops loop,
    which a trace unrolls for the traced length alone, and the file would
    fail at any other."""
    if cell.standard or not torch.jit.is_tracing():
        return None
    return (
        f"this step ({cell.describe()}) has no exportable fused form on "
        "torch (torch's LSTM op computes tanh and sigmoid without recurrent "
        "dropout), and the loop that runs it instead is traced for one "
        "length only"
    )


def unsupported(inputs, cell=STANDARD) -> tuple[str, ...]:
    reasons = []
    if torch.jit.is_scripting():
        reasons.append("torch.jit is scripting the layer")
    elif not cell.standard and torch_export.exporting():
        reasons.append(
            f"exporting, and this step ({cell.describe()}) has no exportable "
            "fused form: torch's LSTM op computes tanh and sigmoid without "
            "recurrent dropout"
        )
    device = inputs.device.type
    if device not in _DTYPES:
        reasons.append(f"torch has no fused LSTM on device '{device}'")
    elif inputs.dtype not in _DTYPES[device]:
        reasons.append(
            f"torch's fused LSTM on {device} does not take {inputs.dtype}"
        )
    return tuple(reasons)


def bidirectional_unsupported(inputs, masked_with_states) -> tuple[str, ...]:
    if masked_with_states:
        return (
            "torch's bidirectional LSTM runs the backward direction over a "
            "row's padding before its valid steps, which keeps only zero "
            "initial states; with a mask and initial or stateful states "
            "each direction runs its own fused kernel",
        )
    return ()


def _padding_feature(inputs, lengths):
    """torch's packed path cannot return the final c of every row without a
    slower kernel (2.5x in a train step here), so the full padded batch runs
    with an extra input feature, 1 at padded steps, that saturates the gates
    there: i = 0, f = 1 (see `_weights`), so c after the last step is c
    after the row's last valid step. h is read off the sequence."""
    steps = torch.arange(inputs.shape[1], device=inputs.device)
    padded = (steps[None, :] >= lengths[:, None]).to(inputs.dtype)
    return torch.cat([inputs, padded[..., None]], dim=-1)


def _weights(kernel, recurrent_kernel, bias, padding_feature):
    """Keras weights as torch's list: W_ih (4u, features), W_hh, b_ih,
    b_hh, with the same gate order i, f, g, o; b_hh is zero since Keras has
    one bias."""
    w_ih = kernel.T
    if padding_feature:
        # Far beyond any pre-activation at a padded step (the layer zeroes
        # masked inputs, so there it is bias + h @ R with |h| <= 1), and
        # finite in float16.
        saturate = min(1e6, torch.finfo(w_ih.dtype).max / 64)
        units = recurrent_kernel.shape[0]
        column = torch.zeros(4 * units, 1, dtype=w_ih.dtype, device=w_ih.device)
        column[:units] = -saturate
        column[units : 2 * units] = saturate
        w_ih = torch.cat([w_ih, column], dim=1)
    return [w_ih, recurrent_kernel.T, bias, torch.zeros_like(bias)]


def _one_buffer(inputs) -> bool:
    return inputs.device.type == "cuda"


def _flat_weights(directions, padding_feature, one_buffer):
    """Every direction's `_weights`, contiguous, in torch's order (per
    direction W_ih, W_hh, b_ih, b_hh).

    With `one_buffer` (cuDNN), views of one buffer laid out as torch's
    flattened LSTM keeps them: cuDNN takes it as its weight buffer as it
    is, where separate tensors make torch copy them into a buffer of its
    own on every call, with a warning, and transposed views failed ("view
    size is not compatible"). oneDNN reorders the weights on every call
    anyway: on CPU one buffer only cost time (50 us a call, 150 us a
    train step at 16x20x32 -> 64 here), separate copies none.
    """
    pieces = [
        w
        for direction in directions
        for w in _weights(*direction, padding_feature)
    ]
    if not one_buffer:
        return [w.contiguous() for w in pieces]
    flat = torch.cat([w.reshape(-1) for w in pieces])
    views, start = [], 0
    for w in pieces:
        views.append(flat[start : start + w.numel()].view(w.shape))
        start += w.numel()
    return views


def _run(inputs, h0, c0, weights, bidirectional):
    if inputs.device.type == "meta":
        # Meta tensors have shapes and no values. torch's LSTM op computes
        # them step by step through its decomposition (0.17 s for 50 steps
        # here), and the keras.ops loop took 60 ms of the first train step
        # at the first-call benchmark's shape; the shapes need nothing.
        directions, batch, units = h0.shape
        sequence = inputs.new_empty(
            (batch, inputs.shape[1], directions * units)
        )
        return sequence, h0.new_empty(h0.shape), c0.new_empty(c0.shape)
    tensors = (inputs, h0, c0, *weights)
    # Training mode whenever autograd records: cuDNN keeps the reserve
    # space its backward needs only then ("cudnn RNN backward can only be
    # called in training mode"); on CPU the results are the same.
    train = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)

    def op(inputs, h0, c0, *weights):
        return torch._VF.lstm(
            inputs,
            (h0, c0),
            list(weights),
            True,  # has_biases
            1,  # num_layers
            0.0,  # dropout
            train,
            bidirectional,
            True,  # batch_first
        )

    if not _flushes_denormals(inputs, h0.shape[-1]):
        return op(*tensors)
    return denormals.run_flushed(op, tensors, train)


# Denormal floats (below 1.2e-38 in float32): on Intel CPUs oneDNN's LSTM
# backward ran 12x slower with them than flushed to zero at 1,000 steps
# (issue 19); the fused op runs flushed (torch_denormals.py) where it pays.
# Setting the flag wakes every OpenMP thread twice a pass: 0.12 ms a
# predict, 0.56 ms a train step at 16 rows, 128 steps, 32 units, which a
# small model feels (10-15%) and a large one does not (1% at 64 rows, 256
# units; benchmarks/probe_denormals.py); and a decay into the denormal
# range takes a long sequence (at 100 steps flushing changed nothing on
# that Xeon). So it flushes from FLUSH_FROM_STEPS steps and
# FLUSH_FROM_WORK rows x steps x units on.
FLUSH_FROM_STEPS = 128
FLUSH_FROM_WORK = 1 << 20


def _flushes_denormals(inputs, units) -> bool:
    """Whether the fused op runs these inputs with denormals flushed."""
    batch, steps = inputs.shape[:2]
    return (
        inputs.device.type == "cpu"
        and steps >= FLUSH_FROM_STEPS
        and batch * steps * units >= FLUSH_FROM_WORK
        and denormals.supported()
    )


def _loop_flushes(inputs, units) -> bool:
    """Whether the torch loop's backward pass runs with denormals flushed:
    from FLUSH_FROM_WORK rows x steps x units on, at any length (its
    recurrent matmuls met them at 100 steps on an Intel Xeon, where the
    fused op did not: a train step with recurrent dropout at 64 rows,
    100 steps, 256 units took 305 ms unflushed, 116 ms flushed)."""
    batch, steps = inputs.shape[:2]
    return (
        inputs.device.type == "cpu"
        and batch * steps * units >= FLUSH_FROM_WORK
        and denormals.supported()
    )


def _last_valid(sequence, lengths):
    rows = torch.arange(sequence.shape[0], device=sequence.device)
    return sequence[rows, lengths.long() - 1]


def _one_step(inputs, h0, c0, kernel, recurrent_kernel, bias):
    """A single step as four torch ops: on CPU, torch's LSTM op reorders
    the weights for oneDNN on every call, which costs more than the step
    (benchmarks/probe_torch_step.py: 1.3x to 7x the time of these ops
    for batch 1 to 64, 128 to 512 units). Greedy decoders call with one
    step at a time."""
    z = torch.addmm(bias, inputs[:, 0], kernel)
    z = torch.addmm(z, h0, recurrent_kernel)
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h[:, None], h, c


def _outside_compiled_graphs(function):
    """`function` run eagerly when torch.compile traces its caller: Dynamo
    cannot trace torch's fused LSTM op, and the graph break costs far less
    than tracing the keras.ops loop, in compile time and per step
    (`python -m keras_lstm bench --workloads jit`, "keras_lstm generic";
    at the main benchmark shape a train step took 121 ms against 367 ms,
    and 16 s against 74 s to compile)."""
    eager = torch.compiler.disable(function)

    def run(*args, **kwargs):
        # Exporting is compiling too, for torch: traced as it is, the
        # exportable form inside.
        if torch_export.exporting():
            return function(*args, **kwargs)
        if torch.compiler.is_compiling():
            return eager(*args, **kwargs)
        return function(*args, **kwargs)

    return run


@_outside_compiled_graphs
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
    dtype, math = inputs.dtype, _math_dtype(inputs)
    floats = [
        a.to(math) for a in (inputs, h0, c0, kernel, recurrent_kernel, bias)
    ]
    if cell.standard:
        # torch's op makes the sequence anyway: `sequence` changes nothing.
        run = torch_export.lstm if torch_export.exporting() else _lstm
        results = run(*floats[:3], valid, *floats[3:])
    elif inputs.device.type == "meta":  # shapes only (see `_run`)
        batch, steps = inputs.shape[:2]
        results = (
            inputs.new_empty((batch, steps, h0.shape[-1])),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
        )
    else:
        if recurrent_mask is not None:
            recurrent_mask = recurrent_mask.to(math)
        results = torch_loop.lstm(
            *floats[:3],
            valid,
            *floats[3:],
            cell=cell,
            recurrent_mask=recurrent_mask,
            sequence=sequence,
            flush=_loop_flushes(inputs, h0.shape[-1]),
        )
    return tuple(None if r is None else r.to(dtype) for r in results)


def _lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    if inputs.shape[1] == 1 and inputs.device.type == "cpu":
        # Lengths are all 1 here (they lie in [1, timesteps]).
        return _one_step(inputs, h0, c0, kernel, recurrent_kernel, bias)
    padded = lengths is not None
    if padded:
        inputs = _padding_feature(inputs, lengths)
    weights = _flat_weights(
        [(kernel, recurrent_kernel, bias)], padded, _one_buffer(inputs)
    )
    sequence, h, c = _run(inputs, h0[None], c0[None], weights, False)
    h, c = h[0], c[0]
    if padded:
        h = _last_valid(sequence, lengths)
    return sequence, h, c


@_outside_compiled_graphs
def lstm_bidirectional(inputs, lengths, forward, backward):
    """Both directions in one call of torch's bidirectional LSTM.

    `forward` and `backward` are (h0, c0, kernel, recurrent_kernel, bias).
    Returns each direction's (sequence, h, c) as `lstm` would: the backward
    one over each row's valid steps in reverse, its sequence in that order.
    With `lengths`, the backward initial states must be zeros (see
    `bidirectional_unsupported`): torch reverses the whole padded row, so
    that direction crosses the padding first, where the saturated gates
    keep zero states exactly zero.
    """
    dtype, math = inputs.dtype, _math_dtype(inputs)
    run = (
        torch_export.lstm_bidirectional
        if torch_export.exporting()
        else _lstm_bidirectional
    )
    results = run(
        inputs.to(math),
        lengths,
        [a.to(math) for a in forward],
        [a.to(math) for a in backward],
    )
    return tuple(tuple(r.to(dtype) for r in d) for d in results)


def _lstm_bidirectional(inputs, lengths, forward, backward):
    padded = lengths is not None
    if padded:
        inputs = _padding_feature(inputs, lengths)
    weights = _flat_weights(
        [forward[2:], backward[2:]], padded, _one_buffer(inputs)
    )
    h0 = torch.stack([forward[0], backward[0]])
    c0 = torch.stack([forward[1], backward[1]])
    sequence, h, c = _run(inputs, h0, c0, weights, True)
    units = h0.shape[-1]
    forward_sequence = sequence[..., :units]
    # torch gives the backward outputs in input order: put them in the
    # backward direction's own order, row by row within its length.
    backward_sequence = sequence[..., units:]
    h_forward = h[0]
    if padded:
        h_forward = _last_valid(forward_sequence, lengths)
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        source = (lengths.long()[:, None] - 1 - steps[None, :]).clamp(min=0)
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        backward_sequence = backward_sequence[rows[:, None], source]
    else:
        backward_sequence = backward_sequence.flip(1)
    return (forward_sequence, h_forward, c[0]), (backward_sequence, h[1], c[1])
