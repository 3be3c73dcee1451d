"""Side-by-side LSTM timings: keras.layers.LSTM, keras_lstm.LSTM, torch.nn.LSTM.

For each Keras backend, one subprocess times the three contenders in the same
process, with the same weights and inputs, in alternating runs (the machine
is shared and noisy: ratios within a process are what count).

The steady state ("steady"): modes predict (`predict_on_batch`;
torch.nn.LSTM under no_grad) and a train step (`train_on_batch` with SGD and
MSE; torch.nn.LSTM forward, backward and step), after a warm-up; masks none,
right-padded (torch.nn.LSTM packs the sequence) and random holes
(torch.nn.LSTM has no equivalent). The workloads (keras_lstm/workloads.py):
the train step with the loss on the last output only, dynamic padding,
first call, greedy decoding, fit with validation, mixed precision,
jit_compile and long sequences.

    python benchmarks/bench_lstm.py                      # everything
    python benchmarks/bench_lstm.py --backends torch --shapes main
    python benchmarks/bench_lstm.py --workloads dynamic first_call
    python -m keras_lstm bench --repeats 15             # the same
    python benchmarks/bench_lstm.py --bidirectional     # Bidirectional
    python benchmarks/bench_lstm.py --plot speedups.png # also a chart

With --bidirectional the contenders are keras.layers.Bidirectional around
keras.layers.LSTM ("keras") and around keras_lstm.LSTM ("per direction":
two fused calls), keras_lstm.Bidirectional ("keras_lstm": one bidirectional
kernel where the backend has one) and torch.nn.LSTM(bidirectional=True).

Needs keras, keras_lstm, each backend it runs, and torch for the torch.nn
column (without torch that column is left out).
"""

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

from keras_lstm import workloads as workloads_lib

SHAPES = {  # batch, timesteps, features, units
    "small": (16, 20, 32, 64),
    "main": (64, 100, 128, 256),
    "large": (128, 100, 256, 512),
}
MASKS = ("none", "right", "holes")
MODES = ("predict", "train")


def _masks(batch, timesteps, rng):
    import numpy as np

    lengths = rng.integers(timesteps // 2, timesteps + 1, size=batch)
    lengths[0] = timesteps
    right = np.arange(timesteps)[None, :] < lengths[:, None]
    holes = rng.random((batch, timesteps)) > 0.3
    holes[:, 0] = True
    return {"none": None, "right": right, "holes": holes}


def _layer(contender, units, bidirectional):
    import keras

    import keras_lstm

    if not bidirectional:
        cls = keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM
        return cls(units, return_sequences=True)
    inner = keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM
    wrapper = keras_lstm.Bidirectional
    if contender in ("keras", "per direction"):
        wrapper = keras.layers.Bidirectional
    return wrapper(inner(units, return_sequences=True))


def _keras_model(contender, batch, timesteps, features, units, masked, bidi):
    import keras

    x = keras.Input(batch_shape=(batch, timesteps, features))
    inputs = [x]
    kwargs = {}
    if masked:
        mask = keras.Input(batch_shape=(batch, timesteps), dtype="bool")
        inputs.append(mask)
        kwargs["mask"] = mask
    y = _layer(contender, units, bidi)(x, **kwargs)
    model = keras.Model(inputs, y)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return model


def _torch_runners(lstm, x, y, mask_kind, mask):
    torch = importlib.import_module("torch")  # optional: the torch.nn column

    x, y = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=1e-3)
    pack = torch.nn.utils.rnn.pack_padded_sequence
    unpack = torch.nn.utils.rnn.pad_packed_sequence
    lengths = None
    if mask_kind == "right":
        lengths = torch.from_numpy(mask.sum(1))

    def forward():
        if lengths is None:
            return lstm(x)[0]
        packed = pack(x, lengths, batch_first=True, enforce_sorted=False)
        out = lstm(packed)[0]
        return unpack(out, batch_first=True, total_length=x.shape[1])[0]

    def predict():
        with torch.no_grad():
            return forward()

    def train():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(forward(), y)
        loss.backward()
        optimizer.step()
        return loss

    return {"predict": predict, "train": train}


