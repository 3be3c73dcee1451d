"""The benchmark's workloads whose subject is a fresh process:
`first_call` (build, first predict and train steps) and `long` (one
4,000-step train step: seconds and peak memory). Each contender runs in a
new interpreter (`_in_subprocess`). See workloads.py for the list.
"""

import json
import os
import sys
import time

import numpy as np

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.contenders import (
    median_rows,
    tensors,
    to_device,
)
from keras_lstm.tools.bench.util import torch_module

# -- first call, in a fresh process -------------------------------------------


def _first_call_worker(contender):
    """In a fresh process: build, first predict, first train step and one
    at a new length; prints the seconds."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 50, 16)).astype("float32")
    x2 = rng.normal(size=(32, 60, 16)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    cls = keras.layers.LSTM
    if contender != "keras":
        import keras_lstm

        cls = keras_lstm.LSTM
    start = time.perf_counter()
    model = keras.Sequential(
        [keras.Input((None, 16)), cls(32), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    model.predict_on_batch(x)
    model.train_on_batch(x, y)
    model.train_on_batch(x2, y)
    print(json.dumps(time.perf_counter() - start))


# A fresh interpreter runs one worker: torch first (before TensorFlow: the
# other order can crash), then this module.
_WORKER = """
import importlib, importlib.util, sys
if importlib.util.find_spec("torch"):
    importlib.import_module("torch")
from keras_lstm.tools.bench import processes
getattr(processes, sys.argv[1])(sys.argv[2])
"""


def _in_subprocess(backend, worker, contender):
    """Runs `worker(contender)` in a fresh process on `backend`; its last
    printed line, as JSON."""
    return util.run_json(
        [sys.executable, "-c", _WORKER, worker.__name__, contender],
        backend,
        quiet=True,
    )


def first_call(backend, repeats):
    samples = {"keras": [], "keras_lstm": []}
    for _ in range(repeats):
        for contender in samples:
            samples[contender].append(
                _in_subprocess(backend, _first_call_worker, contender)
            )
    note = "build + predict + train step + train step at a new length"
    return [
        median_rows(backend, "first call (fresh process)", samples, "s", note)
    ]


# -- long sequences, in a fresh process ---------------------------------------


def _proc_status_mb(key):
    """A /proc/self/status entry in MB (Linux); None elsewhere."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def _gpu_memory_mb(backend):
    """`(in use, peak)` memory of this process's GPU in MB, or None where
    the backend does not say (a missing key, an older API)."""
    mb = 2**20
    try:
        if backend == "torch":  # also torch.nn.LSTM's, on the same GPU
            torch = sys.modules["torch"]
            in_use = torch.cuda.memory_allocated()
            return in_use / mb, torch.cuda.max_memory_allocated() / mb
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats["bytes_in_use"] / mb, stats["peak_bytes_in_use"] / mb
        if backend == "tensorflow":
            import tensorflow as tf

            info = tf.config.experimental.get_memory_info("GPU:0")
            return info["current"] / mb, info["peak"] / mb
    except (AttributeError, KeyError, RuntimeError):
        # An older API, a missing key, an allocator that keeps no stats.
        pass
    return None


def _long_worker(contender):
    """In a fresh process: one 4,000-step train step after a first one;
    prints [seconds, growth of the peak memory in MB or None, what was
    measured: "RSS" (the CPU's resident set) or "GPU"]."""
    import keras

    import keras_lstm
    from keras_lstm import convert

    batch, timesteps, features, units = 16, 4000, 64, 256
    rng = np.random.default_rng(4)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    if contender == "torch.nn":
        torch = torch_module()
        layer = keras_lstm.LSTM(units)  # Keras initializers, as the others
        layer.build((None, None, features))
        lstm = to_device(convert.to_torch(layer))
        head = to_device(torch.nn.Linear(units, 1))
        params = list(lstm.parameters()) + list(head.parameters())
        optimizer = torch.optim.SGD(params, 1e-3)
        tx, ty = tensors(x, y)

        def step():
            optimizer.zero_grad()
            _, (h, _) = lstm(tx)
            loss = torch.nn.functional.mse_loss(head(h[0]), ty)
            loss.backward()
            optimizer.step()

    else:
        if contender == "keras":
            layer = keras.layers.LSTM(units)
        else:  # "keras_lstm generic" is the keras.ops path
            if contender == "keras_lstm no flush":
                # torch's CPU kernel with denormals left as they come
                # (it flushes them from FLUSH_FROM_STEPS steps on).
                keras_lstm.backend.kernels.FLUSH_FROM_STEPS = sys.maxsize
            layer = keras_lstm.LSTM(
                units, use_cudnn=contender != "keras_lstm generic"
            )
        model = keras.Sequential(
            [keras.Input((timesteps, features)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")

        def step():
            model.train_on_batch(x, y)

    backend = keras.backend.backend()
    if util.device(backend)[1]:
        # On a GPU the memory that counts is the device's: in use before
        # the steps, and the allocator's peak after them (torch's is reset
        # here; JAX's and TensorFlow's count from this fresh process's
        # start, before any step).
        kind = "GPU"
        if backend == "torch":
            sys.modules["torch"].cuda.reset_peak_memory_stats()
        before = _gpu_memory_mb(backend)
    else:
        # The peak resident set of this process alone: ru_maxrss would
        # start from the parent's (it survives fork and exec), so the
        # high-water mark is reset here and read after the steps.
        kind = "RSS"
        if os.path.exists("/proc/self/clear_refs"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        before = _proc_status_mb("VmRSS")
    step()  # traces, compiles
    start = time.perf_counter()
    step()
    util.sync()
    seconds = time.perf_counter() - start
    if kind == "GPU":
        after = _gpu_memory_mb(backend)
        growth = None if None in (before, after) else after[1] - before[0]
    else:
        peak = _proc_status_mb("VmHWM")
        growth = None if peak is None else peak - before
    print(json.dumps([seconds, growth, kind]))


def long(backend, repeats):
    contenders = ["keras", "keras_lstm"]
    if backend == "torch":
        # The keras.ops path on torch is a Python loop of 4,000 steps under
        # autograd, as keras.layers.LSTM's: minutes a step on a CPU
        # (benchmarks/long_step_memory.py runs it once).
        if torch_module() is not None:
            contenders.append("torch.nn")
        if not util.device(backend)[1]:
            contenders.remove("keras")
            # What flushing denormals is worth on this CPU (issue 19).
            contenders.append("keras_lstm no flush")
    else:
        contenders.append("keras_lstm generic")
    seconds = {c: [] for c in contenders}
    memory = {c: [] for c in contenders}
    kind = "RSS"
    for _ in range(repeats):
        for contender in contenders:
            s, mb, kind = _in_subprocess(backend, _long_worker, contender)
            seconds[contender].append(s)
            memory[contender].append(mb)
    name = "long sequence train step (4,000 steps)"
    rows = [median_rows(backend, name, seconds, "s")]
    # Measured where /proc is (Linux) on a CPU; on a GPU where the
    # backend's allocator reports it; else "n/a".
    measured = {c: v for c, v in memory.items() if None not in v}
    note = {
        "RSS": "growth of the peak resident set over the step",
        "GPU": "peak GPU memory in use over the steps, less that before",
    }[kind]
    if not measured:
        note = f"n/a: {kind} peak not reported here"
    if measured or kind == "GPU":
        rows.append(
            median_rows(backend, name + ", peak memory", measured, "MB", note)
        )
    return rows
