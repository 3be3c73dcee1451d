"""keras_lstm.LSTM inside Keras models: compiled paths, masks, stateful."""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference

B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS


def _lstm_weights(layer):
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


# Unknown timesteps ----------------------------------------------------------


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_sequential_unknown_timesteps(go_backwards):
    lstm = keras_lstm.LSTM(U, return_sequences=True, go_backwards=go_backwards)
    model = keras.Sequential([keras.Input((None, F)), lstm])
    rng = np.random.default_rng(40)
    lstm.set_weights(helpers.random_weights(rng))
    # Two lengths through one model: the compiled function must not bake in
    # the first length.
    for timesteps in (T, T - 2):
        x = helpers.random_inputs(rng, timesteps=timesteps)
        actual = model.predict(x, verbose=0)
        expected = lstm_reference(
            x,
            *_lstm_weights(lstm),
            return_sequences=True,
            go_backwards=go_backwards,
        )
        helpers.assert_close(actual, expected)


def test_functional_unknown_timesteps_with_state_outputs():
    x_in = keras.Input((None, F))
    seq, h, c = keras_lstm.LSTM(
        U, return_sequences=True, return_state=True, name="lstm"
    )(x_in)
    model = keras.Model(x_in, [seq, h, c])
    rng = np.random.default_rng(41)
    lstm = model.get_layer("lstm")
    lstm.set_weights(helpers.random_weights(rng))
    x = helpers.random_inputs(rng)
    expected = lstm_reference(
        x, *_lstm_weights(lstm), return_sequences=True, return_state=True
    )
    helpers.assert_close(model.predict(x, verbose=0), expected)


def test_functional_initial_state_inputs():
    x_in = keras.Input((None, F))
    h_in = keras.Input((U,))
    c_in = keras.Input((U,))
    lstm = keras_lstm.LSTM(U, return_sequences=True, return_state=True)
    outputs = lstm(x_in, initial_state=[h_in, c_in])
    model = keras.Model([x_in, h_in, c_in], outputs)
    rng = np.random.default_rng(42)
    lstm.set_weights(helpers.random_weights(rng))
    x = helpers.random_inputs(rng)
    state = helpers.random_state(rng)
    expected = lstm_reference(
        x,
        *_lstm_weights(lstm),
        initial_state=state,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(model.predict([x, *state], verbose=0), expected)


# Masks from other layers ----------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["right", "left", "holes", "full_row"])
def test_masking_layer_feeds_mask(mask_kind):
    lstm = keras_lstm.LSTM(U, return_sequences=True, return_state=True)
    x_in = keras.Input((None, F))
    model = keras.Model(x_in, lstm(keras.layers.Masking(0.0)(x_in)))
    rng = np.random.default_rng(43)
    lstm.set_weights(helpers.random_weights(rng))
    mask = helpers.make_mask(mask_kind)
    x = helpers.random_inputs(rng)
    x = np.where(mask[..., None], x, 0.0).astype("float32")
    expected = lstm_reference(
        x,
        *_lstm_weights(lstm),
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(model.predict(x, verbose=0), expected)


def test_embedding_mask_zero_feeds_mask():
    vocab = 7
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, F, mask_zero=True),
            keras_lstm.LSTM(U, return_sequences=True),
        ]
    )
    rng = np.random.default_rng(44)
    embedding, lstm = model.layers
    lstm.set_weights(helpers.random_weights(rng))
    tokens = rng.integers(1, vocab, (B, T)).astype("int32")
    tokens[0, 3:] = 0
    tokens[1, :2] = 0
    tokens[2, 2] = 0
    table = helpers.to_numpy(embedding.embeddings)
    expected = lstm_reference(
        table[tokens],
        *_lstm_weights(lstm),
        mask=tokens != 0,
        return_sequences=True,
    )
    helpers.assert_close(model.predict(tokens, verbose=0), expected)


