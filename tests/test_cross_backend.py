"""Checkpoints and outputs across backends: save on one, load on the others.

Each backend runs in its own interpreter (Keras picks its backend once per
process), started with `python -m tests.test_cross_backend MODE ...`: the
worker code lives in this file, below the tests. One save run per backend
writes its models, weights and outputs; one load run per backend then loads
every backend's models. The tests compare the numbers those runs wrote, and
tie the saving runs to the NumPy oracle so that agreement between backends
cannot hide a bug they share.

Marked `cross`: needs tensorflow, jax and torch installed (the tox env
`cross`); skipped when any is missing.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.oracle import lstm_reference

BACKENDS = ("tensorflow", "jax", "torch")
ROOT = pathlib.Path(__file__).resolve().parents[1]
MISSING = [b for b in BACKENDS if importlib.util.find_spec(b) is None]

pytestmark = [
    pytest.mark.cross,
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs every backend; missing {MISSING}"
    ),
]

# Tiny shapes: the cost here is interpreter start-up, not the LSTMs.
BATCH, TIMESTEPS, FEATURES = 3, 5, 3
UNITS_BIDI, UNITS_LAST = 4, 5
STATEFUL_BATCH = 2
ATOL = 1e-5
# Tolerance against the float64 oracle: float32 rounding over two stacked
# layers of a few steps stays well below this.
ORACLE_ATOL = 2e-5


# ---------------------------------------------------------------------------
# Data shared by the workers and the tests (NumPy only, same on every
# backend).


def functional_inputs():
    """Inputs whose zero steps the Masking layer masks: a right-padded row,
    a row with holes (including a masked first step) and a full row."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (BATCH, TIMESTEPS, FEATURES)).astype("float32")
    x[0, 3:] = 0.0
    x[1, [0, 2]] = 0.0
    return x


def functional_mask():
    return np.any(functional_inputs() != 0.0, axis=-1)


def stateful_inputs():
    """Two consecutive batches for the stateful model."""
    rng = np.random.default_rng(1)
    shape = (STATEFUL_BATCH, TIMESTEPS - 1, FEATURES)
    return [rng.uniform(-1.0, 1.0, shape).astype("float32") for _ in "ab"]


def random_weights(shapes, seed):
    # Random weights rather than initializers: the initial values differ by
    # backend, and random ones make a swapped or transposed weight obvious.
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.5, s).astype("float32") for s in shapes]


