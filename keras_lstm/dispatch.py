"""The backend-dispatch hook: which kernel runs a call, and why not a fused one.

`plan()` is asked once per call by the layer, and by `explain()`: one set of
rules, so explain() says what really runs. A layer rule is written once here;
device, dtype and tracing rules belong to the backend's kernel module
(`keras_lstm.backend`), which also names the kernel.
"""

from dataclasses import dataclass

import keras
from keras import activations, ops

from keras_lstm.backend import kernels

GENERIC = "generic"


@dataclass(frozen=True)
class Plan:
    """The kernel chosen for a call.

    Attributes:
        kernel: the kernel's name; exactly "generic" for the keras.ops path.
            For a Bidirectional, "<name>-bidirectional" when one kernel runs
            both directions, else what each direction runs.
        reasons: why no fused kernel runs; empty when one does. For a
            Bidirectional, why no bidirectional kernel runs.
    """

    kernel: str
    reasons: tuple[str, ...]


def _layer_reasons(layer, training) -> list[str]:
    reasons = []
    activation = activations.serialize(layer.activation)
    if activation != "tanh":
        reasons.append(f"activation is {activation!r}; fused kernels need tanh")
    recurrent = activations.serialize(layer.recurrent_activation)
    if recurrent != "sigmoid":
        reasons.append(
            f"recurrent_activation is {recurrent!r}; fused kernels need sigmoid"
        )
    if training and layer.recurrent_dropout > 0:
        reasons.append(
            "recurrent_dropout > 0 in training; fused kernels have no "
            "dropout inside the recurrence"
        )
    if layer.unroll:
        reasons.append("unroll=True asks for the Python-unrolled loop")
    return reasons


def _choose(layer, inputs, training) -> Plan:
    if layer.use_cudnn is False:
        return Plan(GENERIC, ("use_cudnn=False forces the keras.ops path",))
    reasons = _layer_reasons(layer, training)
    if kernels is None:
        reasons.append("this Keras backend has no fused LSTM kernel")
    else:
        reasons.extend(kernels.unsupported(inputs))
    if reasons:
        return Plan(GENERIC, tuple(reasons))
    return Plan(kernels.name(inputs), ())


def plan(layer, inputs, training=False) -> Plan:
    """Chooses the kernel for one call of `layer` on `inputs`.

    Args:
        layer: a `keras_lstm.LSTM`.
        inputs: the batch-major inputs the kernel would get (compute dtype).
        training: whether the call is in training mode.

    Returns:
        A `Plan`.

    Raises:
        ValueError: `use_cudnn=True` and no fused kernel can run; the message
            names every condition that failed.
    """
    chosen = _choose(layer, inputs, training)
    if chosen.reasons and layer.use_cudnn is True:
        reasons = chosen.reasons
        raise ValueError(
            f"LSTM '{layer.name}' was built with use_cudnn=True, but no fused "
            "kernel can run this call: " + "; ".join(reasons) + ". Pass "
            "use_cudnn='auto' to fall back to the keras.ops path."
        )
    return chosen


def _bidirectional_reasons(bidi, inputs, mask, initial_state, training):
    forward, backward = bidi.forward_layer, bidi.backward_layer
    reasons = []
    for direction, layer in (("forward", forward), ("backward", backward)):
        reasons.extend(
            f"{direction} layer: {r}"
            for r in _choose(layer, inputs, training).reasons
        )
        if training and layer.dropout > 0:
            reasons.append(
                f"{direction} layer: dropout > 0 in training draws one "
                "input mask per direction; the bidirectional kernel takes "
                "one input"
            )
        if layer.activity_regularizer is not None:
            reasons.append(
                f"{direction} layer: its activity_regularizer applies when "
                "the direction is called as a layer"
            )
    if forward.go_backwards:
        reasons.append("the forward layer has go_backwards=True")
    if forward.time_major != backward.time_major:
        reasons.append("one direction is time_major and the other is not")
    if forward.units != backward.units:
        reasons.append(
            f"the directions have {forward.units} and {backward.units} units"
        )
    if not reasons:
        states = initial_state is not None or forward.stateful
        reasons.extend(
            kernels.bidirectional_unsupported(
                inputs, mask is not None and states
            )
        )
    return reasons


def plan_bidirectional(
    bidi, inputs, mask=None, initial_state=None, training=False
) -> Plan:
    """Chooses how a Bidirectional call runs.

    Args:
        bidi: a `keras_lstm.Bidirectional` (or a keras.layers.Bidirectional,
            which never runs a bidirectional kernel).
        inputs: its inputs.
        mask: the call's mask, if any.
        initial_state: the call's initial states, if any.
        training: whether the call is in training mode.

    Returns:
        A `Plan`: "<name>-bidirectional" and no reasons when one kernel
        runs both directions; otherwise what each direction runs (its own
        fused kernel, or "generic") and why no bidirectional kernel runs.
    """
    # Imported here: both modules import this one.
    from keras_lstm.bidirectional import Bidirectional
    from keras_lstm.layer import LSTM

    forward, backward = bidi.forward_layer, bidi.backward_layer
    if not (isinstance(forward, LSTM) and isinstance(backward, LSTM)):
        return Plan(GENERIC, ("the wrapped layers are not keras_lstm.LSTM",))
    if kernels is None:
        return Plan(GENERIC, ("this Keras backend has no fused LSTM kernel",))
    inputs = ops.convert_to_tensor(inputs, dtype=forward.compute_dtype)
    if forward.time_major:
        inputs = ops.transpose(inputs, (1, 0, 2))
    reasons = []
    if not isinstance(bidi, Bidirectional):
        reasons.append(
            "keras.layers.Bidirectional calls each direction as a layer of "
            "its own; keras_lstm.Bidirectional can run both in one kernel"
        )
    reasons += _bidirectional_reasons(
        bidi, inputs, mask, initial_state, training
    )
    if not reasons:
        return Plan(f"{kernels.name(inputs)}-bidirectional", ())
    return Plan(_choose(forward, inputs, training).kernel, tuple(reasons))


def explain(layer, inputs, mask=None, training=False, initial_state=None):
    """Says which kernel `layer(inputs, mask=mask, training=training)` runs.

    For a keras_lstm.LSTM every mask pattern runs on the fused kernels, so
    `mask` and `initial_state` never change the answer; they are accepted
    so that a call can be explained as it is written. Unlike a call,
    explain() does not raise for `use_cudnn=True`: it returns the reasons
    the call would raise with. A `keras_lstm.Bidirectional` is explained by
    `plan_bidirectional`.

    Args:
        layer: a `keras_lstm.LSTM` or a `keras_lstm.Bidirectional`.
        inputs: the layer's inputs.
        mask: the call's mask, if any.
        training: whether the call is in training mode.
        initial_state: the call's initial states, if any.

    Returns:
        A `Plan`: `.kernel` (exactly "generic" for the keras.ops path) and
        `.reasons` (why no fused kernel runs; empty when one does).
    """
    if isinstance(layer, keras.layers.Bidirectional):
        return plan_bidirectional(layer, inputs, mask, initial_state, training)
    del mask, initial_state
    inputs = ops.convert_to_tensor(inputs, dtype=layer.compute_dtype)
    if layer.time_major:
        inputs = ops.transpose(inputs, (1, 0, 2))
    return _choose(layer, inputs, training)
