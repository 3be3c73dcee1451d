"""The backend-dispatch hook: which kernel runs a call, and why not a fused one.

`plan()` is asked once per call by the layer, and by `keras_lstm.explain`:
one set of rules, so explain() says what really runs. A layer rule is
written once here; device, dtype and tracing rules belong to the backend's
kernel module (`keras_lstm.backend`), which also names the kernel.

A layer rule reads the layer's attributes (keras.layers.Bidirectional sets
`use_cudnn` and `zero_output_for_mask` on the layers it wraps after they are
built, so nothing is cached) with identity checks and comparisons only: no
serialization, nothing imported, no string built unless a rule fails. This
module reads the layers it serves through their attributes and imports none
of them.
"""

from dataclasses import dataclass

from keras import activations, ops

from keras_lstm.backend import kernels
from keras_lstm.backend.cell import Cell

GENERIC = "generic"

# The functions the standard step computes: Keras's activations and the
# keras.ops functions they wrap (the same numbers).
_TANH = (activations.tanh, ops.tanh)
_SIGMOID = (activations.sigmoid, ops.sigmoid)


@dataclass(frozen=True)
class Plan:
    """The kernel chosen for a call.

    Attributes:
        kernel: the kernel's name; exactly "generic" for the keras.ops path
            ("torch-loop" for torch's loop of other steps).
            For a Bidirectional, "<name>-bidirectional" when one kernel runs
            both directions, else what each direction runs.
        reasons: why no fused kernel runs; empty when one does. For a
            Bidirectional, why no bidirectional kernel runs.
        notes: what else to know about the fused kernel that runs (it
            computes in float32 for 16-bit inputs where the device has no
            fast 16-bit path; the framework's fused op cannot take the
            step, so the kernel's own loop runs).

    Example:

    >>> plan = keras_lstm.explain(keras_lstm.LSTM(4), np.zeros((2, 5, 3)))
    >>> plan.kernel != "generic", plan.reasons
    (True, ())
    >>> layer = keras_lstm.LSTM(4, use_cudnn=False)
    >>> keras_lstm.explain(layer, np.zeros((2, 5, 3)))
    Plan(kernel='generic',
         reasons=('use_cudnn=False forces the keras.ops path',),
         notes=())
    """

    kernel: str
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()


def cell(layer, training) -> Cell:
    """The step `layer` runs in this mode, as the kernels take it: the
    standard activations as None (each kernel computes them natively)."""
    return Cell(
        activation=None if layer.activation in _TANH else layer.activation,
        recurrent_activation=None
        if layer.recurrent_activation in _SIGMOID
        else layer.recurrent_activation,
        recurrent_dropout=bool(training) and layer.recurrent_dropout > 0,
        unroll=layer.unroll,
    )


def layer_reasons(layer) -> list[str]:
    """Why no kernel may run `layer`, from its arguments (empty when one
    may): every activation, recurrent dropout and unroll run on a kernel;
    only `use_cudnn=False` asks for the keras.ops path."""
    if layer.use_cudnn is False:
        return ["use_cudnn=False forces the keras.ops path"]
    return []


def _choose(layer, inputs, training) -> Plan:
    reasons = layer_reasons(layer)
    if reasons:
        return Plan(GENERIC, tuple(reasons))
    step = cell(layer, training)
    if kernels is None:
        reasons.append("this Keras backend has no fused LSTM kernel")
    else:
        reasons.extend(kernels.unsupported(inputs, step))
    if reasons:
        return Plan(GENERIC, tuple(reasons))
    return Plan(
        kernels.name(inputs, step),
        (),
        kernels.notes(inputs, layer.units, step),
    )


def plan(layer, inputs, training=False, strict=True) -> Plan:
    """Chooses the kernel for one call of `layer` on `inputs`.

    Args:
        layer: a `keras_lstm.LSTM`.
        inputs: the batch-major inputs the kernel would get (compute dtype).
        training: whether the call is in training mode.
        strict: raise, as the call does, when `use_cudnn=True` and no fused
            kernel can run (explain() passes False and returns the reasons).

    Returns:
        A `Plan`.

    Raises:
        ValueError: `strict`, `use_cudnn=True` and no fused kernel can run;
            the message names every condition that failed.
    """
    chosen = _choose(layer, inputs, training)
    if strict and chosen.reasons and layer.use_cudnn is True:
        raise ValueError(
            f"LSTM '{layer.name}' was built with use_cudnn=True, but no fused "
            "kernel can run this call: " + "; ".join(chosen.reasons) + ". "
            "Pass use_cudnn='auto' to fall back to the keras.ops path."
        )
    return chosen


def plan_bidirectional(
    forward, backward, inputs, mask, initial_state, training, reasons=()
) -> Plan:
    """Chooses how a Bidirectional of two keras_lstm.LSTM layers runs.

    Args:
        forward: the forward keras_lstm.LSTM.
        backward: the backward keras_lstm.LSTM.
        inputs: the batch-major inputs (compute dtype).
        mask: the call's mask, if any.
        initial_state: the call's initial states, if any.
        training: whether the call is in training mode.
        reasons: why the wrapper itself cannot run a bidirectional kernel
            (keras.layers.Bidirectional calls each direction on its own).

    Returns:
        A `Plan`: "<name>-bidirectional" and no reasons when one kernel
        runs both directions; otherwise what each direction runs (its own
        fused kernel, or "generic") and why no bidirectional kernel runs.
    """
    if kernels is None:
        return Plan(GENERIC, ("this Keras backend has no fused LSTM kernel",))
    reasons = list(reasons)
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
        step = cell(layer, training)
        if not step.standard:
            reasons.append(
                f"{direction} layer: {step.describe()}; the bidirectional "
                "kernels compute tanh and sigmoid without recurrent dropout"
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
    if inputs.shape[0 if forward.time_major else 1] == 0:
        reasons.append("the sequence has no steps")
    if inputs.shape[1 if forward.time_major else 0] == 0:
        reasons.append("the batch is empty")
    if not reasons:
        states = initial_state is not None or forward.stateful
        reasons.extend(
            kernels.bidirectional_unsupported(
                inputs, mask is not None and states
            )
        )
    if not reasons:
        return Plan(
            f"{kernels.name(inputs)}-bidirectional",
            (),
            kernels.notes(inputs, forward.units),
        )
    return Plan(_choose(forward, inputs, training).kernel, tuple(reasons))
