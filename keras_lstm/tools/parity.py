"""`python -m keras_lstm parity MODEL.keras`: a saved model run on several
backends, each in a subprocess (`python -m keras_lstm _parity_worker`,
which runs `worker`), and the largest difference of every pair.
"""

import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np


def _random_inputs(model, batch: int, timesteps: int, seed: int):
    """Inputs of the model's shapes: unknown batch / time axes get `batch`
    and `timesteps`; integer inputs get 1s and 0s (valid ids for any
    Embedding); boolean ones are all True."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, spec in enumerate(model.inputs):
        shape = [
            batch if d is None and a == 0 else d
            for a, d in enumerate(spec.shape)
        ]
        shape = [timesteps if d is None else d for d in shape]
        dtype = str(spec.dtype)
        if "int" in dtype:
            value = rng.integers(0, 2, size=shape).astype(dtype)
        elif "bool" in dtype:
            value = np.ones(shape, bool)
        else:
            value = rng.normal(size=shape).astype(dtype)
        arrays[f"input_{i}"] = value
    return arrays


def worker(model_path, inputs_path, out_path, batch, timesteps):
    """Runs in a subprocess: loads the model on this backend, runs it."""
    import keras

    import keras_lstm  # noqa: F401  (registers keras_lstm>LSTM)

    model = keras.saving.load_model(model_path, compile=False)
    if not os.path.exists(inputs_path):
        np.savez(inputs_path, **_random_inputs(model, batch, timesteps, 0))
    with np.load(inputs_path) as data:
        inputs = [data[f"input_{i}"] for i in range(len(data.files))]
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    flat = keras.tree.flatten(outputs)
    np.savez(
        out_path,
        **{
            f"output_{i}": keras.ops.convert_to_numpy(o)
            for i, o in enumerate(flat)
        },
    )


def parity(model_path, backends, inputs_path, atol, batch, timesteps) -> int:
    """Runs a .keras model on each backend; prints the largest difference
    for every pair. Returns 1 when one is above `atol`."""
    with tempfile.TemporaryDirectory() as tmp:
        if inputs_path is None:
            inputs_path = os.path.join(tmp, "inputs.npz")
        results = {}
        for backend in backends:
            print(f"running {model_path} on {backend} ...", flush=True)
            out = os.path.join(tmp, f"{backend}.npz")
            env = dict(os.environ, KERAS_BACKEND=backend)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "keras_lstm",
                    "_parity_worker",
                    model_path,
                    inputs_path,
                    out,
                    str(batch),
                    str(timesteps),
                ],
                env=env,
                check=True,
            )
            with np.load(out) as data:
                results[backend] = [data[k] for k in sorted(data.files)]
    worst = 0.0
    print(f"\n| backends | largest difference (atol {atol:g}) |\n|---|---|")
    for a, b in itertools.combinations(backends, 2):
        diff = max(
            float(np.max(np.abs(x.astype("float64") - y.astype("float64"))))
            for x, y in zip(results[a], results[b], strict=True)
        )
        worst = max(worst, diff)
        print(f"| {a} vs {b} | {diff:.3g} |")
    if worst > atol:
        print(f"FAIL: {worst:.3g} > atol {atol:g}")
        return 1
    print("OK")
    return 0
