"""Command line: `python -m keras_lstm demo|bench|parity|doctor` (also the
`keras-lstm` script). The parser lives in keras_lstm/cli.py, which answers
`--help` and `--version` without importing keras."""

import itertools
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_lstm import cli

BACKENDS = cli.BACKENDS


def _majority_task(samples: int, max_len: int, rng: np.random.Generator):
    """Variable-length bit sequences; label: more ones than zeros.

    Sequences are right-padded with -1 and masked by a Masking layer, so the
    demo exercises the mask path. The answer depends on every valid step.
    """
    lengths = rng.integers(5, max_len + 1, size=samples)
    lengths -= (lengths % 2) == 0  # odd lengths: no ties
    bits = rng.integers(0, 2, size=(samples, max_len)).astype("float32")
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    x = np.where(valid, bits, -1.0)[..., None].astype("float32")
    y = ((bits * valid).sum(1) * 2 > lengths).astype("float32")
    return x, y


def demo(epochs: int, samples: int, max_len: int, seed: int) -> float:
    """Trains a small masked LSTM classifier; returns the test accuracy."""
    import keras

    import keras_lstm

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = _majority_task(samples, max_len, rng)
    x_test, y_test = _majority_task(max(samples // 4, 64), max_len, rng)

    model = keras.Sequential(
        [
            keras.Input(shape=(None, 1)),
            keras.layers.Masking(mask_value=-1.0),
            keras_lstm.LSTM(32),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    print(
        f"backend {keras.backend.backend()}: majority of {samples} bit "
        f"sequences of length 5-{max_len} (right-padded, masked)"
    )
    plan = keras_lstm.explain(model.layers[1], x[:64], training=True)
    print(
        f"kernel: {plan.kernel}" + "".join(f"\n  - {r}" for r in plan.reasons)
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    per_epoch = (time.perf_counter() - start) / epochs
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.3f}, {per_epoch:.2f} s per epoch")
    return accuracy


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


def _parity_worker(model_path, inputs_path, out_path, batch, timesteps):
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


def main(argv=None) -> int:
    """Runs one command; returns its exit status."""
    parser = cli.build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from keras_lstm import benchmark

        return benchmark.main(argv[1:])
    if argv[:1] == ["_parity_worker"]:
        # Internal (run by `parity` in a subprocess), so not in --help.
        model, inputs, out, batch, timesteps = argv[1:]
        _parity_worker(model, inputs, out, int(batch), int(timesteps))
        return 0
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.epochs, args.samples, args.max_len, args.seed)
    elif args.command == "parity":
        return parity(
            args.model,
            args.backends,
            args.inputs,
            args.atol,
            args.batch,
            args.timesteps,
        )
    elif args.command == "doctor":
        from keras_lstm import doctor

        return doctor.run(
            atol=args.atol,
            run_check=not args.no_check,
            json_path=args.json,
            seed=args.seed,
            cases=[c for c in doctor.CASES if c.mask in args.masks],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
