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

import keras
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
    # On torch keras.ops.scan is a Python loop whose per-step slice x[t]
    # costs, in the backward pass, a zero tensor of the whole sequence (a
    # train step at 64 rows, 100 steps, 256 units took 3.3x the time of
    # keras.layers.LSTM's loop): there the loop is written out over
    # ops.unstack (one stack in the backward pass), with the input
    # projection hoisted out as one matmul. So it is on TensorFlow for a
    # static length up to _WRITTEN_OUT steps: keras.ops.scan passes its
    # state through TensorArrays every step, and the written-out graph
    # was 1.1-1.25x faster than keras.layers.LSTM's loop where the scan
    # was 0.8-1.0x. Elsewhere (TensorFlow, JAX) each step projects its
    # own input: the hoisted (timesteps, batch, 4 * units) intermediate
    # made predict up to 1.9x slower under XLA, and 1.2x in TensorFlow's
    # written-out graph. benchmarks/probe_ops_path.py times the variants.
    backend = keras.backend.backend()
    steps = inputs.shape[1]
    hoist = backend == "torch"
    written_out = hoist or (
        backend == "tensorflow" and steps is not None and steps <= _WRITTEN_OUT
    )
    x = ops.transpose(inputs, (1, 0, 2))
    if hoist:
        x = _project(x, kernel, bias)
    keep = None
    if mask is not None:
        keep = ops.expand_dims(ops.transpose(mask, (1, 0)), -1)

    def step(h, c, x_t, keep_t):
        if not hoist:
            x_t = _project(x_t, kernel, bias)
        h_rec = (
            h if recurrent_dropout_mask is None else h * recurrent_dropout_mask
        )
        z = x_t + ops.matmul(h_rec, recurrent_kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        i = recurrent_activation(i)
        f = recurrent_activation(f)
        o = recurrent_activation(o)
        c_new = f * c + i * activation(g)
        h_new = o * activation(c_new)
        if keep_t is not None:
            h_new = ops.where(keep_t, h_new, h)
            c_new = ops.where(keep_t, c_new, c)
        return h_new, c_new

    if unroll or written_out:
        h, c, outputs = h0, c0, []
        keeps = [None] * x.shape[0] if keep is None else ops.unstack(keep)
        for x_t, keep_t in zip(ops.unstack(x), keeps, strict=True):
            h, c = step(h, c, x_t, keep_t)
            outputs.append(h)
        sequence = ops.stack(outputs, axis=0)
    else:
        h, c, sequence = _scan(step, h0, c0, x, keep)
    return ops.transpose(sequence, (1, 0, 2)), h, c


# TensorFlow writes the loop out up to this many static steps (a graph
# node per op and step; longer sequences take the scan).
_WRITTEN_OUT = 128


def _project(x, kernel, bias):
    z = ops.matmul(x, kernel)
    return z if bias is None else z + bias


def _scan(step, h0, c0, x, keep):
    """The recurrence as one keras.ops.scan: (h, c, sequence)."""
    # keras.ops.scan on TensorFlow cannot trace two sequences of unknown
    # length (keras/src/backend/tensorflow/core.py, scan: it calls
    # assert_is_compatible_with on None): there the mask rides in one more
    # column of the inputs.
    packed = keep is not None and x.shape[0] is None
    if keep is None:
        steps = (x,)
    elif packed:
        steps = (ops.concatenate([x, ops.cast(keep, x.dtype)], -1),)
    else:
        steps = (x, keep)

    def scan_step(carry, step_inputs):
        if packed:
            x_t = step_inputs[0]
            step_inputs = (x_t[..., :-1], x_t[..., -1:] > 0)
        x_t, keep_t = (*step_inputs, None)[:2]
        h, c = step(*carry, x_t, keep_t)
        # ys repeats the carry: keras.ops.scan on TensorFlow needs ys to
        # have the structure of the carry.
        return (h, c), (h, c)

    # On TensorFlow `unroll` is the while loop's parallel_iterations (32,
    # as keras.layers.LSTM's own loop): up to 1.1x faster a train step
    # than 1. Elsewhere it unrolls, which did not pay (JAX).
    unroll = 32 if keras.backend.backend() == "tensorflow" else 1
    (h, c), (sequence, _) = ops.scan(scan_step, (h0, c0), steps, unroll=unroll)
    return h, c, sequence