@pytest.mark.parametrize("time_major", [False, True])
def test_stacked_layers_pass_the_mask_on(time_major):
    # The second LSTM only sees the mask through the first one's
    # compute_mask; with holes in it, a dropped mask changes the numbers.
    first = keras_lstm.LSTM(U, return_sequences=True, time_major=time_major)
    second = keras_lstm.LSTM(
        U + 1, return_sequences=True, return_state=True, time_major=time_major
    )
    rng = np.random.default_rng(45)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask("holes")
    first.build((None, None, F))
    second.build((None, None, U))
    first.set_weights(helpers.random_weights(rng))
    second.set_weights(helpers.random_weights(rng, features=U, units=U + 1))
    if time_major:
        x = np.ascontiguousarray(np.transpose(x, (1, 0, 2)))
        mask = np.ascontiguousarray(mask.T)
    x = np.where(mask[..., None], x, 0.0).astype("float32")
    x_in = keras.Input((None, F))
    model = keras.Model(x_in, second(first(keras.layers.Masking(0.0)(x_in))))
    middle = lstm_reference(
        x,
        *_lstm_weights(first),
        mask=mask,
        return_sequences=True,
        time_major=time_major,
    )
    expected = lstm_reference(
        middle,
        *_lstm_weights(second),
        mask=mask,
        return_sequences=True,
        return_state=True,
        time_major=time_major,
    )
    # predict() would split along the first axis, which is time when
    # time_major: a direct call keeps the whole batch together.
    helpers.assert_close(model(helpers.tensor(x)), expected)


def test_compute_mask():
    x = helpers.tensor(np.zeros((B, T, F), "float32"))
    mask = helpers.tensor(helpers.make_mask("holes"))
    seq_layer = keras_lstm.LSTM(U, return_sequences=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(seq_layer.compute_mask(x, mask)),
        helpers.make_mask("holes"),
    )
    last_layer = keras_lstm.LSTM(U)
    assert last_layer.compute_mask(x, mask) is None
    state_layer = keras_lstm.LSTM(U, return_sequences=True, return_state=True)
    seq_mask, h_mask, c_mask = state_layer.compute_mask(x, mask)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(seq_mask), helpers.make_mask("holes")
    )
    assert h_mask is None and c_mask is None
    last_state_layer = keras_lstm.LSTM(U, return_state=True)
    assert list(last_state_layer.compute_mask(x, mask)) == [None] * 3


