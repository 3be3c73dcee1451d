"""Reliability: concurrent calls, and faults that must fail clearly.

Threads calling one layer get exactly the results of sequential calls.
A truncated or corrupted .keras file, a weights file of another size, a
config with an unknown argument and a .keras file loaded without importing
keras_lstm each raise an error that says what is wrong, and leave nothing
half-loaded; safe_mode loading works.
"""

import os
import pathlib
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _model(features=3, units=4):
    model = keras.Sequential(
        [
            keras.Input((None, features)),
            keras.layers.Masking(),
            keras_lstm.LSTM(units, return_sequences=True),
            keras_lstm.LSTM(units),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


# -- concurrency -------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_threads_get_the_results_of_sequential_calls(masked):
    rng = np.random.default_rng(0)
    layer = keras_lstm.LSTM(4, return_sequences=True, return_state=True)
    inputs = [
        helpers.random_inputs(rng, timesteps=t) for t in (3, 5, 7, 5, 3, 7)
    ]
    masks = [
        (rng.random(x.shape[:2]) > 0.3) if masked else None for x in inputs
    ]
    layer(helpers.tensor(inputs[0]))  # build
    sequential = [
        helpers.to_numpy(helpers.call_layer(layer, x, mask=m))
        for x, m in zip(inputs, masks, strict=True)
    ]
    results = {}
    errors = []

    def work(worker):
        try:
            for repeat in range(3):
                for i, (x, m) in enumerate(zip(inputs, masks, strict=True)):
                    out = helpers.call_layer(layer, x, mask=m)
                    results[(worker, repeat, i)] = helpers.to_numpy(out)
        except Exception as e:  # reported below, with the thread's error
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4 * 3 * len(inputs)
    for (_, _, i), got in results.items():
        for g, w in zip(got, sequential[i], strict=True):
            np.testing.assert_array_equal(g, w)


# -- faults ------------------------------------------------------------------


def _saved(tmp_path):
    model = _model()
    model.predict(np.zeros((2, 5, 3), "float32"), verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def test_truncated_or_corrupted_keras_files_fail_clearly(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted = tmp_path / "corrupted.keras"
    corrupted.write_bytes(data[:100] + bytes(200) + data[300:])
    for broken in (truncated, corrupted):
        with pytest.raises(Exception) as info:
            keras.saving.load_model(broken)
        # Not a bare crash deep in a backend: the file format is named.
        assert (
            "zip" in str(info.value).lower()
            or "file" in str(info.value).lower()
        ), info.value


@pytest.mark.parametrize("change", ["features", "units"])
def test_weights_of_another_size_name_both_shapes(tmp_path, change):
    model = _model()
    model.predict(np.zeros((2, 5, 3), "float32"), verbose=0)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    other = _model(**{change: 5})
    other.predict(np.zeros((2, 5, other.input_shape[-1]), "float32"), verbose=0)
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(ValueError) as info:
        other.load_weights(path)
    message = str(info.value)
    assert "shape" in message
    # The layer that failed kept its own weights: nothing half-loaded there.
    lstm = other.layers[1]
    index = [id(w) for w in other.weights].index(id(lstm.weights[0]))
    for i, w in enumerate(lstm.get_weights()):
        np.testing.assert_array_equal(w, before[index + i])


def test_a_config_with_an_unknown_argument_names_it():
    config = keras_lstm.LSTM(4).get_config()
    config["not_an_argument"] = 1
    with pytest.raises((TypeError, ValueError), match="not_an_argument"):
        keras_lstm.LSTM.from_config(config)


def test_safe_mode_loading_works(tmp_path):
    model, path = _saved(tmp_path)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


_LOAD_WITHOUT_IMPORT = """
import sys
import keras
try:
    keras.saving.load_model(sys.argv[1])
except Exception as e:
    print(type(e).__name__ + ": " + str(e))
"""


def test_loading_without_import_keras_lstm_says_what_to_do(tmp_path):
    # The README quotes this message and says: import keras_lstm first.
    _, path = _saved(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_IMPORT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "keras_lstm>LSTM" in out, out
    assert "register_keras_serializable" in out, out
