"""Anchors the NumPy oracle: it must agree with keras.layers.LSTM.

Only cases where Keras itself is right on every backend are compared (no
mask, or a right-padded mask without an initial state). The remaining
semantics of the oracle (left padding, holes, initial states under a mask)
are pinned by small hand-checked properties below.
"""

import keras
import numpy as np
import pytest

from tests import helpers
from tests.oracle import get_activation, lstm_reference


def _keras_lstm(weights, **kwargs):
    layer = keras.layers.LSTM(helpers.UNITS, **kwargs)
    layer.build((None, None, helpers.FEATURES))
    layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "right"])
def test_oracle_matches_keras(return_sequences, go_backwards, mask_kind):
    rng = np.random.default_rng(0)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    mask = helpers.make_mask(mask_kind)
    layer = _keras_lstm(
        weights,
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    kwargs = {} if mask is None else {"mask": mask}
    actual = layer(x, **kwargs)
    expected = lstm_reference(
        x,
        *weights,
        mask=mask,
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    helpers.assert_close(actual, expected)


def test_oracle_matches_keras_with_initial_state():
    rng = np.random.default_rng(1)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    layer = _keras_lstm(weights, return_sequences=True, return_state=True)
    actual = layer(x, initial_state=state)
    expected = lstm_reference(
        x,
        *weights,
        initial_state=state,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(actual, expected)


@pytest.mark.parametrize(
    "activation, recurrent_activation",
    [("relu", "hard_sigmoid"), ("linear", "sigmoid"), ("tanh", "linear")],
)
def test_oracle_matches_keras_activations(activation, recurrent_activation):
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    layer = _keras_lstm(
        weights,
        activation=activation,
        recurrent_activation=recurrent_activation,
        return_sequences=True,
    )
    expected = lstm_reference(
        x,
        *weights,
        activation=activation,
        recurrent_activation=recurrent_activation,
        return_sequences=True,
    )
    helpers.assert_close(layer(x), expected)


def test_oracle_matches_keras_without_bias():
    rng = np.random.default_rng(3)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng, use_bias=False)
    layer = _keras_lstm(weights, use_bias=False, return_sequences=True)
    expected = lstm_reference(x, *weights, return_sequences=True)
    helpers.assert_close(layer(x), expected)


def test_hard_sigmoid_is_keras3_definition():
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0])
    expected = np.array([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(get_activation("hard_sigmoid")(x), expected)
    keras_value = keras.ops.convert_to_numpy(
        keras.activations.hard_sigmoid(x.astype("float32"))
    )
    np.testing.assert_allclose(keras_value, expected, atol=1e-6)


def test_single_step_by_hand():
    # One step, one unit, one feature: the gate order i, f, c, o is spelled
    # out so that a reordering inside the oracle cannot go unnoticed.
    kernel = np.array([[0.1, 0.2, 0.3, 0.4]])
    recurrent_kernel = np.array([[0.5, 0.6, 0.7, 0.8]])
    bias = np.array([0.01, 0.02, 0.03, 0.04])
    x = np.array([[[2.0]]])
    h0, c0 = np.array([[0.5]]), np.array([[-0.25]])

    def sig(v):
        return 1 / (1 + np.exp(-v))

    i = sig(2.0 * 0.1 + 0.5 * 0.5 + 0.01)
    f = sig(2.0 * 0.2 + 0.5 * 0.6 + 0.02)
    g = np.tanh(2.0 * 0.3 + 0.5 * 0.7 + 0.03)
    o = sig(2.0 * 0.4 + 0.5 * 0.8 + 0.04)
    c = f * -0.25 + i * g
    h = o * np.tanh(c)
    out, h1, c1 = lstm_reference(
        x,
        kernel,
        recurrent_kernel,
        bias,
        initial_state=[h0, c0],
        return_state=True,
    )
    np.testing.assert_allclose(out, [[h]], rtol=1e-12)
    np.testing.assert_allclose(h1, [[h]], rtol=1e-12)
    np.testing.assert_allclose(c1, [[c]], rtol=1e-12)


def test_mask_semantics_by_construction():
    rng = np.random.default_rng(4)
    x = helpers.random_inputs(rng).astype(np.float64)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask("holes")
    seq, h, c = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    for row in range(helpers.BATCH):
        # Dropping the masked steps must give the same final state: masked
        # steps do not touch h and c at all.
        kept = x[row : row + 1, mask[row]]
        _, h_row, c_row = lstm_reference(
            kept,
            *weights,
            initial_state=[state[0][row : row + 1], state[1][row : row + 1]],
            return_state=True,
        )
        np.testing.assert_allclose(h[row], h_row[0], rtol=1e-12)
        np.testing.assert_allclose(c[row], c_row[0], rtol=1e-12)
        previous = np.zeros(helpers.UNITS)
        for t in range(helpers.TIMESTEPS):
            if not mask[row, t]:
                # Zeros before the first unmasked step (not h0), then a
                # repeat of the previous output.
                np.testing.assert_array_equal(seq[row, t], previous)
            previous = seq[row, t]
    # Row 1 starts masked: its first output is zeros although h0 is not.
    assert np.all(seq[1, 0] == 0.0)
    assert np.any(state[0][1] != 0.0)


def test_fully_masked_row_keeps_initial_state():
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask("full_row")
    seq, h, c = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    np.testing.assert_array_equal(seq[1], 0.0)
    np.testing.assert_array_equal(h[1], state[0][1])
    np.testing.assert_array_equal(c[1], state[1][1])


def test_time_major_and_go_backwards_by_construction():
    rng = np.random.default_rng(6)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    mask = helpers.make_mask("holes")
    batch_major = lstm_reference(
        x, *weights, mask=mask, return_sequences=True, go_backwards=True
    )
    reversed_forward = lstm_reference(
        x[:, ::-1], *weights, mask=mask[:, ::-1], return_sequences=True
    )
    np.testing.assert_allclose(batch_major, reversed_forward, rtol=1e-12)
    time_major = lstm_reference(
        np.transpose(x, (1, 0, 2)),
        *weights,
        mask=mask.T,
        return_sequences=True,
        go_backwards=True,
        time_major=True,
    )
    np.testing.assert_allclose(
        np.transpose(time_major, (1, 0, 2)), batch_major, rtol=1e-12
    )


def test_dropout_masks_by_construction():
    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng)
    kernel, recurrent_kernel, bias = helpers.random_weights(rng)
    in_drop = rng.integers(0, 2, (helpers.BATCH, helpers.FEATURES)) * 2.0
    # An input dropout mask is the same as scaling the inputs.
    np.testing.assert_allclose(
        lstm_reference(
            x, kernel, recurrent_kernel, bias, input_dropout_mask=in_drop
        ),
        lstm_reference(x * in_drop[:, None, :], kernel, recurrent_kernel, bias),
        rtol=1e-12,
    )
    # A recurrent mask of zeros cuts the recurrence: each step sees h = 0
    # inside the gates, while c still carries over.
    zero_rec = np.zeros((helpers.BATCH, helpers.UNITS))
    with_mask = lstm_reference(
        x,
        kernel,
        recurrent_kernel,
        bias,
        recurrent_dropout_mask=zero_rec,
        return_sequences=True,
    )
    without_recurrence = lstm_reference(
        x,
        kernel,
        np.zeros_like(recurrent_kernel),
        bias,
        return_sequences=True,
    )
    np.testing.assert_allclose(with_mask, without_recurrence, rtol=1e-12)
