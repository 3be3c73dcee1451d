"""Property-based parity: generated shapes, masks and options.

For every case hypothesis generates (batch, timesteps, features, units down
to 1, any mask including all-False rows, go_backwards, return_sequences,
return_state, time_major, initial states, use_bias), the fused kernel, the
keras.ops path and the NumPy float64 oracle agree, and the fused path's
gradients with respect to the inputs, the initial states and every weight
equal the keras.ops path's. The same for keras_lstm.Bidirectional.

CI runs a fixed, derandomized profile (conftest.py); set
KERAS_LSTM_HYPOTHESIS=long for a longer random search. A failure hypothesis
finds is kept below as an explicit @example.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import keras_lstm
from tests import helpers
from tests.oracle import lstm_reference
from tests.test_fused_parity import (
    grad,
    layer_pair,
    reference_mode,
)

BACKEND = keras.backend.backend()


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 4))
    timesteps = draw(st.integers(1, 6))
    masked = draw(st.booleans())
    bits = draw(
        st.lists(
            st.booleans(),
            min_size=batch * timesteps,
            max_size=batch * timesteps,
        )
    )
    return dict(
        batch=batch,
        timesteps=timesteps,
        features=draw(st.integers(1, 3)),
        units=draw(st.integers(1, 4)),
        mask=np.array(bits).reshape(batch, timesteps) if masked else None,
        go_backwards=draw(st.booleans()),
        return_sequences=draw(st.booleans()),
        return_state=draw(st.booleans()),
        time_major=draw(st.booleans()),
        with_state=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def _data(case, dtype="float32"):
    rng = np.random.default_rng(case["seed"])
    b, t, f, u = (case[k] for k in ("batch", "timesteps", "features", "units"))
    x = helpers.random_inputs(rng, batch=b, timesteps=t, features=f)
    weights = helpers.random_weights(
        rng, features=f, units=u, use_bias=case["use_bias"]
    )
    state = helpers.random_state(rng, batch=b, units=u)
    state = state if case["with_state"] else None
    mask = case["mask"]
    if case["time_major"]:
        x = np.transpose(x, (1, 0, 2))
        mask = None if mask is None else mask.T
    cast = [x] + weights + (state or [])
    cast = [a.astype(dtype) for a in cast]
    x, weights = cast[0], cast[1 : 1 + len(weights)]
    state = cast[1 + len(weights) :] or None
    return x, weights, state, mask, rng


def _options(case):
    keys = (
        "go_backwards",
        "return_sequences",
        "return_state",
        "time_major",
        "use_bias",
    )
    return {k: case[k] for k in keys}


def _oracle(case, x, weights, state, mask):
    """The NumPy float64 oracle's outputs for `case`, always as a list."""
    want = lstm_reference(
        x,
        *weights[:2],
        weights[2] if case["use_bias"] else None,
        initial_state=state,
        mask=mask,
        return_sequences=case["return_sequences"],
        return_state=case["return_state"],
        go_backwards=case["go_backwards"],
        time_major=case["time_major"],
    )
    return want if case["return_state"] else [want]


def _flat(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _loss(layer, mask, cotangents, with_state):
    """`fn(x, [h0, c0,] *weights)`: the outputs dotted with cotangents."""
    mask = helpers.tensor(mask)
    cotangents = [keras.ops.convert_to_tensor(c) for c in cotangents]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fn(x, *rest):
        kwargs = {"mask": mask} if mask is not None else {}
        if with_state:
            kwargs["initial_state"] = list(rest[:2])
            rest = rest[2:]
        outputs, _ = layer.stateless_call(
            list(rest), non_trainable, x, **kwargs
        )
        terms = [
            keras.ops.sum(o * keras.ops.cast(c, o.dtype))
            for o, c in zip(_flat(outputs), cotangents, strict=True)
        ]
        return sum(terms[1:], terms[0])

    return fn


def _compare_gradients(fused, generic, arguments, mask, expected, rng, tol):
    cotangents = [
        rng.normal(size=np.shape(e)).astype("float32") for e in expected
    ]
    with_state = len(arguments) > 1 + len(fused.trainable_weights)
    with reference_mode():
        want = grad(_loss(generic, mask, cotangents, with_state), arguments)
    got = grad(_loss(fused, mask, cotangents, with_state), arguments)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


@given(cases())
# Kept: a row with every step masked next to one with none, one unit.
@example(
    dict(
        batch=2,
        timesteps=3,
        features=1,
        units=1,
        mask=np.array([[False] * 3, [True] * 3]),
        go_backwards=True,
        return_sequences=True,
        return_state=True,
        time_major=False,
        with_state=True,
        use_bias=False,
        seed=0,
    )
)
def test_lstm_fused_generic_and_oracle_agree(case):
    x, weights, state, mask, rng = _data(case)
    options = _options(case)
    fused, generic = layer_pair(
        weights, features=case["features"], units=case["units"], **options
    )
    got = helpers.call_layer(fused, x, initial_state=state, mask=mask)
    with reference_mode():
        generic_out = helpers.call_layer(
            generic, x, initial_state=state, mask=mask
        )
    want = _oracle(case, x, weights, state, mask)
    helpers.assert_close(_flat(got), want)
    helpers.assert_close(_flat(generic_out), want)
    arguments = [x] + (state or []) + weights
    _compare_gradients(fused, generic, arguments, mask, want, rng, helpers.ATOL)


@given(cases())
def test_bidirectional_fused_and_per_direction_generic_agree(case):
    if case["time_major"] or case["with_state"]:
        # Covered by test_bidirectional_fused.py; keep the search on the
        # mask and shape space here.
        case = dict(case, time_major=False, with_state=False)
    x, weights, _, mask, rng = _data(case)
    u = case["units"]
    kwargs = dict(
        return_sequences=case["return_sequences"],
        use_bias=case["use_bias"],
    )
    fused = keras_lstm.Bidirectional(keras_lstm.LSTM(u, **kwargs))
    generic = keras.layers.Bidirectional(
        keras_lstm.LSTM(u, use_cudnn=False, **kwargs)
    )
    shape = (None, None, case["features"])
    for layer in (fused, generic):
        layer.build(shape)
        layer.set_weights(weights + weights)
    got = helpers.call_layer(fused, x, mask=mask)
    with reference_mode():
        want = helpers.to_numpy(helpers.call_layer(generic, x, mask=mask))
    helpers.assert_close(got, want)
    arguments = [x] + weights + weights
    _compare_gradients(
        fused, generic, arguments, mask, [want], rng, helpers.ATOL
    )


def _float64_available():
    if BACKEND == "jax":
        import jax

        return bool(jax.config.jax_enable_x64)
    return True


@pytest.mark.skipif(
    not _float64_available(),
    reason="JAX computes float64 only with x64 (test_float64_on_jax)",
)
@given(cases())
def test_float64_fused_matches_the_oracle(case):
    x, weights, state, mask, _ = _data(case, dtype="float64")
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        features=case["features"],
        units=case["units"],
        dtype="float64",
        **_options(case),
    )
    got = helpers.call_layer(layer, x, initial_state=state, mask=mask)
    want = _oracle(case, x, weights, state, mask)
    helpers.assert_close(_flat(got), want, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's x64 mode")
def test_float64_on_jax():
    # x64 is process-wide in JAX: the float64 properties run in their own
    # interpreter with JAX_ENABLE_X64.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_ENABLE_X64="true", KERAS_BACKEND="jax")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{root}/tests/test_properties.py::"
            "test_float64_fused_matches_the_oracle",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