# Training -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(dropout=0.2, recurrent_dropout=0.2, seed=5),
        dict(go_backwards=True, unroll=True),
    ],
    ids=["plain", "dropout", "backwards-unrolled"],
)
def test_fit_sequential_with_masking(kwargs):
    rng = np.random.default_rng(46)
    x = helpers.random_inputs(rng, batch=8)
    x[:3, 3:] = 0.0
    y = rng.normal(size=(8, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.Masking(0.0),
            keras_lstm.LSTM(U, **kwargs),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before = model.get_weights()
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = model.get_weights()
    assert all(
        not np.allclose(b, a) for b, a in zip(before, after, strict=True)
    )


def test_fit_unknown_timesteps_sequence_output():
    rng = np.random.default_rng(47)
    x = helpers.random_inputs(rng, batch=4)
    y = rng.normal(size=(4, T, U)).astype("float32")
    model = keras.Sequential(
        [keras.Input((None, F)), keras_lstm.LSTM(U, return_sequences=True)]
    )
    model.compile(optimizer="sgd", loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    last = model.evaluate(x, y, verbose=0)
    assert np.isfinite(last)
    assert last < first


def test_time_major_model_predict_and_fit():
    lstm = keras_lstm.LSTM(U, time_major=True, return_sequences=True)
    # In a time-major model Keras' "batch" axis is time.
    x_in = keras.Input((B, F))
    model = keras.Model(x_in, lstm(x_in))
    rng = np.random.default_rng(48)
    lstm.set_weights(helpers.random_weights(rng))
    x = np.ascontiguousarray(
        np.transpose(helpers.random_inputs(rng), (1, 0, 2))
    )
    expected = lstm_reference(
        x, *_lstm_weights(lstm), time_major=True, return_sequences=True
    )
    helpers.assert_close(model.predict(x, batch_size=T, verbose=0), expected)
    model.compile(optimizer="sgd", loss="mse")
    y = np.zeros((T, B, U), "float32")
    history = model.fit(x, y, batch_size=T, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


# Stateful -------------------------------------------------------------------


def _chunks(rng, n=3):
    return [helpers.random_inputs(rng) for _ in range(n)]


def test_stateful_states_are_two_variables():
    layer = keras_lstm.LSTM(U, stateful=True)
    layer(helpers.tensor(np.zeros((B, T, F), "float32")))
    assert len(layer.states) == 2
    for state in layer.states:
        assert tuple(state.shape) == (B, U)
    # The kept states are not weights: the layout stays keras.layers.LSTM's.
    assert len(layer.get_weights()) == 3


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
def test_stateful_equals_concatenated_sequence(unroll):
    rng = np.random.default_rng(50)
    weights = helpers.random_weights(rng)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        stateful=True,
        return_sequences=True,
        unroll=unroll,
    )
    chunks = _chunks(rng)
    outputs = [helpers.to_numpy(layer(helpers.tensor(c))) for c in chunks]
    expected, h, c = lstm_reference(
        np.concatenate(chunks, axis=1),
        *weights,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(np.concatenate(outputs, axis=1), expected)
    helpers.assert_close(list(layer.states), [h, c])

    for reset in ("reset_states", "reset_state"):
        getattr(layer, reset)()
        for state in layer.states:
            np.testing.assert_array_equal(helpers.to_numpy(state), 0.0)
        fresh = lstm_reference(chunks[1], *weights, return_sequences=True)
        helpers.assert_close(layer(helpers.tensor(chunks[1])), fresh)


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_stateful_with_mask_chains_states(go_backwards):
    # Each call starts from the states the previous call left; a row whose
    # chunk is fully masked keeps them untouched.
    rng = np.random.default_rng(51)
    weights = helpers.random_weights(rng)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        stateful=True,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
    )
    state = [np.zeros((B, U)), np.zeros((B, U))]
    for chunk, kind in zip(
        _chunks(rng), ["holes", "full_row", "left"], strict=True
    ):
        mask = helpers.make_mask(kind)
        actual = helpers.call_layer(layer, chunk, mask=mask)
        expected = lstm_reference(
            chunk,
            *weights,
            initial_state=state,
            mask=mask,
            return_sequences=True,
            return_state=True,
            go_backwards=go_backwards,
        )
        helpers.assert_close(actual, expected)
        state = expected[1:]
        helpers.assert_close(list(layer.states), state)


def _stateful_model(weights, **kwargs):
    lstm = keras_lstm.LSTM(U, stateful=True, **kwargs)
    model = keras.Sequential([keras.Input(batch_shape=(B, None, F)), lstm])
    lstm.set_weights(weights)
    return model, lstm


def test_stateful_predict_carries_states_across_batches():
    rng = np.random.default_rng(52)
    weights = helpers.random_weights(rng)
    model, lstm = _stateful_model(weights, return_sequences=True)
    chunks = _chunks(rng)
    outputs = [model.predict(c, batch_size=B, verbose=0) for c in chunks]
    expected, h, c = lstm_reference(
        np.concatenate(chunks, axis=1),
        *weights,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(np.concatenate(outputs, axis=1), expected)
    helpers.assert_close(list(lstm.states), [h, c])
    lstm.reset_states()
    helpers.assert_close(
        model.predict(chunks[0], batch_size=B, verbose=0),
        lstm_reference(chunks[0], *weights, return_sequences=True),
    )


def test_stateful_fit_updates_states_exactly():
    # With a zero learning rate the weights stay put, so the states after
    # fit are the oracle's over the batches fit saw, in order.
    rng = np.random.default_rng(53)
    weights = helpers.random_weights(rng)
    model, lstm = _stateful_model(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    first, second = _chunks(rng, 2)
    x = np.concatenate([first, second], axis=0)
    y = np.zeros((2 * B, U), "float32")
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    state = lstm_reference(first, *weights, return_state=True)[1:]
    _, h, c = lstm_reference(
        second, *weights, initial_state=state, return_state=True
    )
    helpers.assert_close(list(lstm.states), [h, c])


def test_stateful_fit_updates_states():
    # keras.layers.LSTM leaves its states at zero here on JAX and torch.
    rng = np.random.default_rng(54)
    model, lstm = _stateful_model(helpers.random_weights(rng))
    model.compile(optimizer="sgd", loss="mse")
    x = helpers.random_inputs(rng)
    y = rng.normal(size=(B, U)).astype("float32")
    history = model.fit(x, y, batch_size=B, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for state in lstm.states:
        assert np.any(helpers.to_numpy(state) != 0.0)
