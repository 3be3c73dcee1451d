"""Weights in and out of keras_lstm: torch.nn.LSTM, cuDNN parameters, and
Keras models that use keras.layers.LSTM.

Keras keeps `kernel` (features, 4u), `recurrent_kernel` (u, 4u) and one
`bias` (4u), gates i, f, c, o. torch and cuDNN keep the transposes,
`W_ih` (4u, features) and `W_hh` (4u, u), in the same gate order, and two
biases whose sum is the Keras bias.
"""

import importlib

import keras
import numpy as np

from keras_lstm.bidirectional import Bidirectional
from keras_lstm.layer import LSTM


def _numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):  # a torch tensor, without importing torch
        tensor = tensor.detach().cpu()
    return np.asarray(tensor)


def from_torch(module, layer: int | None = None) -> list[np.ndarray]:
    """Keras LSTM weights from a `torch.nn.LSTM`.

    Args:
        module: a `torch.nn.LSTM` (any `batch_first`).
        layer: which layer of a multi-layer module; required when
            `num_layers > 1`.

    Returns:
        `[kernel, recurrent_kernel, bias]` for `LSTM.set_weights`; for a
        bidirectional module, the forward weights then the backward ones,
        for `keras.layers.Bidirectional(LSTM(...)).set_weights`.

    Raises:
        ValueError: the module has a projection (`proj_size > 0`, which
            Keras LSTMs do not have), or `layer` is missing or out of range
            for a multi-layer module. A module without biases gives a zero
            bias.

    Example:

    >>> # requires: torch
    >>> import torch
    >>> layer = keras_lstm.LSTM(16)
    >>> layer.build((None, None, 8))
    >>> layer.set_weights(
    ...     keras_lstm.convert.from_torch(torch.nn.LSTM(8, 16)))
    """
    if getattr(module, "mode", "LSTM") != "LSTM":
        raise TypeError(
            f"`module` must be a torch.nn.LSTM; received {type(module)}."
        )
    if module.proj_size:
        raise ValueError(
            "`module` has proj_size="
            f"{module.proj_size}: an LSTM with a projection has no Keras "
            "equivalent (keras_lstm.LSTM's output size is its units)."
        )
    if layer is None:
        if module.num_layers != 1:
            raise ValueError(
                f"`module` has num_layers={module.num_layers}: pass "
                "`layer=` (0 to num_layers - 1) to take one layer's weights, "
                "one keras_lstm.LSTM per layer."
            )
        layer = 0
    if not 0 <= layer < module.num_layers:
        raise ValueError(
            f"`layer` must be in [0, {module.num_layers}); received {layer}."
        )
    weights = []
    for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
        name = f"l{layer}{suffix}"
        w_ih = _numpy(getattr(module, f"weight_ih_{name}"))
        w_hh = _numpy(getattr(module, f"weight_hh_{name}"))
        bias = np.zeros(w_ih.shape[0], w_ih.dtype)
        if module.bias:
            bias = _numpy(getattr(module, f"bias_ih_{name}")) + _numpy(
                getattr(module, f"bias_hh_{name}")
            )
        weights += [w_ih.T.copy(), w_hh.T.copy(), bias]
    return weights


