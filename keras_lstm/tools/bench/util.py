"""What the benchmark (benchmark.py, steady.py), its workloads
(workloads.py and the modules it names), doctor and the scripts in
benchmarks/ share: shapes, timing, the device, the CPU's name and the
fresh-process runner.

Nothing here imports the rest of keras_lstm, so that every module of the
benchmark imports from here and not from each other.
"""

import functools
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

SHAPES = {  # batch, timesteps, features, units
    "small": (16, 20, 32, 64),
    "main": (64, 100, 128, 256),
    "large": (128, 100, 256, 512),
}
# Too slow for a CPU (minutes a row): timed only where Keras runs on a GPU.
GPU_SHAPES = {"xlarge": (256, 200, 512, 1024)}
ALL_SHAPES = {**SHAPES, **GPU_SHAPES}
MASKS = ("none", "right", "holes")


def masks(batch, timesteps, rng):
    """`{kind: mask}` for the mask kinds: none, right-padded (lengths from
    half the steps up, one row full) and random holes (first step kept)."""
    import numpy as np

    lengths = rng.integers(timesteps // 2, timesteps + 1, size=batch)
    lengths[0] = timesteps
    right = np.arange(timesteps)[None, :] < lengths[:, None]
    holes = rng.random((batch, timesteps)) > 0.3
    holes[:, 0] = True
    return {"none": None, "right": right, "holes": holes}


# Set to "0" (`bench --no-torch-nn`) to leave the torch.nn column out, e.g.
# where torch and another framework cannot share a GPU in one process.
TORCH_NN_ENV = "KERAS_LSTM_BENCH_TORCH_NN"


def torch_module():
    """torch, for the torch.nn column (optional: None without it, or where
    `TORCH_NN_ENV` is "0")."""
    if os.environ.get(TORCH_NN_ENV) == "0":
        return None
    if importlib.util.find_spec("torch") is None:
        return None
    return importlib.import_module("torch")


def torch_device() -> str:
    """Where torch.nn.LSTM runs: "cuda" wherever torch sees CUDA, whatever
    the Keras backend, so that it races Keras on the same chip."""
    torch = torch_module()
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def torch_device_name():
    """The name of `torch_device()` ("CPU" for the CPU); None without
    torch."""
    if torch_module() is None:
        return None
    if torch_device() == "cuda":
        return torch_module().cuda.get_device_name(0)
    return "CPU"


@functools.cache
def device(backend):
    """`(name, on_gpu)` of the device Keras computes on in this process:
    the GPU's name (e.g. "NVIDIA H200"), or "CPU"."""
    if backend == "torch":
        import keras

        # Keras' own choice (KERAS_TORCH_DEVICE, else CUDA when available).
        place = keras.ops.convert_to_tensor(0.0).device
        if place.type == "cuda":
            torch = importlib.import_module("torch")
            return torch.cuda.get_device_name(place), True
    elif backend == "jax":
        import jax

        if jax.default_backend() == "gpu":
            return jax.devices()[0].device_kind, True
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", "GPU"), True
    return "CPU", False


def sync():
    """Waits for torch's queued CUDA work, so that a timing covers it.

    Keras' `predict_on_batch` and `train_on_batch` return NumPy (already
    synchronous) and the JAX and TensorFlow layer-level runners wait for
    their own results; torch returns before CUDA has run. A no-op where
    torch never touched CUDA (every CPU run).
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_alternating(runners, repeats):
    """Median ms of each runner; runners alternate within every repeat.

    Two untimed warm-up calls of each first (compile, allocate); every
    timed call ends with `sync()`.
    """
    import numpy as np

    for run in runners.values():
        run()
        run()
    sync()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def cpu() -> str:
    """The CPU's model and vector extensions: ratios differ between them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    names = {
        "avx2": "AVX2",
        "avx512f": "AVX-512",
        "avx512_bf16": "AVX512-BF16",
        "amx_tile": "AMX",
        "asimd": "NEON",
    }
    found = [label for flag, label in names.items() if flag in flags]
    return f"{model} ({', '.join(found) or 'no AVX2'}), {os.cpu_count()} cores"


def worker_env(backend):
    """The environment of a fresh process on `backend`."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    # JAX and TensorFlow otherwise reserve most of a GPU's memory at start:
    # torch.nn.LSTM shares the GPU in the same process, and the memory rows
    # need what is in use, not what is reserved.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def run_json(command, backend, quiet=False):
    """Runs `command` (an argv) in a fresh process on `backend`.

    Args:
        command: the argv, e.g. `[sys.executable, "-c", code, arg]`.
        backend: the Keras backend of the process.
        quiet: keep its stderr (shown only if it fails); else it passes
            through, as progress.

    Returns:
        Its last line of stdout, parsed as JSON.

    Raises:
        RuntimeError: it failed; the message ends with its stderr, where
            kept.
    """
    stderr = subprocess.PIPE if quiet else None
    out = subprocess.run(
        command,
        env=worker_env(backend),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        tail = (out.stderr or "")[-4000:]
        raise RuntimeError(
            f"the {backend} process exited with {out.returncode}\n{tail}"
        )
    return json.loads(lines[-1])
