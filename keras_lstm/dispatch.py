"""The backend-dispatch hook: which kernel runs a call, and why not a fused one.

`plan()` is asked once per call by the layer, and by `explain()`: one set of
rules, so explain() says what really runs. A layer rule is written once here;
device, dtype and tracing rules belong to the backend's kernel module
(`keras_lstm.backend`), which also names the kernel.
"""

from dataclasses import dataclass

from keras import activations, ops

from keras_lstm.backend import kernels

GENERIC = "generic"


@dataclass(frozen=True)
class Plan:
    """The kernel chosen for a call.

    Attributes:
        kernel: the kernel's name; exactly "generic" for the keras.ops path.
        reasons: why no fused kernel runs; empty when one does.
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


def explain(layer, inputs, mask=None, training=False) -> Plan:
    """Says which kernel `layer(inputs, mask=mask, training=training)` runs.

    Every mask pattern runs on the fused kernels, so `mask` never changes the
    answer; it is accepted so that a call can be explained as it is written.
    Unlike a call, explain() does not raise for `use_cudnn=True`: it returns
    the reasons the call would raise with.

    Args:
        layer: a `keras_lstm.LSTM`.
        inputs: the layer's inputs.
        mask: the call's mask, if any.
        training: whether the call is in training mode.

    Returns:
        A `Plan`: `.kernel` (exactly "generic" for the keras.ops path) and
        `.reasons` (why no fused kernel runs; empty when one does).
    """
    del mask
    inputs = ops.convert_to_tensor(inputs, dtype=layer.compute_dtype)
    if layer.time_major:
        inputs = ops.transpose(inputs, (1, 0, 2))
    return _choose(layer, inputs, training)
