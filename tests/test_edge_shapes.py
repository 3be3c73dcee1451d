"""Edge shapes: zero timesteps, an empty batch, one step, one unit.

Zero timesteps mean what a row whose steps are all masked means: the last
output is zeros, the states are the initial states, and the sequence of
outputs has no step. Every kernel and the keras.ops path agree.
"""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference

B, F, U = helpers.BATCH, helpers.FEATURES, helpers.UNITS
PATHS = pytest.mark.parametrize("use_cudnn", ["auto", False])


def _layer(use_cudnn, units=U, **kwargs):
    weights = helpers.random_weights(np.random.default_rng(0), units=units)
    return helpers.built_layer(
        keras_lstm.LSTM, weights, units=units, use_cudnn=use_cudnn, **kwargs
    )


@PATHS
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_zero_timesteps_give_initial_states(
    use_cudnn, with_state, go_backwards, masked
):
    rng = np.random.default_rng(1)
    x = np.zeros((B, 0, F), "float32")
    state = helpers.random_state(rng) if with_state else None
    mask = np.zeros((B, 0), bool) if masked else None
    expected_state = state or [np.zeros((B, U))] * 2
    for return_sequences in (False, True):
        layer = _layer(
            use_cudnn,
            return_sequences=return_sequences,
            return_state=True,
            go_backwards=go_backwards,
        )
        output, h, c = helpers.call_layer(
            layer, x, initial_state=state, mask=mask
        )
        want = np.zeros((B, 0, U)) if return_sequences else np.zeros((B, U))
        helpers.assert_close([output, h, c], [want, *expected_state])


@PATHS
def test_zero_timesteps_equal_a_fully_masked_row(use_cudnn):
    rng = np.random.default_rng(2)
    state = helpers.random_state(rng)
    layer = _layer(use_cudnn, return_state=True)
    empty = helpers.call_layer(
        layer, np.zeros((B, 0, F), "float32"), initial_state=state
    )
    masked = helpers.call_layer(
        layer,
        helpers.random_inputs(rng),
        initial_state=state,
        mask=np.zeros((B, helpers.TIMESTEPS), bool),
    )
    helpers.assert_close(empty, helpers.to_numpy(masked))


@PATHS
def test_zero_timesteps_time_major_and_stateful(use_cudnn):
    layer = _layer(use_cudnn, return_sequences=True, time_major=True)
    out = helpers.call_layer(layer, np.zeros((0, B, F), "float32"))
    assert tuple(out.shape) == (0, B, U)
    stateful = _layer(use_cudnn, stateful=True)
    rng = np.random.default_rng(3)
    helpers.call_layer(stateful, helpers.random_inputs(rng))
    kept = helpers.to_numpy([v.value for v in stateful.states])
    out = helpers.call_layer(stateful, np.zeros((B, 0, F), "float32"))
    helpers.assert_close(out, np.zeros((B, U)))
    helpers.assert_close([v.value for v in stateful.states], kept)


def test_zero_timesteps_in_bidirectional_and_a_train_step():
    bidi = keras_lstm.Bidirectional(
        keras_lstm.LSTM(U, return_sequences=True), merge_mode="concat"
    )
    out = bidi(keras.ops.zeros((B, 0, F)))
    assert tuple(out.shape) == (B, 0, 2 * U)
    model = keras.Sequential(
        [keras.Input((None, F)), keras_lstm.LSTM(U), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(np.zeros((B, 0, F)), np.ones((B, 1)))
    assert np.isfinite(loss)
    plan = keras_lstm.explain(bidi, keras.ops.zeros((B, 0, F)))
    assert "the sequence has no steps" in plan.reasons


@PATHS
def test_an_empty_batch(use_cudnn):
    layer = _layer(use_cudnn, return_sequences=True, return_state=True)
    outputs = helpers.call_layer(layer, np.zeros((0, 5, F), "float32"))
    assert [tuple(o.shape) for o in outputs] == [(0, 5, U), (0, U), (0, U)]


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_an_empty_batch_calls_no_kernel(monkeypatch, masked):
    # cuDNN takes no empty batch (JAX's failed on a GPU): the layer answers
    # it without a kernel, as it does zero timesteps.
    from tests.test_fused_parity import spy_on_kernel

    if keras_lstm.backend.kernels is None:
        pytest.skip("no fused kernel on this backend")
    calls = spy_on_kernel(monkeypatch)
    mask = np.zeros((0, 5), bool) if masked else None
    x = np.zeros((0, 5, F), "float32")
    layer = _layer("auto", return_sequences=True, return_state=True)
    outputs = helpers.call_layer(layer, x, mask=mask)
    assert [tuple(o.shape) for o in outputs] == [(0, 5, U), (0, U), (0, U)]
    both = keras_lstm.Bidirectional(keras_lstm.LSTM(U, return_sequences=True))
    assert tuple(both(x, mask=mask).shape) == (0, 5, 2 * U)
    assert calls == []


@PATHS
@pytest.mark.parametrize("units", [1, U])
@pytest.mark.parametrize("timesteps", [1, 2])
def test_one_step_and_one_unit_match_the_oracle(use_cudnn, units, timesteps):
    rng = np.random.default_rng(4)
    x = helpers.random_inputs(rng, timesteps=timesteps)
    weights = helpers.random_weights(rng, units=units)
    state = helpers.random_state(rng, units=units)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        units=units,
        use_cudnn=use_cudnn,
        return_sequences=True,
        return_state=True,
    )
    got = helpers.call_layer(layer, x, initial_state=state)
    want = lstm_reference(
        x,
        *weights,
        initial_state=state,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(got, want)


@PATHS
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="only TensorFlow traces one graph for every length",
)
def test_zero_timesteps_at_run_time_in_a_graph_for_any_length(
    use_cudnn, masked
):
    # A graph traced with unknown timesteps (Keras' reduced retracing, a
    # serving signature) may run with none: the layer cannot see that when
    # it traces. Before the fix the loop kernel failed there ("Tried to
    # stack elements of an empty list with non-fully-defined element_shape").
    import tensorflow as tf

    rng = np.random.default_rng(3)
    state = helpers.random_state(rng)
    layer = _layer(use_cudnn, return_sequences=True, return_state=True)
    variables = layer.trainable_variables

    @tf.function(
        input_signature=[
            tf.TensorSpec([B, None, F]),
            tf.TensorSpec([B, None], tf.bool),
        ]
    )
    def run(x, mask):
        with tf.GradientTape() as tape:
            results = layer(
                x,
                initial_state=[tf.constant(s) for s in state],
                mask=mask if masked else None,
                training=True,
            )
            loss = sum(tf.reduce_sum(r) for r in results)
        return results, tape.gradient(loss, variables)

    (output, h, c), grads = run(tf.zeros([B, 0, F]), tf.zeros([B, 0], tf.bool))
    assert tuple(output.shape) == (B, 0, U)
    helpers.assert_close([h, c], state)
    for grad, variable in zip(grads, variables, strict=True):
        helpers.assert_close(grad, np.zeros(variable.shape))
    # The same graph at a length of 5 equals the oracle.
    x = helpers.random_inputs(rng, timesteps=5)
    (output, h, c), _ = run(tf.constant(x), tf.ones([B, 5], tf.bool))
    weights = [helpers.to_numpy(w) for w in layer.cell.weights]
    want = lstm_reference(
        x,
        *weights,
        initial_state=state,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close([output, h, c], list(want))
