"""The torch loop: the steps torch's fused LSTM op does not compute (other
activations, recurrent dropout), on CPU and CUDA.

torch's op fixes tanh and sigmoid and has no recurrent dropout; the
keras.ops path runs such a step through Keras's ops with autograd
recording every one. This loop runs the input projection as one matmul
before the recurrence and the fewest torch ops per step, keeping every
step's pre-activations for the backward pass, which is written out
(`_Recurrence`): one matmul and a few elementwise ops per step, the
activations' derivatives computed for a chunk of steps at once before
them, and the weight gradients as one matmul each after them.

The activations are the Keras functions themselves, so the numbers are
the keras.ops path's. Their derivatives are taken for many steps at once,
which needs an elementwise function: Keras's own activations are, except
the softmax family (`Cell.elementwise`). Any other callable runs the same
forward loop with autograd recording it.
"""

import contextlib

import torch

from keras_lstm.backend import torch_denormals as denormals


def _forward(
    projected,
    h0,
    c0,
    recurrent_kernel,
    valid,
    recurrent_mask,
    cell,
    sequence=True,
    saves=False,
):
    """The recurrence over `projected` (time-major x @ kernel + bias).

    Returns (hs, cs, h, c): every step's h (with `sequence`; the carried
    h at invalid steps) and c (with `saves`), time-major, else None; and
    the final states. With `saves` (no autograd recording: `out=`) the
    pre-activations of every step too, as (hs, cs, zs, h, c).
    """
    activation, recurrent_activation = cell.functions(torch.tanh, torch.sigmoid)
    units = h0.shape[-1]
    grouped = cell.elementwise
    h, c = h0, c0
    hs, cs = [], []
    # Kept for the backward pass, which would compute them again.
    zs = None
    if saves:  # time-major and contiguous, as `projected` is not
        zs = projected.new_empty(projected.shape)
    for t in range(projected.shape[0]):
        h_rec = h if recurrent_mask is None else h * recurrent_mask
        out = None if zs is None else zs[t]
        z = torch.addmm(projected[t], h_rec, recurrent_kernel, out=out)
        if grouped:
            # One call for the three sigmoid-like gates (the columns of g
            # are computed and not used).
            gates = recurrent_activation(z)
            i, f = gates[:, :units], gates[:, units : 2 * units]
            o = gates[:, 3 * units :]
        else:
            # Each gate on its own, as the keras.ops path computes them.
            i, f, _, o = (recurrent_activation(a) for a in z.chunk(4, 1))
        c_new = torch.addcmul(f * c, i, activation(z[:, 2 * units : 3 * units]))
        h_new = o * activation(c_new)
        if valid is not None:
            # An invalid step keeps the states.
            h_new = torch.where(valid[t], h_new, h)
            c_new = torch.where(valid[t], c_new, c)
        h, c = h_new, c_new
        if sequence:
            hs.append(h)
        if saves:
            cs.append(c)
    stacked = [torch.stack(a) if a else None for a in (hs, cs)]
    if saves:
        return (*stacked, zs, h, c)
    return (*stacked, h, c)


