"""keras_lstm.Bidirectional: both directions in one fused kernel.

keras.layers.Bidirectional calls its two keras_lstm.LSTM layers one after
the other; each runs its own fused kernel. Where the backend has a
bidirectional kernel (torch's bidirectional LSTM on CPU and CUDA; cuDNN
through jax.experimental.rnn on a JAX GPU), this subclass runs both
directions in one call, with the same semantics, weights and file layout;
`keras_lstm.explain(bidi, inputs, ...)` says which, and why not.
"""

import keras
from keras import ops

from keras_lstm import dispatch, masking
from keras_lstm.backend import kernels
from keras_lstm.layer import LSTM


@keras.saving.register_keras_serializable(package="keras_lstm")
class Bidirectional(keras.layers.Bidirectional):
    """`keras.layers.Bidirectional` with a fused bidirectional kernel.

    Takes the same arguments as keras.layers.Bidirectional and behaves the
    same (masks, `merge_mode`, `return_state`, initial states as
    `[h_fwd, c_fwd, h_bwd, c_bwd]`, stateful layers, saving). When both
    directions are `keras_lstm.LSTM` layers that could run fused and the
    backend has a bidirectional kernel, one kernel call runs both
    directions; otherwise each direction runs as in keras.layers.Bidirectional.
    Unlike keras.layers.Bidirectional, `time_major=True` layers inside it
    give the right numbers (Keras 3 reverses the batch axis of those).

    Example:

    >>> x = np.random.random((4, 10, 8))
    >>> bidi = keras_lstm.Bidirectional(keras_lstm.LSTM(32))
    >>> tuple(bidi(x).shape)
    (4, 64)
    >>> plan = keras_lstm.explain(bidi, x)  # "torch-cpu-bidirectional" on torch
    """

    def call(self, sequences, initial_state=None, mask=None, training=None):
        forward, backward = self.forward_layer, self.backward_layer
        if not (isinstance(forward, LSTM) and isinstance(backward, LSTM)):
            return super().call(
                sequences,
                initial_state=initial_state,
                mask=mask,
                training=training,
            )
        states = (None, None)
        if initial_state is not None:
            half = len(initial_state) // 2
            states = (initial_state[:half], initial_state[half:])
        chosen = dispatch.plan_bidirectional(
            forward,
            backward,
            # The kernels' rules read the dtype and device only.
            ops.cast(sequences, forward.compute_dtype),
            mask,
            initial_state,
            training,
        )
        if chosen.reasons:
            # As keras.layers.Bidirectional: each direction is a layer call.
            y, y_rev = (
                layer(
                    sequences, initial_state=state, mask=mask, training=training
                )
                for layer, state in zip(
                    (forward, backward), states, strict=True
                )
            )
            return self._merge(y, y_rev)
        # Each direction prepares its own view (the backward one reversed);
        # the kernel takes the forward one and reverses within lengths.
        x, mask_f, h0_f, c0_f, _, seen_f = forward._prepare(
            sequences, states[0], mask, training
        )
        _, mask_b, h0_b, c0_b, _, seen_b = backward._prepare(
            sequences, states[1], mask, training
        )
        args = [
            (h0_f, c0_f, *forward._weights()),
            (h0_b, c0_b, *backward._weights()),
        ]
        if mask is None:
            results_f, results_b = kernels.lstm_bidirectional(x, None, *args)
        else:
            ask = not kernels.syncs_to_branch(x)
            right_f = masking.right_padded(mask_f, seen_f) if ask else None
            results_f, results_b = kernels.lstm_bidirectional(
                masking.compact(x, mask_f, seen_f, right_f),
                masking.kernel_lengths(seen_f),
                *args,
            )
            results_f = forward._uncompact(
                results_f, h0_f, c0_f, mask_f, seen_f, right_f
            )
            # The backward results are in that direction's own order, whose
            # valid steps are in front where the forward mask is
            # left-padded.
            results_b = backward._uncompact(
                results_b,
                h0_b,
                c0_b,
                mask_b,
                seen_b,
                masking.right_padded(mask_b, seen_b) if ask else None,
            )
        steps = forward._steps(x)
        y = forward._finish(*results_f, mask_f, seen_f, steps)
        y_rev = backward._finish(*results_b, mask_b, seen_b, steps)
        return self._merge(y, y_rev)

    def _merge(self, y, y_rev):
        """keras.layers.Bidirectional's merge of the two directions."""
        states = ()
        if self.return_state:
            states = tuple(y[1:] + y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        y = ops.cast(y, self.compute_dtype)
        y_rev = ops.cast(y_rev, self.compute_dtype)
        if self.return_sequences:
            # The time axis: keras.layers.Bidirectional flips axis 1, the
            # batch axis of a time_major layer.
            y_rev = ops.flip(
                y_rev, axis=0 if self.forward_layer.time_major else 1
            )
        if self.merge_mode == "concat":
            output = ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:  # None; Bidirectional's constructor refuses anything else
            output = (y, y_rev)
        if not self.return_state:
            return output
        if self.merge_mode is None:
            return output + states
        return (output,) + states
