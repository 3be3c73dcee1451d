"""Drop-in protocol: keras_lstm.LSTM answers as keras.layers.LSTM does.

Keras wrappers (Bidirectional, TimeDistributed, functional models) and user
code written for keras.layers.LSTM call its methods and read its attributes;
every one of them must exist on keras_lstm.LSTM and give the same types and
structures, over the option grid.
"""

import itertools

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers

OPTIONS = [
    dict(return_sequences=r, return_state=s, go_backwards=g)
    for r, s, g in itertools.product([False, True], repeat=3)
]


def _pair(**kwargs):
    weights = helpers.random_weights(np.random.default_rng(0))
    layers = [
        helpers.built_layer(cls, weights, **kwargs)
        for cls in (keras.layers.LSTM, keras_lstm.LSTM)
    ]
    return layers


def _structure(value):
    """The nesting of a result: containers by type, leaves by shape."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_structure(v) for v in value])
    if value is None:
        return None
    return tuple(value.shape)


def test_every_public_attribute_of_keras_lstm_exists():
    theirs, ours = _pair()
    missing = [
        name
        for name in dir(theirs)
        if not name.startswith("_")
        and hasattr(theirs, name)  # `input`: only once called on a tensor
        and not hasattr(ours, name)
    ]
    assert not missing


@pytest.mark.parametrize("kwargs", OPTIONS, ids=str)
def test_call_results_have_the_same_structure(kwargs):
    theirs, ours = _pair(**kwargs)
    x = helpers.random_inputs(np.random.default_rng(1))
    mask = helpers.make_mask("holes")
    for call in (
        lambda layer: layer(helpers.tensor(x)),
        lambda layer: layer(helpers.tensor(x), mask=helpers.tensor(mask)),
    ):
        want, got = call(theirs), call(ours)
        assert _structure(got) == _structure(want)
        helpers.assert_close(got, helpers.to_numpy(want))


@pytest.mark.parametrize("kwargs", OPTIONS, ids=str)
def test_symbolic_calls_shapes_and_masks_match(kwargs):
    theirs, ours = _pair(**kwargs)
    inputs = keras.Input((None, helpers.FEATURES))
    assert _structure(ours(inputs)) == _structure(theirs(inputs))
    shape = (2, 7, helpers.FEATURES)
    assert ours.compute_output_shape(shape) == theirs.compute_output_shape(
        shape
    )
    assert type(ours.compute_output_shape(shape)) is type(
        theirs.compute_output_shape(shape)
    )
    mask = keras.ops.ones((2, 7), dtype="bool")
    x = keras.ops.ones(shape)
    assert _structure(ours.compute_mask(x, mask)) == _structure(
        theirs.compute_mask(x, mask)
    )


def test_states_api_matches():
    theirs, ours = _pair()
    assert ours.state_size == theirs.state_size
    assert ours.single_state == theirs.single_state
    want, got = theirs.get_initial_state(3), ours.get_initial_state(3)
    assert _structure(got) == _structure(want)
    for g, w in zip(got, want, strict=True):
        assert keras.backend.standardize_dtype(g.dtype) == (
            keras.backend.standardize_dtype(w.dtype)
        )
        np.testing.assert_array_equal(helpers.to_numpy(g), helpers.to_numpy(w))


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "left"])
def test_inner_loop_matches(go_backwards, mask_kind):
    theirs, ours = _pair(go_backwards=go_backwards)
    rng = np.random.default_rng(2)
    x = helpers.tensor(helpers.random_inputs(rng))
    state = helpers.tensor(helpers.random_state(rng))
    mask = helpers.tensor(helpers.make_mask(mask_kind))
    want = theirs.inner_loop(x, state, mask)
    got = ours.inner_loop(x, state, mask)
    # keras.layers.LSTM gives its states as a list, or a tuple with a mask;
    # without return_sequences its outputs are the last one (batch, 1,
    # units), except on JAX, where they are every step.
    outputs = want[1]
    if not theirs.return_sequences and outputs.shape[1] != 1:
        outputs = outputs[:, -1:]
    want = (want[0], outputs, list(want[2]))
    assert _structure(got) == _structure(want)
    helpers.assert_close(got, helpers.to_numpy(want))


def test_wrappers_see_no_difference():
    # Bidirectional computes shapes with tuple arithmetic on them.
    for cls in (keras.layers.Bidirectional, keras_lstm.Bidirectional):
        bidi = cls(keras_lstm.LSTM(2, return_state=True))
        want = keras.layers.Bidirectional(
            keras.layers.LSTM(2, return_state=True)
        ).compute_output_shape((1, 2, 2))
        assert bidi.compute_output_shape((1, 2, 2)) == want
    timed = keras.layers.TimeDistributed(keras_lstm.LSTM(3))
    assert timed(keras.Input((4, 5, 2))).shape == (None, 4, 3)