def npz(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


# ---------------------------------------------------------------------------
# Worker side: runs in a fresh interpreter with KERAS_BACKEND set.


def _build_functional():
    import keras

    import keras_lstm

    x_in = keras.Input((None, FEATURES))
    y = keras.layers.Masking(0.0)(x_in)
    seq = keras.layers.Bidirectional(
        keras_lstm.LSTM(UNITS_BIDI, return_sequences=True), name="bidi"
    )(y)
    # Both directions in one kernel where the backend has one (torch).
    seq2 = keras_lstm.Bidirectional(
        keras_lstm.LSTM(UNITS_LAST, return_sequences=True),
        merge_mode="sum",
        name="bidi_fused",
    )(seq)
    out, h, c = keras_lstm.LSTM(
        UNITS_LAST, go_backwards=True, return_state=True, name="last"
    )(seq2)
    return keras.Model(x_in, [seq, seq2, out, h, c])


def _build_stateful():
    import keras

    import keras_lstm

    x_in = keras.Input(batch_shape=(STATEFUL_BATCH, None, FEATURES))
    y = keras_lstm.LSTM(
        UNITS_BIDI,
        stateful=True,
        return_sequences=True,
        return_state=True,
        name="stateful",
    )(x_in)
    return keras.Model(x_in, y)


def _run(model, x):
    import keras

    outputs = model(keras.ops.convert_to_tensor(x), training=False)
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def _run_stateful(model):
    """Two batches (the second starts from the first's final states), then
    the first again after reset_states()."""
    first, second = stateful_inputs()
    outputs = _run(model, first) + _run(model, second)
    model.get_layer("stateful").reset_states()
    return outputs + _run(model, first)


def _save(out_dir, backend):
    import keras

    out = pathlib.Path(out_dir)
    model = _build_functional()
    weights = random_weights([w.shape for w in model.get_weights()], 2)
    model.set_weights(weights)
    np.savez(out / f"{backend}_functional_weights.npz", *weights)
    np.savez(
        out / f"{backend}_functional.npz", *_run(model, functional_inputs())
    )
    model.save(out / f"{backend}_functional.keras")

    model = _build_stateful()
    weights = random_weights([w.shape for w in model.get_weights()], 3)
    model.set_weights(weights)
    np.savez(out / f"{backend}_stateful_weights.npz", *weights)
    np.savez(out / f"{backend}_stateful.npz", *_run_stateful(model))
    # Saved after two calls: the kept states must not travel in the file.
    model.save(out / f"{backend}_stateful.keras")
    assert keras.backend.backend() == backend


def _load(out_dir, backend):
    import keras

    import keras_lstm

    out = pathlib.Path(out_dir)
    assert keras.backend.backend() == backend
    for saver in BACKENDS:
        model = keras.saving.load_model(
            out / f"{saver}_functional.keras", compile=False
        )
        bidi = model.get_layer("bidi")
        assert type(bidi.forward_layer) is keras_lstm.LSTM
        assert type(bidi.backward_layer) is keras_lstm.LSTM
        assert type(model.get_layer("last")) is keras_lstm.LSTM
        np.savez(
            out / f"{saver}_functional_on_{backend}.npz",
            *_run(model, functional_inputs()),
        )
        model = keras.saving.load_model(
            out / f"{saver}_stateful.keras", compile=False
        )
        assert model.get_layer("stateful").stateful
        np.savez(
            out / f"{saver}_stateful_on_{backend}.npz", *_run_stateful(model)
        )


# ---------------------------------------------------------------------------
# Test side.


def _env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def _subprocess(args, backend, check=True):
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=_env(backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{args} on {backend} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Runs the save run, then the load run, of every backend once.

    The last backend saves and loads in one interpreter (start-up is most
    of the cost here): it saves last, so every checkpoint exists by then.
    """
    out = tmp_path_factory.mktemp("cross")
    *first, last = BACKENDS
    runs = [("save", b) for b in first] + [("save,load", last)]
    runs += [("load", b) for b in first]
    for modes, backend in runs:
        _subprocess(
            ["-m", "tests.test_cross_backend", modes, str(out), backend],
            backend,
        )
    return out


def _functional_oracle(x, weights):
    """The functional model in float64, layer by layer."""
    mask = np.any(x != 0.0, axis=-1)
    valid = mask[..., None]

    def bidirectional(x, fw, bw):
        # Bidirectional sets zero_output_for_mask (return_sequences): masked
        # steps output zeros in both directions; the backward sequence
        # comes back in input order.
        forward = lstm_reference(x, *fw, mask=mask, return_sequences=True)
        backward = lstm_reference(
            x, *bw, mask=mask, return_sequences=True, go_backwards=True
        )[:, ::-1]
        return np.where(valid, forward, 0.0), np.where(valid, backward, 0.0)

    seq = np.concatenate(bidirectional(x, weights[:3], weights[3:6]), -1)
    seq2 = sum(bidirectional(seq, weights[6:9], weights[9:12]))
    # The Bidirectional outputs carry the mask on to the last LSTM.
    return [seq, seq2] + lstm_reference(
        seq2, *weights[12:], mask=mask, go_backwards=True, return_state=True
    )


def _stateful_oracle(weights):
    first, second = stateful_inputs()
    run1 = lstm_reference(
        first, *weights, return_sequences=True, return_state=True
    )
    run2 = lstm_reference(
        second,
        *weights,
        initial_state=run1[1:],
        return_sequences=True,
        return_state=True,
    )
    return run1 + run2 + run1


def _assert_all_close(actual, expected, atol):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, (i, a.shape, e.shape)
        np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"#{i}")


@pytest.mark.parametrize("saver", BACKENDS)
def test_saved_outputs_match_oracle(checkpoints, saver):
    weights = npz(checkpoints / f"{saver}_functional_weights.npz")
    outputs = npz(checkpoints / f"{saver}_functional.npz")
    expected = _functional_oracle(functional_inputs(), weights)
    _assert_all_close(outputs, expected, ORACLE_ATOL)
    # Masked steps of the Bidirectional outputs are exactly zero.
    assert np.all(outputs[0][~functional_mask()] == 0.0)
    assert np.all(outputs[1][~functional_mask()] == 0.0)

    weights = npz(checkpoints / f"{saver}_stateful_weights.npz")
    outputs = npz(checkpoints / f"{saver}_stateful.npz")
    _assert_all_close(outputs, _stateful_oracle(weights), ORACLE_ATOL)


@pytest.mark.parametrize("loader", BACKENDS)
@pytest.mark.parametrize("saver", BACKENDS)
def test_functional_checkpoint_loads_everywhere(checkpoints, saver, loader):
    saved = npz(checkpoints / f"{saver}_functional.npz")
    loaded = npz(checkpoints / f"{saver}_functional_on_{loader}.npz")
    _assert_all_close(loaded, saved, ATOL)


@pytest.mark.parametrize("loader", BACKENDS)
@pytest.mark.parametrize("saver", BACKENDS)
def test_stateful_checkpoint_loads_everywhere(checkpoints, saver, loader):
    # The loaded model starts from zero states although the saved one had
    # run two batches; then it carries states exactly as the saver did.
    saved = npz(checkpoints / f"{saver}_stateful.npz")
    loaded = npz(checkpoints / f"{saver}_stateful_on_{loader}.npz")
    _assert_all_close(loaded, saved, ATOL)


# The parity command ---------------------------------------------------------


def _parity(model_path, *args):
    return _subprocess(
        ["-m", "keras_lstm", "parity", str(model_path), *args],
        "jax",
        check=False,
    )


def _pairs(backends):
    return [
        f"| {a} vs {b} |"
        for i, a in enumerate(backends)
        for b in backends[i + 1 :]
    ]


def test_parity_command_passes_for_keras_lstm_model(checkpoints, tmp_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input_0=functional_inputs())
    result = _parity(
        checkpoints / "jax_functional.keras",
        "--backends",
        *BACKENDS,
        "--inputs",
        str(inputs),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for row in _pairs(BACKENDS):
        assert row in result.stdout
    assert "OK" in result.stdout


def test_parity_command_fails_above_atol(checkpoints):
    # Any difference, even 0 (one backend: no pair at all), is above a
    # negative atol: the failure path runs whatever the numbers are.
    result = _parity(
        checkpoints / "torch_functional.keras",
        "--backends",
        "jax",
        "--atol",
        "-1",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL: 0 > atol -1" in result.stdout


def test_parity_command_on_plain_keras_model(tmp_path):
    # Built in this process (any backend): a model without keras_lstm.
    import keras

    model = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(2, name="dense")]
    )
    path = tmp_path / "dense.keras"
    model.save(path)
    result = _parity(path, "--backends", *BACKENDS)
    assert result.returncode == 0, result.stdout + result.stderr
    for row in _pairs(BACKENDS):
        assert row in result.stdout


if __name__ == "__main__":
    # python -m tests.test_cross_backend save|load|save,load OUT_DIR BACKEND
    modes, out_dir, backend = sys.argv[1:4]
    for mode in modes.split(","):
        {"save": _save, "load": _load}[mode](out_dir, backend)