def time_alternating(runners, repeats):
    """Median ms of each runner; runners alternate within every repeat."""
    import numpy as np

    for run in runners.values():  # warm-up: compile, allocate
        run()
        run()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def run_backend(shapes, repeats, bidirectional=False):
    """Times every contender on the current backend; returns result rows."""
    has_torch = importlib.util.find_spec("torch") is not None
    if has_torch:
        # Before TensorFlow: the other order can crash.
        importlib.import_module("torch").manual_seed(0)
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm import convert

    contenders = ["keras", "keras_lstm"]
    if bidirectional:
        contenders.insert(1, "per direction")
    rows = []
    for shape_name in shapes:
        batch, timesteps, features, units = SHAPES[shape_name]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        outputs = units * (2 if bidirectional else 1)
        y = rng.normal(size=(batch, timesteps, outputs)).astype("float32")
        masks = _masks(batch, timesteps, rng)
        for mask_kind in MASKS:
            mask = masks[mask_kind]
            masked = mask is not None
            models = {
                c: _keras_model(
                    c, batch, timesteps, features, units, masked, bidirectional
                )
                for c in contenders
            }
            for model in models.values():
                model.set_weights(models["keras"].get_weights())
            inputs = [x, mask] if masked else [x]
            runners = {}
            for label, model in models.items():
                runners[label] = {
                    "predict": lambda m=model, i=inputs: m.predict_on_batch(i),
                    "train": lambda m=model, i=inputs, t=y: m.train_on_batch(
                        i, t
                    ),
                }
            ours = models["keras_lstm"].layers[-1]
            if has_torch and mask_kind != "holes":
                if bidirectional:
                    torch = importlib.import_module("torch")
                    lstm = torch.nn.LSTM(
                        features, units, batch_first=True, bidirectional=True
                    )
                else:
                    lstm = convert.to_torch(ours)
                runners["torch.nn"] = _torch_runners(
                    lstm, x, y, mask_kind, mask
                )
            kernel = keras_lstm.explain(ours, x, mask).kernel
            for mode in MODES:
                medians = time_alternating(
                    {k: r[mode] for k, r in runners.items()}, repeats
                )
                rows.append(
                    {
                        "backend": keras.backend.backend(),
                        "shape": shape_name,
                        "mask": mask_kind,
                        "mode": mode,
                        "kernel": kernel,
                        **medians,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


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


def _workload_table(rows):
    names = [
        "keras",
        "keras_lstm",
        "keras_lstm float32",
        "keras_lstm generic",
        "torch.nn",
    ]
    names = [n for n in names if any(n in r for r in rows)]
    header = "| backend | workload | " + " | ".join(names)
    header += " | keras / keras_lstm | note |"
    lines = [header, "|" + "---|" * (4 + len(names))]
    for r in rows:
        unit = r["unit"]
        cells = [r["backend"], r["workload"]]
        cells += [
            f"{r[n]:.{3 if unit == 's' else 1}f} {unit}" if n in r else "-"
            for n in names
        ]
        ratio = "-"
        if "keras" in r and "keras_lstm" in r:
            ratio = f"{r['keras'] / r['keras_lstm']:.2f}x"
        cells += [ratio, r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(steady_rows, workload_rows, path):
    """keras / keras_lstm for every row, as horizontal bars (needs
    matplotlib: pip install "keras_lstm[plot]")."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib: pip install 'keras_lstm[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ratios = [], []
    for r in steady_rows:
        labels.append(f"{r['backend']} {r['shape']} {r['mode']} {r['mask']}")
        ratios.append(r["keras"] / r["keras_lstm"])
    for r in workload_rows:
        if "keras" in r and "keras_lstm" in r:
            labels.append(f"{r['backend']} {r['workload']}")
            ratios.append(r["keras"] / r["keras_lstm"])
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(labels) + 1.5))
    colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
    ax.barh(range(len(labels)), ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("keras.layers.LSTM time / keras_lstm.LSTM time (>1: faster)")
    ax.set_title(f"keras_lstm speed-up, {cpu()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _table(rows):
    names = ["keras", "per direction", "keras_lstm", "torch.nn"]
    names = [n for n in names if any(n in r for r in rows)]
    header = "| backend | shape | mode | mask | kernel | "
    header += " | ".join(f"{n} ms" for n in names)
    header += " | keras / keras_lstm | keras_lstm / torch.nn |"
    lines = [header, "|" + "---|" * (7 + len(names))]
    for r in rows:
        cells = [r["backend"], r["shape"], r["mode"], r["mask"], r["kernel"]]
        cells += [f"{r[n]:.1f}" if n in r else "-" for n in names]
        cells.append(f"{r['keras'] / r['keras_lstm']:.2f}x")
        torch_ms = r.get("torch.nn")
        cells.append(f"{r['keras_lstm'] / torch_ms:.2f}" if torch_ms else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-lstm bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"]
    )
    parser.add_argument(
        "--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES)
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--bidirectional",
        action="store_true",
        help="time Bidirectional layers instead of single LSTMs",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["steady", *workloads_lib.WORKLOADS],
        choices=["steady", *workloads_lib.WORKLOADS],
        help="what to time (default: all); 'steady' is the shapes table",
    )
    parser.add_argument(
        "--plot", help="also draw keras / keras_lstm per row to this PNG"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bidirectional:
        args.workloads = ["steady"]

    if args.worker:
        import keras

        rows = []
        if "steady" in args.workloads:
            rows = run_backend(args.shapes, args.repeats, args.bidirectional)
        others = [w for w in args.workloads if w != "steady"]
        rows += workloads_lib.run(keras.backend.backend(), others, args.repeats)
        print(json.dumps(rows))
        return 0
    rows = []
    for backend in args.backends:
        print(f"timing {backend} ...", file=sys.stderr, flush=True)
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "keras_lstm.benchmark",
                "--worker",
                "--repeats",
                str(args.repeats),
                "--shapes",
                *args.shapes,
                "--workloads",
                *args.workloads,
            ]
            + (["--bidirectional"] if args.bidirectional else []),
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    steady = [r for r in rows if "workload" not in r]
    others = [r for r in rows if "workload" in r]
    print(f"CPU: {cpu()}\n")
    if steady:
        print(_table(steady) + "\n")
    if others:
        print(_workload_table(others))
    if args.plot:
        plot(steady, others, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