def to_torch(layer: LSTM, batch_first: bool = True):
    """A `torch.nn.LSTM` with the weights of a built keras_lstm (or Keras) LSTM.

    The Keras bias goes to `bias_ih`; `bias_hh` is zero. Needs torch
    installed (any Keras backend).

    Args:
        layer: a built `keras_lstm.LSTM` or `keras.layers.LSTM` with the
            standard activations (tanh, sigmoid), as torch has no others.
        batch_first: the torch module's layout.

    Returns:
        A float32 `torch.nn.LSTM` with one layer.

    Example:

    >>> # requires: torch
    >>> layer = keras_lstm.LSTM(16)
    >>> layer.build((None, None, 8))
    >>> keras_lstm.convert.to_torch(layer)
    LSTM(8, 16, batch_first=True)
    """
    # torch is an optional dependency of this function alone, whatever the
    # Keras backend: imported when called, never with the package.
    torch = importlib.import_module("torch")

    for arg, expected in (
        ("activation", "tanh"),
        ("recurrent_activation", "sigmoid"),
    ):
        got = keras.activations.serialize(getattr(layer, arg))
        if got != expected:
            raise ValueError(
                f"torch.nn.LSTM computes {arg}={expected!r}; the layer has "
                f"{arg}={got!r}."
            )
    if not layer.built:
        raise ValueError("`layer` must be built (call it once) first.")
    kernel, recurrent_kernel, *rest = layer.get_weights()
    units = recurrent_kernel.shape[0]
    module = torch.nn.LSTM(
        kernel.shape[0], units, batch_first=batch_first, bias=True
    )
    bias = rest[0] if rest else np.zeros(4 * units, kernel.dtype)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(kernel.T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(recurrent_kernel.T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(bias))
        module.bias_hh_l0.zero_()
    return module


def from_cudnn(params, input_size: int, units: int) -> list[np.ndarray]:
    """Keras LSTM weights from a canonical cuDNN parameter vector.

    The layout of CudnnRNNV3, jax.experimental.rnn and torch's flattened
    weights for one unidirectional layer: W_ih (4u, input_size), W_hh
    (4u, u), b_ih (4u), b_hh (4u), concatenated flat.

    Returns:
        `[kernel, recurrent_kernel, bias]`.

    Example:

    >>> weights = keras_lstm.convert.from_cudnn(
    ...     np.zeros(4 * 16 * (8 + 16 + 2)), input_size=8, units=16)
    >>> [w.shape for w in weights]
    [(8, 64), (16, 64), (64,)]
    """
    params = _numpy(params).ravel()
    sizes = [4 * units * input_size, 4 * units * units, 4 * units, 4 * units]
    if params.size != sum(sizes):
        raise ValueError(
            f"`params` must hold {sum(sizes)} values for input_size="
            f"{input_size}, units={units} (W_ih, W_hh, b_ih, b_hh); received "
            f"{params.size}."
        )
    w_ih, w_hh, b_ih, b_hh = np.split(params, np.cumsum(sizes)[:-1])
    return [
        w_ih.reshape(4 * units, input_size).T.copy(),
        w_hh.reshape(4 * units, units).T.copy(),
        b_ih + b_hh,
    ]


def to_cudnn(weights) -> np.ndarray:
    """The canonical cuDNN parameter vector of `[kernel, recurrent_kernel,
    bias]` (b_ih = bias, b_hh = 0).

    Example:

    >>> layer = keras_lstm.LSTM(16)
    >>> layer.build((None, None, 8))
    >>> keras_lstm.convert.to_cudnn(layer.get_weights()).shape
    (1664,)
    """
    kernel, recurrent_kernel, bias = (_numpy(w) for w in weights)
    return np.concatenate(
        [kernel.T.ravel(), recurrent_kernel.T.ravel(), bias, 0 * bias]
    )


def _from_keras_lstm(layer):
    # keras.layers.LSTM's config holds a subset of keras_lstm.LSTM's
    # arguments, under the same names.
    return LSTM.from_config(layer.get_config())


def replace_keras_lstm(model: keras.Model) -> keras.Model:
    """A copy of `model` with every keras.layers.LSTM replaced by
    keras_lstm.LSTM, weights carried over. A keras.layers.Bidirectional
    around keras.layers.LSTM becomes a keras_lstm.Bidirectional (both
    directions in one kernel where the backend has one).

    Works for Sequential and functional models, nested ones included
    (through `keras.models.clone_model`); a subclassed model, at any depth,
    is refused.

    Example:

    >>> model = keras.Sequential([keras.Input((None, 8)), keras.layers.LSTM(4)])
    >>> new = keras_lstm.convert.replace_keras_lstm(model)
    >>> type(new.layers[0]).__module__
    'keras_lstm.layer'
    """
    # keras.Model(inputs, outputs) builds a Functional instance.
    if not isinstance(model, keras.Sequential) and (
        type(model).__name__ != "Functional"
    ):
        raise ValueError(
            "replace_keras_lstm() takes a Sequential or functional model "
            f"(nested ones too); received a subclassed "
            f"{type(model).__name__}. Build the "
            "subclass with keras_lstm.LSTM in place of keras.layers.LSTM."
        )

    def clone(layer):
        if isinstance(layer, keras.Model):  # a nested model: same treatment
            return replace_keras_lstm(layer)
        if type(layer) is keras.layers.LSTM:
            return _from_keras_lstm(layer)
        if isinstance(layer, keras.layers.Bidirectional) and (
            type(layer.forward_layer) is keras.layers.LSTM
        ):
            return Bidirectional(
                _from_keras_lstm(layer.forward_layer),
                backward_layer=_from_keras_lstm(layer.backward_layer),
                merge_mode=layer.merge_mode,
                name=layer.name,
            )
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
