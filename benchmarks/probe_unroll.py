"""unroll=True on JAX: the scan unrolled by a factor, against the plain scan
and keras.layers.LSTM(unroll=True).

Why `unroll=True` changes nothing in keras_lstm's JAX kernel
(`keras_lstm/backend/jax.py`, `UNROLL = 1`): prints the first train step
and predict of each factor (compilation), then the steady predict and
train step of an LSTM + Dense(1) model (Adam, MSE), medians of alternating
runs in one process, at the small and main benchmark shapes.

    KERAS_BACKEND=jax python benchmarks/probe_unroll.py
"""

import argparse
import time

import keras
import numpy as np

import keras_lstm
from keras_lstm.backend import kernels
from keras_lstm.tools.bench.util import SHAPES, time_alternating

FACTORS = (1, 2, 4, 8, True)


def _time_shape(shape_name, repeats):
    batch, steps, features, units = SHAPES[shape_name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")

    def model(cls):
        m = keras.Sequential(
            [
                keras.Input((steps, features)),
                cls(units, unroll=True),
                keras.layers.Dense(1),
            ]
        )
        m.compile(optimizer="adam", loss="mse")
        return m

    models = {"keras": (model(keras.layers.LSTM), None)}
    for factor in FACTORS:
        m = model(keras_lstm.LSTM)
        m.set_weights(models["keras"][0].get_weights())
        kernels.UNROLL = factor
        start = time.perf_counter()
        m.train_on_batch(x, y)
        m.predict_on_batch(x)
        first = time.perf_counter() - start
        print(f"{shape_name}: unroll {factor}: first calls {first:.2f} s")
        models[f"unroll {factor}"] = (m, factor)
    for mode in ("predict", "train"):

        def runner(m, factor, mode=mode):
            def run():
                if factor is not None:
                    kernels.UNROLL = factor
                if mode == "predict":
                    return m.predict_on_batch(x)
                return m.train_on_batch(x, y)

            return run

        medians = time_alternating(
            {name: runner(*v) for name, v in models.items()}, repeats
        )
        cells = ", ".join(f"{n} {ms:.2f} ms" for n, ms in medians.items())
        print(f"{shape_name} {mode}: {cells}")
    kernels.UNROLL = 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    for shape_name in ("small", "main"):
        _time_shape(shape_name, args.repeats)


if __name__ == "__main__":
    main()
