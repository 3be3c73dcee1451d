"""Shared helpers for the tests: random data, weights and conversions."""

import keras
import numpy as np

BATCH = 3
TIMESTEPS = 5
FEATURES = 3
UNITS = 4

# float32 layers against a float64 oracle: this leaves room for float32
# rounding over a few steps while still catching any real semantic slip.
RTOL = 1e-5
ATOL = 1e-5


def to_numpy(x):
    """Converts a backend tensor (or a list of them) to float64 NumPy."""
    if isinstance(x, (list, tuple)):
        return [to_numpy(v) for v in x]
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def random_inputs(rng, batch=BATCH, timesteps=TIMESTEPS, features=FEATURES):
    """Returns float32 inputs (batch, timesteps, features) in [-1, 1]."""
    shape = (batch, timesteps, features)
    return rng.uniform(-1.0, 1.0, shape).astype("float32")


def random_weights(rng, features=FEATURES, units=UNITS, use_bias=True):
    """Returns float32 [kernel, recurrent_kernel, (bias)] for an LSTM.

    The scale keeps gates away from saturation, so a wrong gate order or a
    missing term shows up as a clear numeric difference.
    """
    weights = [
        rng.normal(0.0, 0.5, (features, 4 * units)).astype("float32"),
        rng.normal(0.0, 0.5, (units, 4 * units)).astype("float32"),
    ]
    if use_bias:
        weights.append(rng.normal(0.0, 0.5, (4 * units,)).astype("float32"))
    return weights


def random_state(rng, batch=BATCH, units=UNITS):
    """Returns a float32 initial state [h0, c0], each (batch, units)."""
    return [
        rng.uniform(-1.0, 1.0, (batch, units)).astype("float32"),
        rng.uniform(-1.0, 1.0, (batch, units)).astype("float32"),
    ]


def make_mask(kind, batch=BATCH, timesteps=TIMESTEPS):
    """Returns a boolean mask (batch, timesteps) of the given kind, or None.

    Args:
        kind: "none", "right" (right-padded), "left" (left-padded),
            "holes" (masked steps in the middle) or "full_row" (one row
            entirely masked).
        batch: Batch size; needs at least 3 rows for every kind.
        timesteps: Number of timesteps; needs at least 5.

    Returns:
        A bool array, or None for "none".
    """
    if kind == "none":
        return None
    mask = np.ones((batch, timesteps), dtype=bool)
    if kind == "right":
        # Different lengths per row, including a full-length one.
        mask[0, 3:] = False
        mask[1, 1:] = False
    elif kind == "left":
        mask[0, :2] = False
        mask[1, :4] = False
    elif kind == "holes":
        mask[0, 1] = False
        mask[0, 3] = False
        mask[1, 0] = False
        mask[1, 2:4] = False
        mask[2, 4] = False
    elif kind == "full_row":
        mask[1, :] = False
        mask[0, 2:] = False
    else:
        raise ValueError(f"Unknown mask kind: {kind}")
    return mask


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    """Asserts that two (possibly nested) results agree elementwise."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), type(actual)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_close(a, e, rtol=rtol, atol=atol)
        return
    actual = to_numpy(actual)
    assert actual.shape == np.shape(expected), (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def tensor(x):
    """Converts a NumPy array (or a list of them) to a backend tensor.

    Explicit conversion keeps the tests off any implicit NumPy handling in
    `Layer.__call__`, which differs for keyword arguments across backends.
    """
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [tensor(v) for v in x]
    return keras.ops.convert_to_tensor(x)


def built_layer(cls, weights, features=FEATURES, units=UNITS, **kwargs):
    """Builds an LSTM layer of class `cls` and sets its weights."""
    layer = cls(units, **kwargs)
    # A stateful layer needs a static batch size to hold its states.
    batch = BATCH if kwargs.get("stateful") else None
    layer.build((batch, None, features))
    layer.set_weights(weights)
    return layer


def call_layer(layer, x, initial_state=None, mask=None, training=None):
    """Calls `layer` eagerly, passing only the arguments that are given."""
    kwargs = {}
    if initial_state is not None:
        kwargs["initial_state"] = tensor(initial_state)
    if mask is not None:
        kwargs["mask"] = tensor(mask)
    if training is not None:
        kwargs["training"] = training
    return layer(tensor(x), **kwargs)


def keras_fits_numpy_per_process():
    """Whether Keras's `fit` takes each process's NumPy rows under a
    multi-process JAX distribution (`distribution.auto_shard_dataset =
    False`): Keras 3.10 takes only a tf.data.Dataset there."""
    import inspect

    from keras.src.trainers import data_adapters

    source = inspect.getsource(data_adapters.get_data_adapter)
    return "auto_shard_dataset" in source


def keras_keeps_symbolic_sizes():
    """Whether Keras keeps a size torch.export traces symbolically (a
    dynamic batch) symbolic: Keras 3.10's standardize_shape calls int() on
    every size, which fixes it to the traced one."""
    import inspect

    from keras.src.backend.common import variables

    return "SymInt" in inspect.getsource(variables.standardize_shape)
