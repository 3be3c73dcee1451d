"""The fused kernel of the active Keras backend, chosen once at import.

Each module here exposes the same eight names:

- `name(inputs) -> str`: the kernel that would run on these inputs;
- `unsupported(inputs) -> tuple[str, ...]`: why it cannot run here (device,
  dtype, tracing context); empty when it can;
- `scan_runs_under_xla() -> bool`: whether the keras.ops path's scan
  can be XLA-compiled with its gradient (the layer declines jit if not);
- `xla_hides_fused() -> bool`: whether XLA-compiling the model would keep
  this machine's fused kernel from running (the layer then tells Keras not to
  jit-compile, as keras.layers.LSTM does for cuDNN on TensorFlow);
- `notes(inputs, units) -> tuple[str, ...]`: what explain() adds about the
  kernel
  that runs (it computes in float32 where 16-bit math is slow on the
  device);
- `takes_mask(inputs) -> bool`: whether `lstm` takes a mask itself (a loop
  that selects per step), rather than lengths of inputs whose valid steps
  the layer has moved to the front (cuDNN, torch);
- `syncs_to_branch(inputs) -> bool`: whether branching on the data (is
  the mask right-padded?) makes the host wait for the device (eager torch
  on CUDA); the layer then compacts every mask without asking;
- `lstm(inputs, h0, c0, valid, kernel, recurrent_kernel, bias,
  sequence=True) -> (sequence, h, c)`: the standard LSTM (tanh, sigmoid,
  gates i, f, c, o) over batch-major inputs. `valid` is None (all steps
  valid), an int32 (batch,) tensor of lengths in [1, timesteps] (valid
  steps at the front of each row), or, where `takes_mask`, a bool (batch,
  timesteps) mask; an invalid step keeps h and c. h and c are the states
  after each row's last valid step; `sequence` is exact at valid steps;
  after a row's length it is unspecified, at a masked step it is the
  carried h. With `sequence=False` (only the final states are used)
  `sequence` may be None: a loop kernel then keeps no sequence of outputs.
  `bias` is never None (the layer passes zeros for use_bias=False).

For keras_lstm.Bidirectional, each module also says
`bidirectional_unsupported(inputs, masked_with_states) -> tuple[str, ...]`
(why no bidirectional kernel runs; `masked_with_states` is whether the call
has a mask and initial or stateful states), and the torch and JAX modules
have `lstm_bidirectional(inputs, lengths, forward, backward)` where
`forward` and `backward` are `(h0, c0, kernel, recurrent_kernel, bias)`:
both directions' `(sequence, h, c)` as `lstm` would return them, the
backward direction running over each row's valid steps in reverse.

Each module also has `full_float32()`, a context manager in which float32
runs at full precision on GPUs (TF32 off), the framework's own setting
restored after; on CPU it changes nothing.

Only the module of the active backend is imported, so `import keras_lstm`
under JAX imports neither torch nor TensorFlow.
"""

import contextlib

import keras

_backend = keras.backend.backend()
if _backend == "torch":
    from keras_lstm.backend import torch as kernels
elif _backend == "jax":
    from keras_lstm.backend import jax as kernels
elif _backend == "tensorflow":
    from keras_lstm.backend import tensorflow as kernels
else:
    kernels = None


def full_float32():
    """A context manager: float32 math at full float32 precision on the
    current backend's GPU (TensorFloat-32 off for cuDNN and matmuls), the
    framework's own setting restored after. On CPU it changes nothing.

    keras_lstm follows each framework's TF32 setting, as keras.layers.LSTM
    does; use this where float32 results are compared (parity checks
    across backends or kernels keep their 1e-5 on a GPU).

    Example:

    >>> with keras_lstm.full_float32():
    ...     output = keras_lstm.LSTM(4)(np.zeros((2, 5, 3)))
    """
    if kernels is None:
        return contextlib.nullcontext()
    return kernels.full_float32()


__all__ = ["full_float32", "kernels"]
