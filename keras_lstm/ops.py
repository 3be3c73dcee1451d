"""The generic LSTM, written only against keras.ops: the reference path.

Every fused kernel is checked against this function. It runs on any Keras
backend and supports every layer option, including the ones no fused kernel
takes (other activations, recurrent dropout, unroll).

Inputs arrive batch-major and already in processing order (the layer has done
time_major, go_backwards and input dropout). The returned sequence holds, at
each step, the hidden state after that step; at a masked step that is the
state carried from before it. Zeroing the outputs before a row's first valid
step is the layer's job, shared with the fused kernels.
"""

from collections.abc import Callable

from keras import ops


def lstm(
    inputs,
    h0,
    c0,
    mask,
    kernel,
    recurrent_kernel,
    bias,
    activation: Callable,
    recurrent_activation: Callable,
    recurrent_dropout_mask=None,
    unroll: bool = False,
):
    """Runs an LSTM over a whole sequence.

    Args:
        inputs: (batch, timesteps, features), in processing order.
        h0: initial hidden state, (batch, units).
        c0: initial cell state, (batch, units).
        mask: None, or a boolean (batch, timesteps) tensor; a False step
            leaves h and c unchanged.
        kernel: (features, 4 * units), gates in the order i, f, c, o.
        recurrent_kernel: (units, 4 * units).
        bias: (4 * units,) or None.
        activation: the cell activation (tanh for the standard LSTM).
        recurrent_activation: the gate activation (sigmoid).
        recurrent_dropout_mask: None, or (batch, units) multiplying h in the
            recurrent product at every step.
        unroll: True runs a Python loop over the (static) timesteps instead
            of a scan.

    Returns:
        (sequence, h, c): sequence is (batch, timesteps, units).
    """
    # The input projection does not depend on the recurrence: one large
    # matmul for all steps instead of one small one per step.
    x = ops.transpose(inputs, (1, 0, 2))
    z_x = ops.matmul(x, kernel)
    if bias is not None:
        z_x = z_x + bias
    steps = (z_x,)
    # keras.ops.scan on TensorFlow cannot trace two sequences of unknown
    # length (keras/src/backend/tensorflow/core.py, scan: it calls
    # assert_is_compatible_with on None): there the mask rides in one more
    # column of the projected inputs.
    packed = mask is not None and x.shape[0] is None
    if mask is not None:
        keep = ops.expand_dims(ops.transpose(mask, (1, 0)), -1)
        if packed:
            steps = (ops.concatenate([z_x, ops.cast(keep, z_x.dtype)], -1),)
        else:
            steps += (keep,)

    def step(carry, step_inputs):
        h, c = carry
        z_x = step_inputs[0]
        if packed:
            step_inputs = (z_x[..., :-1], z_x[..., -1:] > 0)
        h_rec = (
            h if recurrent_dropout_mask is None else h * recurrent_dropout_mask
        )
        z = step_inputs[0] + ops.matmul(h_rec, recurrent_kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        i = recurrent_activation(i)
        f = recurrent_activation(f)
        o = recurrent_activation(o)
        c_new = f * c + i * activation(g)
        h_new = o * activation(c_new)
        if mask is not None:
            keep = step_inputs[1]
            h_new = ops.where(keep, h_new, h)
            c_new = ops.where(keep, c_new, c)
        # ys repeats the carry: keras.ops.scan on TensorFlow needs ys to
        # have the structure of the carry.
        return (h_new, c_new), (h_new, c_new)

    if unroll:
        carry, outputs = (h0, c0), []
        for t in range(x.shape[0]):
            carry, _ = step(carry, tuple(s[t] for s in steps))
            outputs.append(carry[0])
        sequence = ops.stack(outputs, axis=0)
    else:
        carry, (sequence, _) = ops.scan(step, (h0, c0), steps)
    h, c = carry
    return ops.transpose(sequence, (1, 0, 2)), h, c
