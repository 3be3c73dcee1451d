"""Soak: many calls mixing shapes, masks, predict and train steps.

After a warm-up that has seen every shape, resident memory grows by less
than 50 MB and the kernels trace or compile nothing new. The default run is
short; KERAS_LSTM_SOAK_CALLS=1000 runs the full soak.
"""

import itertools
import os

import keras
import numpy as np
import pytest

import keras_lstm

BACKEND = keras.backend.backend()
CALLS = int(os.environ.get("KERAS_LSTM_SOAK_CALLS", "60"))


def _resident_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _compilations():
    """How many traces/compilations the fused kernels hold now."""
    from keras_lstm.backend import kernels

    if BACKEND == "tensorflow":
        return sum(
            f.experimental_get_tracing_count() for f in kernels._FORMS.values()
        )
    if BACKEND == "jax":
        return kernels._scan._cache_size()
    return 0  # torch compiles nothing


@pytest.mark.soak
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux")
def test_memory_and_compilations_stop_growing():
    rng = np.random.default_rng(0)
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            keras.layers.Masking(),
            keras_lstm.LSTM(8, return_sequences=True),
            keras_lstm.LSTM(8),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    shapes = [(4, 5), (4, 9), (3, 7)]
    steps = list(itertools.product(shapes, (False, True), ("predict", "train")))

    def call(step):
        (batch, timesteps), masked, mode = step
        x = rng.normal(size=(batch, timesteps, 4)).astype("float32")
        if masked:
            x[0, timesteps // 2 :] = 0.0
        if mode == "predict":
            model.predict_on_batch(x)
        else:
            model.train_on_batch(x, np.zeros((batch, 1), "float32"))

    for step in steps * 2:  # warm-up: every shape, twice
        call(step)
    memory, compiled = _resident_mb(), _compilations()
    for i in range(CALLS):
        call(steps[i % len(steps)])
    assert _compilations() == compiled
    assert _resident_mb() - memory < 50
