"""`keras_lstm.explain`: which kernel a call runs, and why not a fused one."""

import keras
from keras import ops

from keras_lstm import dispatch
from keras_lstm.bidirectional import Bidirectional
from keras_lstm.layer import LSTM


def _as_called(layer, inputs):
    """The inputs as the call hands them to the rules, which read their
    dtype and device only."""
    return ops.convert_to_tensor(inputs, dtype=layer.compute_dtype)


def explain(
    layer, inputs, mask=None, training=False, initial_state=None
) -> dispatch.Plan:
    """Says which kernel `layer(inputs, mask=mask, training=training)` runs.

    For a keras_lstm.LSTM every mask pattern runs on the fused kernels, so
    `mask` and `initial_state` never change the answer; they are accepted
    so that a call can be explained as it is written. Unlike a call,
    explain() does not raise for `use_cudnn=True`: it returns the reasons
    the call would raise with.

    Args:
        layer: a `keras_lstm.LSTM`, or a `keras_lstm.Bidirectional` /
            `keras.layers.Bidirectional` (around any layers).
        inputs: the layer's inputs.
        mask: the call's mask, if any.
        training: whether the call is in training mode.
        initial_state: the call's initial states, if any.

    Returns:
        A `Plan`: `.kernel` (exactly "generic" for the keras.ops path) and
        `.reasons` (why no fused kernel runs; empty when one does). For a
        Bidirectional, "<kernel>-bidirectional" when one kernel runs both
        directions, else what each direction runs, and why no bidirectional
        kernel runs.

    Raises:
        TypeError: `layer` is none of the above.

    Example:

    >>> layer = keras_lstm.LSTM(8, activation="relu")
    >>> keras_lstm.explain(layer, np.zeros((2, 5, 3))).reasons
    ()
    >>> layer = keras_lstm.LSTM(8, use_cudnn=False)
    >>> keras_lstm.explain(layer, np.zeros((2, 5, 3))).reasons
    ('use_cudnn=False forces the keras.ops path',)
    """
    if isinstance(layer, keras.layers.Bidirectional):
        forward, backward = layer.forward_layer, layer.backward_layer
        if not (isinstance(forward, LSTM) and isinstance(backward, LSTM)):
            return dispatch.Plan(
                dispatch.GENERIC,
                ("the wrapped layers are not keras_lstm.LSTM",),
            )
        reasons = ()
        if not isinstance(layer, Bidirectional):
            reasons = (
                "keras.layers.Bidirectional calls each direction as a layer "
                "of its own; keras_lstm.Bidirectional can run both in one "
                "kernel",
            )
        return dispatch.plan_bidirectional(
            forward,
            backward,
            _as_called(forward, inputs),
            mask,
            initial_state,
            training,
            reasons,
        )
    if not isinstance(layer, LSTM):
        raise TypeError(
            "keras_lstm.explain() takes a keras_lstm.LSTM or a Bidirectional "
            f"layer. Received: layer={layer!r} ({type(layer).__name__})"
        )
    del mask, initial_state
    return dispatch.plan(
        layer, _as_called(layer, inputs), training, strict=False
    )
