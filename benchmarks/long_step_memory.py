"""Peak memory of one 4,000-step train step, the first, in this process.

The `long` workload of `python -m keras_lstm bench` times a second step
after a first one; keras.layers.LSTM on torch (a Python loop of 4,000
steps under autograd) takes minutes a step, so this script runs one:

    KERAS_BACKEND=torch python benchmarks/long_step_memory.py keras
    KERAS_BACKEND=torch python benchmarks/long_step_memory.py keras_lstm
    KERAS_BACKEND=torch python benchmarks/long_step_memory.py no-flush

(`no-flush`: keras_lstm on torch with denormals not flushed to zero, which
its CPU kernel does from `FLUSH_FROM_STEPS` steps on.)

Prints the contender, the seconds of the step and the growth of the
process's peak resident set over it in MB (Linux: /proc/self).
"""

import importlib.util
import json
import sys
import time

if importlib.util.find_spec("torch"):
    import torch  # noqa: F401  (before TensorFlow: the other order can crash)

import keras
import numpy as np

import keras_lstm
from keras_lstm.tools.bench.processes import _proc_status_mb


def main(contender):
    batch, timesteps, features, units = 16, 4000, 64, 256
    rng = np.random.default_rng(4)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    cls = keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM
    if contender == "no-flush":
        keras_lstm.backend.kernels.FLUSH_FROM_STEPS = sys.maxsize
    model = keras.Sequential(
        [keras.Input((timesteps, features)), cls(units), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM)
    before = _proc_status_mb("VmRSS")
    start = time.perf_counter()
    model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    growth = _proc_status_mb("VmHWM") - before
    print(contender, json.dumps([seconds, growth]))


if __name__ == "__main__":
    main(sys.argv[1])
