"""Masks on the fused kernels: move valid steps to the front, and back.

A fused kernel takes per-row lengths, not masks. `compact` gathers each
row's valid steps to the front (stable), so any mask becomes a right-padded
one; `expand` gathers, for every original step, the output of the last valid
step at or before it. Right-padded masks are a gather of the identity.
"""

from keras import ops


def counts(mask):
    """Valid steps at or before each step, (batch, timesteps) int32."""
    return ops.cumsum(ops.cast(mask, "int32"), axis=1)


def _gather_steps(sequence, index):
    """`sequence[b, index[b, t]]` for every b, t: (batch, timesteps, ...).

    One flat `take` instead of ops.take_along_axis, which is 10-40x slower
    on TensorFlow here (it gathers with full coordinates).
    """
    shape = ops.shape(sequence)
    flat = ops.reshape(sequence, (-1, shape[2]))
    offsets = ops.expand_dims(ops.arange(shape[0], dtype=index.dtype), 1)
    return ops.take(flat, index + offsets * shape[1], axis=0)


def kernel_lengths(seen):
    """Each row's number of valid steps, at least 1: fused kernels take
    lengths >= 1 (a row with none gets its initial states back)."""
    return ops.maximum(seen[:, -1], 1)


def right_padded(mask, seen):
    """Whether every row's valid steps are already at its front (padded
    batches, the common case): a scalar bool tensor. A compare and a
    reduction, where compacting takes a sort and two gathers."""
    timesteps = ops.shape(mask)[1]
    steps = ops.expand_dims(ops.arange(timesteps, dtype="int32"), 0)
    return ops.all(mask == (steps < seen[:, -1:]))


def compact(inputs, mask, seen, right=None):
    """Moves each row's valid steps to the front, keeping their order.

    Args:
        inputs: (batch, timesteps, features).
        mask: boolean (batch, timesteps).
        seen: `counts(mask)`.
        right: `right_padded(mask, seen)`, if known: then the inputs come
            back as they are when it holds, with no sort or gather.

    Returns:
        inputs with the valid steps of each row first, then the masked ones.
    """
    if right is None:
        return _compact(inputs, mask, seen)
    return ops.cond(right, lambda: inputs, lambda: _compact(inputs, mask, seen))


def _compact(inputs, mask, seen):
    timesteps = ops.shape(mask)[1]
    lengths = seen[:, -1:]
    steps = ops.expand_dims(ops.arange(timesteps, dtype="int32"), 0)
    # Destination of each step: valid steps in order, then masked steps.
    destination = ops.where(mask, seen - 1, lengths + steps - seen)
    source = ops.cast(ops.argsort(destination, axis=1), "int32")
    return _gather_steps(inputs, source)


def expand(sequence, seen, right=None, mask=None, last=None):
    """Puts compacted outputs back: each step gets the last valid output.

    Steps before a row's first valid step get the first output; the layer
    zeroes them. With `right` (`right_padded`) holding, the outputs are in
    place already: the steps after a row's length get `last`, the output of
    its last valid step (the final h), by a select instead of a gather.
    """
    if right is None:
        return _gather_steps(sequence, ops.maximum(seen - 1, 0))
    return ops.cond(
        right,
        lambda: ops.where(
            ops.expand_dims(mask, -1), sequence, ops.expand_dims(last, 1)
        ),
        lambda: _gather_steps(sequence, ops.maximum(seen - 1, 0)),
    )
