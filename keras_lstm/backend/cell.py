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
