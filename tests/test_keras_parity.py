"""keras_lstm.LSTM against keras.layers.LSTM with the same weights.

Only cases where keras.layers.LSTM is itself right on the current backend
are compared: no mask, or a right-padded mask without an initial state (on
torch, not together with unroll and go_backwards). Everything else is
checked against the NumPy oracle in test_semantics.py.
"""

import itertools

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference


def _cases():
    for rs, st, gb, mask_kind, unroll in itertools.product(
        [False, True],
        [False, True],
        [False, True],
        ["none", "right"],
        [False, True],
    ):
        broken_in_keras = (
            keras.backend.backend() == "torch"
            and unroll
            and gb
            and mask_kind != "none"
        )
        if broken_in_keras:
            # keras.layers.LSTM itself is wrong here: nothing to compare to.
            continue
        yield pytest.param(
            rs,
            st,
            gb,
            mask_kind,
            unroll,
            id=f"rs{int(rs)}-st{int(st)}-gb{int(gb)}-{mask_kind}-u{int(unroll)}",
        )


@pytest.mark.parametrize(
    "return_sequences, return_state, go_backwards, mask_kind, unroll",
    list(_cases()),
)
def test_forward_parity(
    return_sequences, return_state, go_backwards, mask_kind, unroll
):
    rng = np.random.default_rng(20)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask(mask_kind)
    kwargs = dict(
        return_sequences=return_sequences,
        return_state=return_state,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    reference = keras.layers.LSTM(helpers.UNITS, **kwargs)
    reference.build((None, None, helpers.FEATURES))
    ours = helpers.built_layer(
        keras_lstm.LSTM, reference.get_weights(), **kwargs
    )
    expected = helpers.to_numpy(helpers.call_layer(reference, x, mask=mask))
    actual = helpers.call_layer(ours, x, mask=mask)
    helpers.assert_close(actual, expected)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero", "state"])
def test_forward_parity_initial_state_no_mask(with_state):
    rng = np.random.default_rng(21)
    x = helpers.random_inputs(rng)
    state = helpers.random_state(rng) if with_state else None
    kwargs = dict(return_sequences=True, return_state=True)
    reference = keras.layers.LSTM(helpers.UNITS, **kwargs)
    reference.build((None, None, helpers.FEATURES))
    ours = helpers.built_layer(
        keras_lstm.LSTM, reference.get_weights(), **kwargs
    )
    helpers.assert_close(
        helpers.call_layer(ours, x, initial_state=state),
        helpers.to_numpy(helpers.call_layer(reference, x, initial_state=state)),
    )


def _model(layer_cls, return_sequences, masking, **kwargs):
    inputs = keras.Input((helpers.TIMESTEPS, helpers.FEATURES))
    y = keras.layers.Masking(0.0)(inputs) if masking else inputs
    y = layer_cls(helpers.UNITS, return_sequences=return_sequences, **kwargs)(y)
    outputs = keras.layers.Dense(2)(y)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("masking", [False, True], ids=["nomask", "right"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_one_sgd_step_parity(return_sequences, masking, go_backwards):
    rng = np.random.default_rng(22)
    x = helpers.random_inputs(rng)
    if masking:
        # Right padding with exact zeros, which Masking turns into a mask.
        x = np.where(helpers.make_mask("right")[..., None], x, 0.0)
        x = x.astype("float32")
    out_shape = (
        (helpers.BATCH, helpers.TIMESTEPS, 2)
        if return_sequences
        else (helpers.BATCH, 2)
    )
    y = rng.normal(size=out_shape).astype("float32")

    reference = _model(
        keras.layers.LSTM,
        return_sequences,
        masking,
        go_backwards=go_backwards,
    )
    ours = _model(
        keras_lstm.LSTM, return_sequences, masking, go_backwards=go_backwards
    )
    # Random (not initializer) weights so that every gradient is non-trivial.
    weights = [
        rng.normal(0.0, 0.5, w.shape).astype("float32")
        for w in reference.get_weights()
    ]
    reference.set_weights(weights)
    ours.set_weights(weights)
    for model in (reference, ours):
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    loss_ref = reference.train_on_batch(x, y)
    loss_ours = ours.train_on_batch(x, y)
    np.testing.assert_allclose(loss_ours, loss_ref, rtol=1e-5)
    moved = False
    for before, after_ref, after_ours in zip(
        weights, reference.get_weights(), ours.get_weights(), strict=True
    ):
        np.testing.assert_allclose(after_ours, after_ref, rtol=1e-5, atol=1e-5)
        moved = moved or not np.allclose(after_ref, before)
    assert moved


def test_one_sgd_step_updates_every_lstm_weight():
    # Each of kernel, recurrent_kernel and bias must receive a gradient:
    # a detached weight would leave it unchanged, unlike in Keras.
    rng = np.random.default_rng(23)
    x = helpers.random_inputs(rng)
    y = rng.normal(size=(helpers.BATCH, 2)).astype("float32")
    model = _model(keras_lstm.LSTM, False, False)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    lstm = model.layers[1]
    before = lstm.get_weights()
    model.train_on_batch(x, y)
    for old, new in zip(before, lstm.get_weights(), strict=True):
        assert not np.allclose(old, new)


def test_oracle_agrees_on_parity_case():
    # Ties the two golden sources together on one shared case.
    rng = np.random.default_rng(24)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask("right")
    reference = keras.layers.LSTM(helpers.UNITS, return_sequences=True)
    reference.build((None, None, helpers.FEATURES))
    expected = lstm_reference(
        x, *reference.get_weights(), mask=mask, return_sequences=True
    )
    helpers.assert_close(helpers.call_layer(reference, x, mask=mask), expected)


@pytest.mark.parametrize("mask_kind", ["none", "right"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_parity(return_sequences, mask_kind):
    # Bidirectional clones the layer through its config with go_backwards
    # flipped, and asks RNN layers for zero outputs at masked steps.
    rng = np.random.default_rng(25)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask(mask_kind)
    if mask is not None:
        x = np.where(mask[..., None], x, 0.0).astype("float32")

    def model(layer_cls):
        x_in = keras.Input((helpers.TIMESTEPS, helpers.FEATURES))
        y = keras.layers.Masking(0.0)(x_in) if mask is not None else x_in
        lstm = layer_cls(helpers.UNITS, return_sequences=return_sequences)
        return keras.Model(x_in, keras.layers.Bidirectional(lstm)(y))

    reference = model(keras.layers.LSTM)
    ours = model(keras_lstm.LSTM)
    weights = [
        rng.normal(0.0, 0.5, w.shape).astype("float32")
        for w in reference.get_weights()
    ]
    reference.set_weights(weights)
    ours.set_weights(weights)
    helpers.assert_close(
        ours.predict(x, verbose=0),
        helpers.to_numpy(reference.predict(x, verbose=0)),
    )
