"""Dtype policies: mixed_float16, mixed_bfloat16 and float64.

Golden numbers come from the NumPy float64 oracle. Under a mixed policy the
layer computes in 16 bits, so the comparison is loose: it catches a wrong
gate, step or state, not rounding.
"""

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from keras_lstm.dispatch import GENERIC
from tests import helpers
from tests.oracle import lstm_reference
from tests.test_fused_parity import spy_on_kernel

B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS
BACKEND = keras.backend.backend()

# policy -> (compute dtype, tolerance against the float64 oracle). bfloat16
# keeps 8 bits of mantissa (relative error 4e-3 per rounding), float16 11.
MIXED = {
    "mixed_float16": ("float16", 5e-3),
    "mixed_bfloat16": ("bfloat16", 2e-2),
}


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


@pytest.fixture
def global_policy():
    """Sets the global dtype policy for one test, then restores it."""
    saved = keras.config.dtype_policy()

    def set_policy(name):
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy(saved)


def _data(seed):
    rng = np.random.default_rng(seed)
    return (
        helpers.random_inputs(rng),
        helpers.random_weights(rng),
        helpers.random_state(rng),
    )


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
@pytest.mark.parametrize("policy", sorted(MIXED))
def test_mixed_outputs_compute_dtype_weights_float32(policy, mask_kind):
    compute, tol = MIXED[policy]
    x, weights, state = _data(0)
    mask = helpers.make_mask(mask_kind)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        dtype=policy,
        return_sequences=True,
        return_state=True,
    )
    assert layer.compute_dtype == compute
    assert [_dtype(w) for w in layer.weights] == ["float32"] * 3
    outputs = helpers.call_layer(layer, x, initial_state=state, mask=mask)
    assert [_dtype(o) for o in outputs] == [compute] * 3
    expected = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(outputs, expected, rtol=tol, atol=tol)
    # The weights were read, not rounded in place.
    for got, want in zip(layer.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(
    tuple(int(p) for p in keras.__version__.split(".")[:2]) < (3, 15),
    reason="keras 3.10 does not pass the Masking layer's mask to a "
    "mixed-precision layer (keras.layers.LSTM neither); 3.15.1 does",
)
@pytest.mark.parametrize("policy", sorted(MIXED))
def test_mixed_matches_float32_layer(policy):
    # The same weights in a float32 layer: the mixed layer differs by
    # rounding only, also through a Masking model compiled by predict.
    _, tol = MIXED[policy]
    x, weights, _ = _data(1)
    x[0, 3:] = 0.0
    outputs = []
    for dtype in (policy, "float32"):
        model = keras.Sequential(
            [
                keras.Input((T, F)),
                keras.layers.Masking(0.0),
                keras_lstm.LSTM(U, return_sequences=True, dtype=dtype),
            ]
        )
        model.set_weights(weights)
        outputs.append(helpers.to_numpy(model.predict(x, verbose=0)))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=tol, atol=tol)
    # And the float32 layer itself is on the oracle.
    mask = np.any(x != 0.0, axis=-1)
    expected = lstm_reference(x, *weights, mask=mask, return_sequences=True)
    helpers.assert_close(outputs[1], expected)


@pytest.mark.parametrize("policy", sorted(MIXED))
def test_stateful_fit_keeps_float32_states(global_policy, policy):
    # A train step must carry the final states out of the (stateless, on
    # JAX) step into the state variables, and keep them float32 under a
    # 16-bit compute dtype.
    global_policy(policy)
    _, tol = MIXED[policy]
    x, weights, _ = _data(2)
    lstm = keras_lstm.LSTM(U, stateful=True)
    model = keras.Sequential(
        [keras.Input(batch_shape=(B, T, F)), lstm, keras.layers.Dense(1)]
    )
    assert lstm.compute_dtype == MIXED[policy][0]
    lstm.set_weights(weights)
    optimizer = keras.optimizers.SGD(0.1)
    if policy == "mixed_float16":
        # compile() would wrap it with a loss scale of 2**15, which can
        # overflow a float16 gradient here and skip this one step.
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=16.0
        )
    model.compile(optimizer=optimizer, loss="mse")
    y = np.ones((B, 1), "float32")
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    states = helpers.to_numpy(list(lstm.states))
    for variable, value in zip(lstm.states, states, strict=True):
        assert _dtype(variable) == "float32"
        assert np.all(np.isfinite(value))
        assert np.any(value != 0.0)
    # The states are those of the forward pass of the step, which ran with
    # the weights from before the update.
    _, h, c = lstm_reference(x, *weights, return_state=True)
    helpers.assert_close(states, [h, c], rtol=tol, atol=tol)
    # And the step did train.
    assert np.any(lstm.get_weights()[0] != weights[0])