def _with_derivative(function, x):
    """`function(x)` and its derivative, elementwise, for every step at
    once."""
    if function is torch.sigmoid:
        y = torch.sigmoid(x)
        return y, y * (1 - y)
    if function is torch.tanh:
        y = torch.tanh(x)
        return y, 1 - y * y
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        y = function(x)
        (derivative,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y.detach(), derivative


def _project(inputs, kernel, bias):
    """Every step's input projection as one matmul, time-major."""
    batch, steps, features = inputs.shape
    projected = torch.addmm(bias, inputs.reshape(-1, features), kernel)
    return projected.view(batch, steps, -1).transpose(0, 1)


class _Recurrence(torch.autograd.Function):
    """The layer's step over the sequence with its backward pass written
    out (elementwise activations): inputs (batch-major), kernel, bias, h0,
    c0 and the recurrent kernel. It keeps every step's pre-activations (the
    backward pass would compute them again), not the projected inputs."""

    @staticmethod
    def forward(ctx, *args):
        # args: inputs, kernel, bias, h0, c0, recurrent_kernel, then valid,
        # mask, cell and flush.
        *weights, valid, mask, cell, flush = args
        hs, cs, zs, h, c = _forward(
            _project(*weights[:3]), *weights[3:], valid, mask, cell, saves=True
        )
        ctx.cell, ctx.flush = cell, flush
        # An output the loss does not use gets None, not zeros (the
        # sequence, when only the last output is used).
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*weights, valid, mask, hs, cs, zs)
        return hs, h, c

    @staticmethod
    def backward(ctx, d_hs, d_h, d_c):
        *args, valid, mask, hs, cs, zs = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (a gradient penalty): the gradients must be
            # differentiable functions of the inputs, so autograd records
            # the loop again and differentiates that.
            grads = _differentiated(args, valid, mask, ctx.cell, d_hs, d_h, d_c)
            return (*grads, None, None, None, None)
        inputs, kernel, _, h0, c0, _ = args
        d_h = torch.zeros_like(h0) if d_h is None else d_h
        d_c = torch.zeros_like(c0) if d_c is None else d_c
        flushed = denormals.flushed() if ctx.flush else None
        with flushed or contextlib.nullcontext():
            d_zs, d_h0, d_c0, d_recurrent = _backward(
                zs, *args[3:], valid, mask, ctx.cell, hs, cs, d_hs, d_h, d_c
            )
        # The projection's gradients; d_zs is time-major.
        need = ctx.needs_input_grad
        d_inputs = d_kernel = d_bias = None
        if need[0]:
            d_inputs = (d_zs @ kernel.T).transpose(0, 1)
        if need[1]:
            features = inputs.shape[-1]
            steps_first = inputs.transpose(0, 1).reshape(-1, features)
            d_kernel = steps_first.T @ d_zs.view(-1, d_zs.shape[-1])
        if need[2]:
            d_bias = d_zs.sum((0, 1))
        grads = (d_inputs, d_kernel, d_bias, d_h0, d_c0, d_recurrent)
        return (*grads, None, None, None, None)


