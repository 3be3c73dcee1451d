"""The torch kernel's exportable form: torch's LSTM op (aten::lstm) alone.

torch.export, `torch.onnx.export` (both exporters) and `torch.jit.trace`
keep aten::lstm as one op, which the ONNX exporters write as ONNX's `LSTM`
(torch.nn.LSTM exports so). The eager kernel (torch.py) could not export:
it runs outside compiled graphs (`torch.compiler.disable`, a graph break
torch.export refuses), flushes denormals in an autograd.Function with a
thread-local setting, builds weights with in-place writes and takes a
four-op path for single steps. This form has none of that: the weights are
transposed and concatenated, lengths become torch.py's padding feature
(one more input column that saturates the gates at padded steps), and the
op runs in inference mode.

Masks reach it as lengths of valid steps moved to the front: under export
the layer always compacts (`syncs_to_branch`), since which rows are
right-padded is data a traced graph cannot branch on.
"""

import torch


def exporting() -> bool:
    """Whether torch.export (torch.onnx's dynamo exporter included) or
    torch.jit.trace (torch.onnx's TorchScript exporter) is tracing."""
    if torch.jit.is_tracing():
        register_onnx_symbolics()
        return True
    return torch.compiler.is_exporting()


def _padding_feature(inputs, lengths):
    steps = torch.arange(inputs.shape[1], device=inputs.device)
    padded = (steps[None, :] >= lengths[:, None]).to(inputs.dtype)
    return torch.cat([inputs, padded[..., None]], dim=-1)


def _weights(kernel, recurrent_kernel, bias, padding_feature):
    """torch's (W_ih, W_hh, b_ih, b_hh) from Keras weights, as torch.py's
    `_weights` makes them, without in-place writes."""
    w_ih = kernel.T
    if padding_feature:
        saturate = min(1e6, torch.finfo(w_ih.dtype).max / 64)
        units = recurrent_kernel.shape[0]
        column = torch.cat(
            [
                torch.full((units, 1), -saturate, dtype=w_ih.dtype),
                torch.full((units, 1), saturate, dtype=w_ih.dtype),
                torch.zeros((2 * units, 1), dtype=w_ih.dtype),
            ]
        ).to(w_ih.device)
        w_ih = torch.cat([w_ih, column], dim=1)
    return [w_ih, recurrent_kernel.T, bias, torch.zeros_like(bias)]


@torch.library.custom_op("keras_lstm::lstm", mutates_args=())
def _lstm_any_length(
    inputs: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weights: list[torch.Tensor],
    bidirectional: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's LSTM op for torch.export with a dynamic time axis: aten's
    LSTM computes its output shapes through its decomposition, a Python
    loop over the steps, which fixes the length to the traced one (so
    torch.nn.LSTM does too, torch 2.13); this op gives them directly."""
    return _aten(inputs, h0, c0, weights, bidirectional)


@_lstm_any_length.register_fake
def _(inputs, h0, c0, weights, bidirectional):
    batch, steps = inputs.shape[:2]
    directions, units = h0.shape[0], h0.shape[-1]
    return (
        inputs.new_empty((batch, steps, directions * units)),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
    )


def _op(inputs, h0, c0, weights, bidirectional):
    if isinstance(inputs.shape[1], torch.SymInt):
        return _lstm_any_length(inputs, h0, c0, weights, bidirectional)
    return _aten(inputs, h0, c0, weights, bidirectional)


def _aten(inputs, h0, c0, weights, bidirectional):
    return torch.lstm(
        inputs,
        (h0, c0),
        weights,
        True,  # has_biases
        1,  # num_layers
        0.0,  # dropout
        False,  # train
        bidirectional,
        True,  # batch_first
    )


def _last_valid(sequence, lengths):
    """Each row's output at its last valid step: a gather of one step."""
    index = (lengths.long() - 1).reshape(-1, 1, 1)
    index = index.expand(-1, 1, sequence.shape[-1])
    return sequence.gather(1, index)[:, 0]


def lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    """`kernels.lstm` (see keras_lstm.backend) in the exportable form."""
    padded = lengths is not None
    if padded:
        inputs = _padding_feature(inputs, lengths)
    weights = _weights(kernel, recurrent_kernel, bias, padded)
    sequence, h, c = _op(inputs, h0[None], c0[None], weights, False)
    h, c = h[0], c[0]
    if padded:
        h = _last_valid(sequence, lengths)
    return sequence, h, c


def lstm_bidirectional(inputs, lengths, forward, backward):
    """`lstm_bidirectional` of torch.py in the exportable form: one
    bidirectional op (ONNX's LSTM with direction "bidirectional")."""
    padded = lengths is not None
    if padded:
        inputs = _padding_feature(inputs, lengths)
    weights = _weights(*forward[2:], padded) + _weights(*backward[2:], padded)
    h0 = torch.stack([forward[0], backward[0]])
    c0 = torch.stack([forward[1], backward[1]])
    sequence, h, c = _op(inputs, h0, c0, weights, True)
    units = h0.shape[-1]
    forward_sequence = sequence[..., :units]
    backward_sequence = sequence[..., units:]
    h_forward = h[0]
    if padded:
        h_forward = _last_valid(forward_sequence, lengths)
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        source = (lengths.long()[:, None] - 1 - steps[None, :]).clamp(min=0)
        index = source[..., None].expand(-1, -1, units)
        backward_sequence = backward_sequence.gather(1, index)
    else:
        backward_sequence = backward_sequence.flip(1)
    return (forward_sequence, h_forward, c[0]), (backward_sequence, h[1], c[1])


def _onnx_argsort(g, self, *args):
    """aten::argsort as ONNX's TopK (ascending or not, ties in index
    order as ONNX specifies: stable). torch's TorchScript exporter maps
    only `argsort(self, dim, descending)` and refuses the `stable`
    overload, which Keras's ops.argsort calls and a mask's compaction
    uses; both overloads end in (dim, descending) constants."""
    dim, descending = (_constant(a) for a in args[-2:])
    size = g.op(
        "Gather",
        g.op("Shape", self),
        g.op("Constant", value_t=torch.tensor([dim])),
        axis_i=0,
    )
    _, indices = g.op(
        "TopK",
        self,
        size,
        axis_i=dim,
        largest_i=int(bool(descending)),
        sorted_i=1,
        outputs=2,
    )
    return indices


def _constant(value) -> int:
    """An int or bool constant of the traced graph (prim::Constant, or
    onnx::Constant once converted)."""
    node = value.node()
    if node.kindOf("value") == "t":
        return int(node.t("value").item())
    return node.i("value")


_registered = []


def register_onnx_symbolics():
    """Registers `_onnx_argsort` with torch's TorchScript ONNX exporter,
    once a process (it is called while torch.jit traces, before the
    exporter converts the trace)."""
    if _registered:
        return
    torch.onnx.register_custom_op_symbolic("aten::argsort", _onnx_argsort, 11)
    _registered.append(True)
