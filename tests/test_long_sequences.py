"""Long sequences: 10,000 steps, forward and one train step, on the fused
kernel and the keras.ops path, against the float64 oracle. (Time and peak
memory are measured by the benchmark's `long` workload, not here.)"""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference
from tests.test_fused_parity import (
    grad,
    layer_pair,
    loss_fn,
)

BATCH, TIMESTEPS, FEATURES, UNITS = 4, 10_000, 8, 16
# float32 over 10,000 steps: rounding accumulates along the recurrence.
TOL = 1e-4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = helpers.random_inputs(
        rng, batch=BATCH, timesteps=TIMESTEPS, features=FEATURES
    )
    weights = helpers.random_weights(rng, features=FEATURES, units=UNITS)
    mask = np.ones((BATCH, TIMESTEPS), bool)
    mask[1, 7_000:] = False  # a shorter row
    mask[2, ::3] = False  # holes all along
    return x, weights, mask


@pytest.fixture(scope="module")
def layers(data):
    _, weights, _ = data
    return layer_pair(
        weights,
        features=FEATURES,
        units=UNITS,
        return_sequences=True,
        return_state=True,
    )


@pytest.fixture(scope="module")
def expected(data):
    x, weights, mask = data
    return lstm_reference(
        x,
        *weights,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )


@pytest.mark.parametrize("path", ["fused", "generic"])
def test_forward_matches_the_oracle(data, layers, expected, path):
    x, _, mask = data
    layer = layers[0] if path == "fused" else layers[1]
    got = helpers.call_layer(layer, x, mask=mask)
    helpers.assert_close(got, expected, rtol=TOL, atol=TOL)


def test_a_train_step_has_finite_gradients_equal_on_both_paths(
    data, layers, expected
):
    x, weights, mask = data
    fused, generic = layers
    rng = np.random.default_rng(1)
    cotangents = [rng.normal(size=e.shape) for e in expected]
    arguments = [x] + weights
    got = grad(loss_fn(fused, mask, cotangents, False), arguments)
    # Compiled on JAX (not reference_mode's Python loop): one call.
    want = grad(loss_fn(generic, mask, cotangents, False), arguments)
    for g, w in zip(got, want, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL * 10)
    # A Keras train step on top: finite loss, weights move.
    lstm = keras_lstm.LSTM(UNITS, return_sequences=True)
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), lstm, keras.layers.Dense(1)]
    )
    lstm.set_weights(weights)
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(x, np.ones((BATCH, TIMESTEPS, 1), "float32"))
    assert np.isfinite(loss)
    assert any(
        np.any(b != a) for b, a in zip(weights, lstm.get_weights(), strict=True)
    )
