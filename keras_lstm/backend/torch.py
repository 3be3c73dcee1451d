"""PyTorch fused LSTM: torch's own kernel (oneDNN on CPU, cuDNN on CUDA)."""

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPES = {"cpu": _FLOATS, "cuda": _FLOATS}


def name(inputs) -> str:
    return "torch-cudnn" if inputs.device.type == "cuda" else "torch-cpu"


def xla_hides_fused() -> bool:
    """Keras never XLA-compiles a torch model: nothing to hide."""
    return False


def unsupported(inputs) -> tuple[str, ...]:
    reasons = []
    if torch.compiler.is_compiling():
        reasons.append(
            "torch.compile / torch.export is tracing the layer, and torch's "
            "fused LSTM op does not go through it"
        )
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        reasons.append("torch.jit is tracing or scripting the layer")
    device = inputs.device.type
    if device not in _DTYPES:
        reasons.append(f"torch has no fused LSTM on device '{device}'")
    elif inputs.dtype not in _DTYPES[device]:
        reasons.append(
            f"torch's fused LSTM on {device} does not take {inputs.dtype}"
        )
    return tuple(reasons)


def lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    # torch stores (4 * units, features) with the same gate order i, f, g, o;
    # its second bias (b_hh) is zero since Keras has one bias.
    w_ih = kernel.T
    if lengths is not None:
        # torch's packed path cannot return the final c of every row without
        # a slower kernel (2.5x in a train step here), so the full padded
        # batch runs and an extra input feature, 1 at padded steps, saturates
        # the gates there: i = 0, f = 1, so c after the last step is c after
        # the row's last valid step. h is read off the sequence.
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        padded = (steps[None, :] >= lengths[:, None]).to(inputs.dtype)
        inputs = torch.cat([inputs, padded[..., None]], dim=-1)
        # Far beyond any pre-activation at a padded step (the layer zeroes
        # masked inputs, so there it is bias + h @ R with |h| <= 1), and
        # finite in float16.
        saturate = min(1e6, torch.finfo(w_ih.dtype).max / 64)
        units = recurrent_kernel.shape[0]
        column = torch.zeros(4 * units, 1, dtype=w_ih.dtype, device=w_ih.device)
        column[:units] = -saturate
        column[units : 2 * units] = saturate
        w_ih = torch.cat([w_ih, column], dim=1)
    sequence, h, c = torch._VF.lstm(
        inputs,
        (h0[None], c0[None]),
        [w_ih, recurrent_kernel.T, bias, torch.zeros_like(bias)],
        True,  # has_biases
        1,  # num_layers
        0.0,  # dropout
        False,  # train (inter-layer dropout only; autograd works either way)
        False,  # bidirectional
        True,  # batch_first
    )
    h, c = h[0], c[0]
    if lengths is not None:
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        h = sequence[rows, lengths.long() - 1]
    return sequence, h, c
