"""Bad arguments and bad inputs fail early, naming what is wrong."""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers

B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS
ERRORS = (ValueError, TypeError)


def _x(*shape):
    return helpers.tensor(np.zeros(shape, "float32"))


@pytest.mark.parametrize("units", [0, -1, 2.5, "4", True, None])
def test_bad_units(units):
    with pytest.raises(ERRORS, match="units"):
        keras_lstm.LSTM(units)


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.5"])
def test_bad_dropout(argument, value):
    with pytest.raises(ERRORS, match=argument):
        keras_lstm.LSTM(U, **{argument: value})


@pytest.mark.parametrize("value", ["yes", "true", 1.5])
def test_bad_use_cudnn(value):
    with pytest.raises(ERRORS, match="use_cudnn"):
        keras_lstm.LSTM(U, use_cudnn=value)


@pytest.mark.parametrize("argument", ["activation", "recurrent_activation"])
def test_unknown_activation(argument):
    with pytest.raises(ERRORS, match=argument):
        keras_lstm.LSTM(U, **{argument: "not_an_activation"})


@pytest.mark.parametrize(
    "argument",
    ["kernel_initializer", "recurrent_initializer", "bias_initializer"],
)
def test_unknown_initializer(argument):
    with pytest.raises(ERRORS, match=argument):
        keras_lstm.LSTM(U, **{argument: "not_an_initializer"})


@pytest.mark.parametrize("shape", [(B, F), (B, T, F, 1), (F,)])
def test_inputs_of_wrong_rank(shape):
    layer = keras_lstm.LSTM(U)
    with pytest.raises(ERRORS, match="inputs"):
        layer(_x(*shape))


def test_inputs_of_wrong_rank_in_a_model():
    with pytest.raises(ERRORS, match="inputs"):
        keras_lstm.LSTM(U)(keras.Input((F,)))


@pytest.mark.parametrize("time_major", [False, True])
def test_feature_size_differs_from_build(time_major):
    layer = keras_lstm.LSTM(U, time_major=time_major)
    layer(_x(B, T, F))
    with pytest.raises(ERRORS, match="feature"):
        layer(_x(B, T, F + 1))


def test_feature_size_differs_from_build_shape():
    layer = keras_lstm.LSTM(U)
    layer.build((None, None, F))
    with pytest.raises(ERRORS, match="feature"):
        layer(_x(B, T, F + 2))


def _state(batch=B, units=U):
    return helpers.tensor(np.zeros((batch, units), "float32"))


@pytest.mark.parametrize(
    "make_state",
    [
        lambda: [_state()],
        lambda: [_state(), _state(), _state()],
        lambda: _state(),
        lambda: [_state(units=U + 1), _state()],
        lambda: [_state(), _state(units=U - 1)],
        lambda: [_state(batch=B + 1), _state(batch=B + 1)],
        lambda: [_state(), _state(batch=1)],
    ],
    ids=[
        "one",
        "three",
        "bare-tensor",
        "h-units",
        "c-units",
        "batch",
        "c-batch",
    ],
)
def test_bad_initial_state(make_state):
    layer = keras_lstm.LSTM(U)
    with pytest.raises(ERRORS, match="initial_state"):
        layer(_x(B, T, F), initial_state=make_state())


def test_bad_initial_state_time_major():
    # Time-major inputs: the batch is the second axis, not the first.
    layer = keras_lstm.LSTM(U, time_major=True)
    with pytest.raises(ERRORS, match="initial_state"):
        layer(_x(T, B, F), initial_state=[_state(batch=T), _state(batch=T)])


@pytest.mark.parametrize(
    "shape", [(B, T + 1), (B + 1, T), (B,), (T, B)], ids=str
)
def test_bad_mask_shape(shape):
    layer = keras_lstm.LSTM(U)
    mask = helpers.tensor(np.ones(shape, dtype=bool))
    with pytest.raises(ERRORS, match="mask"):
        layer(_x(B, T, F), mask=mask)


def test_batch_major_mask_for_time_major_layer():
    layer = keras_lstm.LSTM(U, time_major=True)
    mask = helpers.tensor(np.ones((B, T), dtype=bool))
    with pytest.raises(ERRORS, match="mask"):
        layer(_x(T, B, F), mask=mask)


@pytest.mark.parametrize("functional", [False, True])
def test_stateful_needs_static_batch(functional):
    with pytest.raises(ERRORS, match="batch"):
        if functional:
            keras_lstm.LSTM(U, stateful=True)(keras.Input((None, F)))
        else:
            keras.Sequential(
                [keras.Input((T, F)), keras_lstm.LSTM(U, stateful=True)]
            )


def test_good_arguments_are_accepted():
    # The boundaries of the checks above: these must all construct and run.
    for kwargs in (
        dict(dropout=0.0, recurrent_dropout=0.999),
        dict(use_cudnn=False),
        dict(use_cudnn="auto"),
        dict(activation=None, recurrent_activation="linear"),
        dict(kernel_initializer=keras.initializers.Zeros()),
    ):
        layer = keras_lstm.LSTM(1, **kwargs)
        assert tuple(layer(_x(B, T, F)).shape) == (B, 1)
