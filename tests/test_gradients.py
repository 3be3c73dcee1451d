"""Gradients of keras_lstm.LSTM against finite differences of the oracle.

keras.layers.LSTM cannot serve as the reference for masks with holes, left
padding or initial states, so one SGD step with learning rate 1 (the weight
change is minus the gradient) is compared with central differences of the
float64 oracle's loss.
"""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference

# Dropping the output mask with Reshape is the point; Keras warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:.*does not support masking")


def _oracle_loss(weights, x, y, state, mask, return_sequences, go_backwards):
    out = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=return_sequences,
        go_backwards=go_backwards,
    )
    return np.mean((out.reshape(len(x), -1) - y) ** 2)


def _oracle_gradients(weights, *args, eps=1e-6):
    weights = [w.astype(np.float64) for w in weights]
    grads = []
    for w in weights:
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            saved = w[idx]
            w[idx] = saved + eps
            up = _oracle_loss(weights, *args)
            w[idx] = saved - eps
            down = _oracle_loss(weights, *args)
            w[idx] = saved
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize(
    "mask_kind, with_state, go_backwards, return_sequences, unroll",
    [
        ("none", False, False, True, False),
        ("none", True, False, True, False),
        ("left", True, False, True, False),
        ("holes", False, False, True, False),
        ("holes", True, True, True, False),
        ("holes", True, False, False, False),
        ("full_row", True, False, True, False),
        ("left", True, True, False, True),
        ("holes", True, False, True, True),
    ],
)
def test_gradients_match_oracle(
    mask_kind, with_state, go_backwards, return_sequences, unroll
):
    rng = np.random.default_rng(30)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask(mask_kind)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng) if with_state else None
    steps = helpers.TIMESTEPS if return_sequences else 1
    y = rng.normal(size=(helpers.BATCH, steps * helpers.UNITS))
    y = y.astype("float32")

    x_in = keras.Input((helpers.TIMESTEPS, helpers.FEATURES))
    inputs = [x_in]
    data = [x]
    call_kwargs = {}
    if mask is not None:
        # An explicit mask input: with initial_state tensors, Keras'
        # Layer.__call__ does not fill `mask` from a Masking layer.
        m_in = keras.Input((helpers.TIMESTEPS,), dtype="bool")
        inputs.append(m_in)
        data.append(mask)
        call_kwargs["mask"] = m_in
    if with_state:
        h_in = keras.Input((helpers.UNITS,))
        c_in = keras.Input((helpers.UNITS,))
        inputs += [h_in, c_in]
        data += state
        call_kwargs["initial_state"] = [h_in, c_in]
    lstm = keras_lstm.LSTM(
        helpers.UNITS,
        return_sequences=return_sequences,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    out = lstm(x_in, **call_kwargs)
    # Reshape drops the output mask, so the loss covers every step as the
    # oracle's loss does.
    out = keras.layers.Reshape((-1,))(out)
    model = keras.Model(inputs, out)
    lstm.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.train_on_batch(data, y)

    expected = _oracle_gradients(
        weights, x, y, state, mask, return_sequences, go_backwards
    )
    for before, after, grad in zip(
        weights, lstm.get_weights(), expected, strict=True
    ):
        np.testing.assert_allclose(before - after, grad, rtol=1e-4, atol=2e-6)
