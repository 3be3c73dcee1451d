"""What one step of the loop computes, as the kernels take it.

The standard step (tanh, sigmoid, no recurrent dropout) is what the
frameworks' fused LSTM ops compute (cuDNN, torch's own op). A `Cell` with
another activation or with recurrent dropout runs on the kernels' own
loops (a compiled scan on JAX, the graph loop on TensorFlow, the torch
loop), which call the Keras activation functions themselves: the same
numbers as the keras.ops path (no framework imported here).
"""

from collections.abc import Callable
from typing import NamedTuple

import keras

# Keras's elementwise activations (glu, softmax, log_softmax and sparsemax
# mix the units of a row); some are missing from older Keras releases.
_ELEMENTWISE = frozenset(
    function
    for name in (
        "celu",
        "elu",
        "exponential",
        "gelu",
        "hard_shrink",
        "hard_sigmoid",
        "hard_silu",
        "hard_tanh",
        "leaky_relu",
        "linear",
        "log_sigmoid",
        "mish",
        "relu",
        "relu6",
        "selu",
        "sigmoid",
        "silu",
        "soft_shrink",
        "softplus",
        "softsign",
        "sparse_plus",
        "sparse_sigmoid",
        "squareplus",
        "tanh",
        "tanh_shrink",
    )
    if (function := getattr(keras.activations, name, None)) is not None
)


class Cell(NamedTuple):
    """The step a kernel runs: hashable, so a static argument of a
    compiled function.

    Attributes:
        activation: the cell activation, or None for tanh (the kernel's
            own tanh).
        recurrent_activation: the gate activation, or None for sigmoid.
        recurrent_dropout: whether a recurrent dropout mask (batch, units)
            multiplies h in the recurrent product (the kernel gets it as
            `recurrent_mask`).
        unroll: the layer's `unroll=True`, a hint the kernel may take
            (the numbers do not change).
    """

    activation: Callable | None = None
    recurrent_activation: Callable | None = None
    recurrent_dropout: bool = False
    unroll: bool = False

    @property
    def standard(self) -> bool:
        """Whether the frameworks' fused LSTM ops compute this step."""
        return (
            self.activation is None
            and self.recurrent_activation is None
            and not self.recurrent_dropout
        )

    def functions(self, tanh, sigmoid):
        """(activation, recurrent_activation) as a kernel calls them: the
        framework's own `tanh` and `sigmoid` for the standard ones."""
        return (
            self.activation or tanh,
            self.recurrent_activation or sigmoid,
        )

    @property
    def elementwise(self) -> bool:
        """Whether both activations are Keras's elementwise ones (or the
        standard ones): their derivatives can then be taken for every
        step at once, before a backward loop."""
        return all(
            f is None or f in _ELEMENTWISE
            for f in (self.activation, self.recurrent_activation)
        )

    def describe(self) -> str:
        """What makes the step non-standard, for explain()'s notes."""
        parts = []
        if self.activation is not None:
            parts.append(f"activation {_name(self.activation)!r}")
        if self.recurrent_activation is not None:
            parts.append(
                f"recurrent_activation {_name(self.recurrent_activation)!r}"
            )
        if self.recurrent_dropout:
            parts.append("recurrent dropout")
        return ", ".join(parts)


STANDARD = Cell()


def _name(function) -> str:
    """A Keras activation by its name, anything else by where it lives."""
    name = getattr(function, "__name__", None)
    module = getattr(function, "__module__", None) or ""
    if name is None:
        return repr(function)
    return name if module.startswith("keras.") else f"{module}.{name}"