def _differentiated(args, valid, mask, cell, d_hs, d_h, d_c):
    with torch.enable_grad():
        projected = _project(*args[:3])
        hs, _, h, c = _forward(projected, *args[3:], valid, mask, cell)
    pairs = [
        (o, g) for o, g in ((hs, d_hs), (h, d_h), (c, d_c)) if g is not None
    ]
    wanted = [t for t in args if t.requires_grad]
    found = iter(
        torch.autograd.grad(
            [o for o, _ in pairs],
            wanted,
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
    )
    return tuple(next(found) if t.requires_grad else None for t in args)


# The backward pass computes what does not depend on the gradient flowing
# back (the gates, the activations' derivatives and their products) for a
# chunk of steps at once: for a whole long sequence these temporaries went
# to memory and back a dozen times. A sequence whose factors fit in
# _CHUNK_BYTES takes one chunk (a chunk's own ops cost more than they save
# on a short one); a longer one takes chunks of about that size, 4 to 16
# steps (benchmarks/probe_torch_loop.py).
_CHUNK_BYTES = 4 * 2**20


def _chunk_steps(steps, batch, units, dtype):
    """How many steps one chunk of the backward pass takes."""
    step_bytes = max(batch, 1) * 4 * units * (torch.finfo(dtype).bits // 8)
    if steps * step_bytes <= _CHUNK_BYTES:
        return max(steps, 1)
    return min(16, max(4, _CHUNK_BYTES // step_bytes))


def _backward(
    zs,
    h0,
    c0,
    recurrent_kernel,
    valid,
    mask,
    cell,
    hs,
    cs,
    d_hs,
    d_h,
    d_c,
):
    """`_Recurrence`'s gradients of projected, h0, c0, recurrent_kernel,
    from the forward pass's pre-activations `zs`."""
    steps, batch = zs.shape[:2]
    units = h0.shape[-1]
    h_prev = torch.cat([h0[None], hs[:-1]])
    if mask is not None:
        h_prev = h_prev * mask
    c_prev = torch.cat([c0[None], cs[:-1]])
    d_zs = zs.new_empty(zs.shape)
    chunk = _chunk_steps(steps, batch, units, zs.dtype)
    for end in range(steps, 0, -chunk):
        start = max(0, end - chunk)
        factors = _step_factors(
            cell, zs[start:end], c_prev[start:end], cs[start:end]
        )
        d_h, d_c = _backward_steps(
            factors,
            recurrent_kernel,
            valid if valid is None else valid[start:end],
            mask,
            d_hs if d_hs is None else d_hs[start:end],
            d_h,
            d_c,
            d_zs[start:end],
        )
    d_recurrent = h_prev.reshape(-1, units).T @ d_zs.view(-1, 4 * units)
    return d_zs, d_h, d_c, d_recurrent


def _step_factors(cell, zs, c_prev, cs):
    """What the backward steps multiply the gradients by, for a chunk of
    steps at once: (by_d_c, by_d_h, through_c, f), see `_backward_steps`."""
    activation, recurrent_activation = cell.functions(torch.tanh, torch.sigmoid)
    units = cs.shape[-1]
    gates, d_gates = _with_derivative(recurrent_activation, zs)
    g, d_g = _with_derivative(activation, zs[..., 2 * units : 3 * units])
    act_c, d_act_c = _with_derivative(activation, cs)
    # d_z of i, f and g is d_c_t times these; of o, d_h times the last.
    by_d_c = torch.cat(
        [
            g * d_gates[..., :units],
            c_prev * d_gates[..., units : 2 * units],
            gates[..., :units] * d_g,
        ],
        dim=-1,
    )
    by_d_h = act_c * d_gates[..., 3 * units :]
    through_c = gates[..., 3 * units :] * d_act_c
    return by_d_c, by_d_h, through_c, gates[..., units : 2 * units]


def _backward_steps(
    factors, recurrent_kernel, valid, mask, d_hs, d_h, d_c, d_zs
):
    """The steps of a chunk, last first: writes each step's d_z into
    `d_zs` and returns the gradients of the chunk's first states."""
    by_d_c, by_d_h, through_c, f = factors
    steps, batch = by_d_h.shape[:2]
    units = d_h.shape[-1]
    recurrent_t = recurrent_kernel.T
    for t in range(steps - 1, -1, -1):
        if d_hs is not None:
            d_h = d_h + d_hs[t]
        d_c_t = torch.addcmul(d_c, d_h, through_c[t])
        d_z = d_zs[t]
        torch.mul(
            d_c_t[:, None],
            by_d_c[t].view(batch, 3, units),
            out=d_z[:, : 3 * units].view(batch, 3, units),
        )
        torch.mul(d_h, by_d_h[t], out=d_z[:, 3 * units :])
        if valid is not None:
            # An invalid step passed h and c through unchanged.
            d_z.masked_fill_(~valid[t], 0)
        d_h_prev = d_z @ recurrent_t
        if mask is not None:
            d_h_prev = d_h_prev * mask
        d_c_prev = d_c_t * f[t]
        if valid is None:
            d_h, d_c = d_h_prev, d_c_prev
        else:
            d_h = torch.where(valid[t], d_h_prev, d_h)
            d_c = torch.where(valid[t], d_c_prev, d_c)
    return d_h, d_c


def lstm(
    inputs,
    h0,
    c0,
    valid,
    kernel,
    recurrent_kernel,
    bias,
    cell,
    recurrent_mask,
    sequence,
    flush,
):
    """The kernel interface's `lstm` (keras_lstm/backend/__init__.py) for
    any step: `valid` is None, lengths or a (batch, timesteps) mask. With
    `flush`, the backward pass runs with denormals flushed to zero."""
    steps = inputs.shape[1]
    if valid is not None:
        if valid.ndim == 1:  # lengths
            positions = torch.arange(steps, device=inputs.device)
            valid = positions[:, None] < valid[None, :].to(positions.device)
        else:
            valid = valid.T
        valid = valid[..., None]
    weights = (inputs, kernel, bias, h0, c0, recurrent_kernel)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in weights)
    if grad and cell.elementwise:
        hs, h, c = _Recurrence.apply(
            *weights, valid, recurrent_mask, cell, flush
        )
    else:
        hs, _, h, c = _forward(
            _project(*weights[:3]),
            *weights[3:],
            valid,
            recurrent_mask,
            cell,
            sequence=sequence,
        )
    return (hs.transpose(0, 1) if sequence else None), h, c
