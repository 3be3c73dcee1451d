"""What flushing denormal floats costs and gains on torch's CPU kernel.

keras_lstm's torch CPU kernel flushes denormals to zero around the fused
op for long sequences with enough work (`FLUSH_FROM_STEPS`,
`FLUSH_FROM_WORK` in keras_lstm/backend/torch.py). This script times, in
one process, alternating, the same model with flushing forced on (both
thresholds at their lowest) and off:

- the cost: predict and a train step at small shapes, where setting the
  flag (it wakes torch's threads) is a visible part of a call;
- the gain: a train step of a long sequence (the issue's model, 16 rows,
  64 features, 256 units), where an Intel CPU meets denormals in the
  backward pass and AMD Zen CPUs do not care.

    KERAS_BACKEND=torch python benchmarks/probe_denormals.py
    KERAS_BACKEND=torch python benchmarks/probe_denormals.py --steps 4000

Prints the CPU, then one line per shape and mode: median ms flushed, not
flushed, and their ratio.
"""

import argparse
import sys

import torch  # the backend; before anything that may import TensorFlow

# isort: split
import keras
import numpy as np

import keras_lstm
from keras_lstm.tools.bench.util import cpu, time_alternating


def _model(batch, steps, features, units):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((steps, features)),
            keras_lstm.LSTM(units),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    model.train_on_batch(x, y)
    model.predict_on_batch(x)
    return model, x, y


def _flushing(on):
    kernels = keras_lstm.backend.kernels
    kernels.FLUSH_FROM_STEPS = 1 if on else sys.maxsize
    kernels.FLUSH_FROM_WORK = 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=1000, help="the long sequence's length"
    )
    parser.add_argument(
        "--repeats", type=int, default=21, help="timed runs of each (short)"
    )
    args = parser.parse_args(argv)
    assert keras.backend.backend() == "torch", "run with KERAS_BACKEND=torch"
    print(f"CPU: {cpu()}; torch threads: {torch.get_num_threads()}")
    shapes = [
        ((16, 128, 16, 32), args.repeats),
        ((64, 128, 128, 256), args.repeats),
        ((16, args.steps, 64, 256), max(3, args.repeats // 4)),
    ]
    for shape, repeats in shapes:
        model, x, y = _model(*shape)
        for mode in ("predict", "train"):

            def run(on, model=model, x=x, y=y, mode=mode):
                _flushing(on)
                if mode == "predict":
                    model.predict_on_batch(x)
                else:
                    model.train_on_batch(x, y)

            times = time_alternating(
                {
                    "flushed": lambda run=run: run(True),
                    "not": lambda run=run: run(False),
                },
                repeats,
            )
            on, off = times["flushed"], times["not"]
            print(
                f"{shape} {mode}: flushed {on:.2f} ms, not flushed "
                f"{off:.2f} ms, flushed / not {on / off:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
