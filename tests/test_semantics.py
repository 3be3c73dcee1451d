"""keras_lstm.LSTM against the NumPy oracle, over the whole argument grid."""

import itertools

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference

MASK_KINDS = ["none", "right", "left", "holes", "full_row"]


def _run_both(
    seed=0,
    mask_kind="none",
    with_state=False,
    use_bias=True,
    layer_kwargs=None,
    oracle_only_kwargs=None,
    timesteps=helpers.TIMESTEPS,
    batch=helpers.BATCH,
):
    """Runs keras_lstm.LSTM and the oracle on the same random problem."""
    layer_kwargs = dict(layer_kwargs or {})
    rng = np.random.default_rng(seed)
    x = helpers.random_inputs(rng, batch=batch, timesteps=timesteps)
    weights = helpers.random_weights(rng, use_bias=use_bias)
    state = helpers.random_state(rng, batch=batch) if with_state else None
    mask = helpers.make_mask(mask_kind)
    layer = helpers.built_layer(
        keras_lstm.LSTM, weights, use_bias=use_bias, **layer_kwargs
    )
    actual = helpers.call_layer(layer, x, initial_state=state, mask=mask)
    oracle_kwargs = {
        k: v
        for k, v in layer_kwargs.items()
        if k
        in (
            "activation",
            "recurrent_activation",
            "return_sequences",
            "return_state",
            "go_backwards",
        )
    }
    oracle_kwargs.update(oracle_only_kwargs or {})
    expected = lstm_reference(
        x, *weights, initial_state=state, mask=mask, **oracle_kwargs
    )
    return actual, expected


# "auto" takes the backend's fused kernel where there is one; False forces
# the generic keras.ops loop. Both must be the oracle's LSTM.
@pytest.mark.parametrize("use_cudnn", ["auto", False], ids=["auto", "generic"])
@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero", "state"])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize(
    "return_sequences, return_state",
    list(itertools.product([False, True], repeat=2)),
    ids=["last", "last+state", "seq", "seq+state"],
)
def test_grid_matches_oracle(
    return_sequences,
    return_state,
    go_backwards,
    mask_kind,
    with_state,
    unroll,
    use_cudnn,
):
    actual, expected = _run_both(
        mask_kind=mask_kind,
        with_state=with_state,
        layer_kwargs=dict(
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            unroll=unroll,
            use_cudnn=use_cudnn,
        ),
    )
    helpers.assert_close(actual, expected)


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_without_bias(mask_kind, unroll):
    actual, expected = _run_both(
        seed=1,
        mask_kind=mask_kind,
        with_state=True,
        use_bias=False,
        layer_kwargs=dict(
            return_sequences=True, return_state=True, unroll=unroll
        ),
    )
    helpers.assert_close(actual, expected)


def test_without_bias_has_two_weights():
    layer = keras_lstm.LSTM(helpers.UNITS, use_bias=False)
    layer.build((None, None, helpers.FEATURES))
    shapes = [w.shape for w in layer.get_weights()]
    assert shapes == [
        (helpers.FEATURES, 4 * helpers.UNITS),
        (helpers.UNITS, 4 * helpers.UNITS),
    ]
    assert layer.cell.bias is None


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_unit_forget_bias_initial_values(unit_forget_bias):
    units = helpers.UNITS
    layer = keras_lstm.LSTM(units, unit_forget_bias=unit_forget_bias)
    layer.build((None, None, helpers.FEATURES))
    bias = helpers.to_numpy(layer.cell.bias)
    expected = np.zeros(4 * units)
    if unit_forget_bias:
        expected[units : 2 * units] = 1.0
    np.testing.assert_array_equal(bias, expected)


def test_unit_forget_bias_with_custom_bias_initializer():
    # The forget slice gets ones; the other slices keep the initializer.
    units = helpers.UNITS
    layer = keras_lstm.LSTM(
        units, bias_initializer=keras.initializers.Constant(0.25)
    )
    layer.build((None, None, helpers.FEATURES))
    bias = helpers.to_numpy(layer.cell.bias)
    expected = np.full(4 * units, 0.25)
    expected[units : 2 * units] = 1.0
    np.testing.assert_array_equal(bias, expected)


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_unit_forget_bias_runs_like_oracle(unit_forget_bias):
    # With the initial (not overwritten) weights the layer must compute
    # exactly what its own weights say, forget-gate ones included.
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    layer = keras_lstm.LSTM(
        helpers.UNITS,
        unit_forget_bias=unit_forget_bias,
        return_sequences=True,
    )
    actual = layer(helpers.tensor(x))
    weights = layer.get_weights()
    helpers.assert_close(
        actual, lstm_reference(x, *weights, return_sequences=True)
    )