@pytest.mark.parametrize("policy", sorted(MIXED))
def test_explain_reports_fused_kernel_or_reason(monkeypatch, policy):
    compute, _ = MIXED[policy]
    x, weights, _ = _data(3)
    layer = helpers.built_layer(keras_lstm.LSTM, weights, dtype=policy)
    plan = keras_lstm.explain(layer, x)
    if plan.kernel == GENERIC:
        # Every layer rule holds (tanh, sigmoid, no unroll, no recurrent
        # dropout): the dtype is the only reason there can be. torch's CPU
        # LSTM op has taken only float32 and float64.
        assert plan.reasons
        assert all(compute in reason for reason in plan.reasons)
    else:
        assert plan.reasons == ()
        assert plan.kernel == keras_lstm.backend.kernels.name(
            keras.ops.convert_to_tensor(x, dtype=compute)
        )
    # explain() says what the call then does.
    calls = spy_on_kernel(monkeypatch)
    helpers.call_layer(layer, x)
    assert len(calls) == (0 if plan.kernel == GENERIC else 1)


# float64 -------------------------------------------------------------------

# Both sides compute in float64: only accumulation order differs.
F64_TOL = 1e-10


def _skip_without_float64():
    if BACKEND == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("jax computes float64 only with jax_enable_x64")


@pytest.mark.parametrize(
    "use_cudnn",
    [
        "auto",
        pytest.param(
            False,
            # The keras.ops path is float64 only where Keras keeps it: on
            # torch, ops.matmul of 3-D float64 tensors returns float32; on
            # JAX (x64), keras.activations.tanh does.
            marks=pytest.mark.skipif(
                BACKEND in ("torch", "jax"),
                reason=f"keras.ops on {BACKEND} narrows float64 to float32",
            ),
        ),
    ],
    ids=["default", "generic"],
)
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_float64_end_to_end(mask_kind, use_cudnn):
    _skip_without_float64()
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.0, 1.0, (B, T, F))
    weights = [w.astype("float64") for w in helpers.random_weights(rng)]
    state = [s.astype("float64") for s in helpers.random_state(rng)]
    mask = helpers.make_mask(mask_kind)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        dtype="float64",
        return_sequences=True,
        return_state=True,
        use_cudnn=use_cudnn,
    )
    assert [_dtype(w) for w in layer.weights] == ["float64"] * 3
    outputs = helpers.call_layer(layer, x, initial_state=state, mask=mask)
    assert [_dtype(o) for o in outputs] == ["float64"] * 3
    expected = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    helpers.assert_close(outputs, expected, rtol=F64_TOL, atol=F64_TOL)


def test_float64_stateful_model_predict():
    # Through a compiled predict, and with states kept in float64.
    _skip_without_float64()
    rng = np.random.default_rng(5)
    # float32 values: predict() casts float64 NumPy inputs to floatx.
    chunks = [helpers.random_inputs(rng).astype("float64") for _ in range(2)]
    weights = [w.astype("float64") for w in helpers.random_weights(rng)]
    lstm = keras_lstm.LSTM(U, stateful=True, dtype="float64")
    model = keras.Sequential(
        [keras.Input(batch_shape=(B, T, F), dtype="float64"), lstm]
    )
    lstm.set_weights(weights)
    outputs = [model.predict(c, batch_size=B, verbose=0) for c in chunks]
    assert {_dtype(s) for s in lstm.states} == {"float64"}
    _, h, c = lstm_reference(chunks[0], *weights, return_state=True)
    expected = [
        lstm_reference(chunks[0], *weights),
        lstm_reference(chunks[1], *weights, initial_state=[h, c]),
    ]
    helpers.assert_close(outputs, expected, rtol=F64_TOL, atol=F64_TOL)


@pytest.mark.parametrize("policy", sorted(MIXED))
def test_16_bit_math_only_where_the_cpu_is_fast_at_it(policy):
    # float16 is slow on every CPU backend here, bfloat16 on XLA CPU and on
    # CPUs without bfloat16 units: the kernel computes in float32 there,
    # returns the compute dtype, and explain() says so.
    from keras_lstm.backend import cpu

    kernels = keras_lstm.backend.kernels
    compute, tol = MIXED[policy]
    x, weights, state = _data(4)
    layer = helpers.built_layer(
        keras_lstm.LSTM, weights, dtype=policy, return_state=True
    )
    plan = keras_lstm.explain(layer, x)
    if kernels is None or plan.kernel == GENERIC:
        pytest.skip("no fused kernel runs here")
    if "cudnn" in plan.kernel:
        # jax.experimental.rnn's cuDNN LSTM takes float32 only; torch's
        # cuDNN takes bfloat16 from cuDNN 9.13.
        upcast = BACKEND == "jax" or (
            compute == "bfloat16"
            and not kernels._cudnn_takes_bfloat16()  # torch
        )
    else:
        fast = compute == "bfloat16" and (
            BACKEND != "jax" and cpu.has_bfloat16_units()
        )
        upcast = not fast
    assert bool(plan.notes) == upcast, plan
    if upcast:
        assert plan.notes[0].startswith(
            f"computes in float32 and returns {compute}"
        )
    outputs = helpers.call_layer(layer, x, initial_state=state)
    assert [_dtype(o) for o in outputs] == [compute] * 3
    expected = lstm_reference(
        x, *weights, initial_state=state, return_state=True
    )
    helpers.assert_close(outputs, expected, rtol=tol, atol=tol)