def test_weights_match_keras_layout():
    ours = keras_lstm.LSTM(helpers.UNITS)
    theirs = keras.layers.LSTM(helpers.UNITS)
    for layer in (ours, theirs):
        layer.build((None, None, helpers.FEATURES))
    assert [w.shape for w in ours.get_weights()] == [
        w.shape for w in theirs.get_weights()
    ]
    assert isinstance(ours.cell, keras.layers.LSTMCell)
    kernel, recurrent_kernel, bias = ours.get_weights()
    np.testing.assert_array_equal(kernel, helpers.to_numpy(ours.cell.kernel))
    np.testing.assert_array_equal(
        recurrent_kernel, helpers.to_numpy(ours.cell.recurrent_kernel)
    )
    np.testing.assert_array_equal(bias, helpers.to_numpy(ours.cell.bias))
    assert len(ours.trainable_weights) == 3


def test_set_weights_reach_the_cell():
    rng = np.random.default_rng(3)
    weights = helpers.random_weights(rng)
    layer = helpers.built_layer(keras_lstm.LSTM, weights)
    np.testing.assert_array_equal(
        helpers.to_numpy(layer.cell.kernel), weights[0]
    )
    np.testing.assert_array_equal(
        helpers.to_numpy(layer.cell.recurrent_kernel), weights[1]
    )
    np.testing.assert_array_equal(helpers.to_numpy(layer.cell.bias), weights[2])


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize(
    "activation, recurrent_activation",
    [
        ("relu", "sigmoid"),
        ("tanh", "hard_sigmoid"),
        (None, "sigmoid"),
        ("linear", "linear"),
        ("relu", "hard_sigmoid"),
    ],
)
def test_activations(activation, recurrent_activation, unroll):
    actual, expected = _run_both(
        seed=4,
        mask_kind="holes",
        with_state=True,
        layer_kwargs=dict(
            activation=activation,
            recurrent_activation=recurrent_activation,
            return_sequences=True,
            return_state=True,
            unroll=unroll,
        ),
    )
    helpers.assert_close(actual, expected)


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero", "state"])
@pytest.mark.parametrize("mask_kind", ["none", "left", "holes"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_time_major(
    return_sequences, go_backwards, mask_kind, with_state, unroll
):
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng) if with_state else None
    mask = helpers.make_mask(mask_kind)
    x_tm = np.ascontiguousarray(np.transpose(x, (1, 0, 2)))
    mask_tm = None if mask is None else np.ascontiguousarray(mask.T)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        time_major=True,
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    actual = helpers.call_layer(layer, x_tm, initial_state=state, mask=mask_tm)
    expected = lstm_reference(
        x_tm,
        *weights,
        initial_state=state,
        mask=mask_tm,
        time_major=True,
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    helpers.assert_close(actual, expected)
    if return_sequences:
        assert tuple(actual[0].shape) == (
            helpers.TIMESTEPS,
            helpers.BATCH,
            helpers.UNITS,
        )


def test_time_major_builds_from_time_major_shape():
    # The feature axis is last either way; the batch axis is the second one.
    layer = keras_lstm.LSTM(helpers.UNITS, time_major=True)
    x = np.zeros((helpers.TIMESTEPS, 2, helpers.FEATURES), "float32")
    out = layer(helpers.tensor(x))
    assert tuple(out.shape) == (2, helpers.UNITS)
    assert layer.get_weights()[0].shape == (
        helpers.FEATURES,
        4 * helpers.UNITS,
    )


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_single_timestep_and_single_row(go_backwards, unroll):
    actual, expected = _run_both(
        seed=6,
        timesteps=1,
        batch=1,
        layer_kwargs=dict(
            return_sequences=True,
            return_state=True,
            go_backwards=go_backwards,
            unroll=unroll,
        ),
    )
    helpers.assert_close(actual, expected)


def test_all_true_mask_equals_no_mask():
    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    layer = helpers.built_layer(
        keras_lstm.LSTM, weights, return_sequences=True, return_state=True
    )
    mask = np.ones((helpers.BATCH, helpers.TIMESTEPS), dtype=bool)
    helpers.assert_close(
        helpers.call_layer(layer, x, mask=mask),
        helpers.to_numpy(helpers.call_layer(layer, x)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_masked_steps_ignore_their_inputs():
    # Garbage (large values) at masked steps must not leak anywhere.
    rng = np.random.default_rng(8)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    mask = helpers.make_mask("holes")
    noisy = np.where(mask[..., None], x, 1e3).astype("float32")
    layer = helpers.built_layer(
        keras_lstm.LSTM, weights, return_sequences=True, return_state=True
    )
    helpers.assert_close(
        helpers.call_layer(layer, noisy, mask=mask),
        lstm_reference(
            x, *weights, mask=mask, return_sequences=True, return_state=True
        ),
    )


def test_output_dtype_and_shapes():
    layer = keras_lstm.LSTM(
        helpers.UNITS, return_sequences=True, return_state=True
    )
    x = np.zeros((2, helpers.TIMESTEPS, helpers.FEATURES), "float32")
    seq, h, c = layer(helpers.tensor(x))
    assert tuple(seq.shape) == (2, helpers.TIMESTEPS, helpers.UNITS)
    assert tuple(h.shape) == (2, helpers.UNITS)
    assert tuple(c.shape) == (2, helpers.UNITS)
    for value in (seq, h, c):
        assert keras.backend.standardize_dtype(value.dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(return_sequences=True),
        dict(return_state=True),
        dict(return_sequences=True, return_state=True, time_major=True),
    ],
)
def test_compute_output_shape_matches_call(kwargs):
    layer = keras_lstm.LSTM(helpers.UNITS, **kwargs)
    shape = (2, helpers.TIMESTEPS, helpers.FEATURES)
    x = np.zeros(shape, "float32")
    outputs = layer(helpers.tensor(x))
    predicted = layer.compute_output_shape(shape)
    if kwargs.get("return_state"):
        assert [tuple(s) for s in predicted] == [
            tuple(o.shape) for o in outputs
        ]
    else:
        assert tuple(predicted) == tuple(outputs.shape)


# Dropout -------------------------------------------------------------------


@pytest.mark.parametrize("training", [None, False])
def test_dropout_inactive_outside_training(training):
    rng = np.random.default_rng(9)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask("holes")
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        dropout=0.5,
        recurrent_dropout=0.5,
        seed=3,
        return_sequences=True,
        return_state=True,
    )
    actual = helpers.call_layer(
        layer, x, initial_state=state, mask=mask, training=training
    )
    expected = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(actual, expected)


def _dropout_layer(weights, **kwargs):
    return helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        seed=11,
        return_sequences=True,
        return_state=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    "dropout, recurrent_dropout", [(0.5, 0.0), (0.0, 0.5), (0.4, 0.3)]
)
def test_dropout_same_seed_same_output(dropout, recurrent_dropout):
    rng = np.random.default_rng(10)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    results = []
    for _ in range(2):
        layer = _dropout_layer(
            weights, dropout=dropout, recurrent_dropout=recurrent_dropout
        )
        results.append(
            helpers.to_numpy(helpers.call_layer(layer, x, training=True))
        )
    helpers.assert_close(results[0], results[1], rtol=0, atol=0)
    plain = lstm_reference(
        x, *weights, return_sequences=True, return_state=True
    )
    assert not np.allclose(results[0][0], plain[0], atol=1e-4)


def _candidate_masks(size, rate):
    """Every 0 / (1 / (1 - rate)) vector of the given size, as rows."""
    scale = 1.0 / (1.0 - rate)
    grid = itertools.product([0.0, scale], repeat=size)
    return np.array(list(grid), dtype=np.float64)


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize(
    "dropout, recurrent_dropout", [(0.5, 0.0), (0.0, 0.5), (0.5, 0.5)]
)
def test_dropout_is_one_mask_per_sequence(dropout, recurrent_dropout, unroll):
    """Training output must be the oracle's for SOME per-row dropout masks.

    The masks are random, so this searches all 0 / scale patterns of one
    row (2**features input masks times 2**units recurrent masks) for one
    that reproduces the row exactly. It fails if the layer draws a new mask
    per step or per gate, scales wrongly, or drops h outside h @ R.
    """
    rng = np.random.default_rng(12)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    layer = _dropout_layer(
        weights,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        unroll=unroll,
    )
    seq, h, c = helpers.to_numpy(
        helpers.call_layer(layer, x, initial_state=state, training=True)
    )
    in_masks = (
        _candidate_masks(helpers.FEATURES, dropout) if dropout else [None]
    )
    rec_masks = (
        _candidate_masks(helpers.UNITS, recurrent_dropout)
        if recurrent_dropout
        else [None]
    )
    for row in range(helpers.BATCH):
        row_state = [s[row : row + 1] for s in state]
        found = False
        for in_mask, rec_mask in itertools.product(in_masks, rec_masks):
            ref_seq, ref_h, ref_c = lstm_reference(
                x[row : row + 1],
                *weights,
                initial_state=row_state,
                return_sequences=True,
                return_state=True,
                input_dropout_mask=None if in_mask is None else in_mask[None],
                recurrent_dropout_mask=(
                    None if rec_mask is None else rec_mask[None]
                ),
            )
            if (
                np.allclose(seq[row], ref_seq[0], rtol=1e-5, atol=1e-5)
                and np.allclose(h[row], ref_h[0], rtol=1e-5, atol=1e-5)
                and np.allclose(c[row], ref_c[0], rtol=1e-5, atol=1e-5)
            ):
                found = True
                break
        assert found, f"row {row}: no single dropout mask explains it"


def test_recurrent_dropout_needs_a_recurrence():
    # One step from a zero state: h @ R is zero whatever the recurrent
    # mask, so recurrent dropout alone cannot change the output.
    rng = np.random.default_rng(13)
    x = helpers.random_inputs(rng, timesteps=1)
    weights = helpers.random_weights(rng)
    layer = _dropout_layer(weights, recurrent_dropout=0.5)
    actual = helpers.call_layer(layer, x, training=True)
    expected = lstm_reference(
        x, *weights, return_sequences=True, return_state=True
    )
    helpers.assert_close(actual, expected)
