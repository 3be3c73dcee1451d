"""Side-by-side LSTM timings: keras.layers.LSTM, keras_lstm.LSTM, torch.nn.LSTM.

For each Keras backend, one subprocess times the three contenders in the same
process, with the same weights and inputs, in alternating runs (the machine
is shared and noisy: ratios within a process are what count).

The steady state ("steady", steady.py): modes predict (`predict_on_batch`;
torch.nn.LSTM under no_grad) and a train step (`train_on_batch` with SGD and
MSE; torch.nn.LSTM forward, backward and step), after a warm-up; masks none,
right-padded (torch.nn.LSTM packs the sequence) and random holes
(torch.nn.LSTM has no equivalent). The workloads (workloads.py):
the train step with the loss on the last output only, dynamic padding,
first call, greedy decoding, fit with validation, mixed precision,
jit_compile and long sequences; and the layer level ("layer": the layer
called on device tensors, forward and forward+backward).

Everything runs where each backend computes: on a GPU where Keras sees one
(the device is named in the output), with torch.nn.LSTM on CUDA wherever
torch sees it; torch's timings end with torch.cuda.synchronize. The shape
xlarge (256, 200, 512, 1024) runs on a GPU only.

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
import sys
import traceback

from keras_lstm.tools.bench import steady, util
from keras_lstm.tools.bench import workloads as workloads_lib
from keras_lstm.tools.bench.util import ALL_SHAPES, cpu

_EPILOG = """\
workloads:
  steady      model level: predict_on_batch / train_on_batch per shape and
              mask (none, right-padded, holes)
  layer       layer level: the layer called on device tensors, forward and
              forward+backward (JAX jitted, TensorFlow tf.function, torch
              eager), per shape and mask; default shapes main large xlarge
  last, dynamic, first_call, decode, fit, mixed, jit, configs, long: see
              keras_lstm/tools/bench/workloads.py

devices:
  Each backend's process runs Keras on that backend's default device: a GPU
  where it sees one (torch.cuda, jax.default_backend() == "gpu", TensorFlow
  GPUs), else the CPU; torch.nn.LSTM runs on CUDA wherever torch sees it
  (--no-torch-nn leaves it out). Timings wait for the device:
  torch.cuda.synchronize(), JAX's block_until_ready, NumPy results of
  predict_on_batch / train_on_batch. The header and every table name the
  device. Shapes in GPU_SHAPES
  (xlarge) are skipped on a CPU. Peak memory (long) is the resident set on
  a CPU and the allocator's peak on a GPU. Backends not installed are
  skipped; a workload that fails gives a "(failed)" row and the exit status
  1, and the others still run.
"""


def _device_cell(r):
    """Where the row ran: Keras' device, and torch.nn.LSTM's where it
    differs and the row has it."""
    cell = r.get("device", "-")
    torch_device = r.get("torch.nn device")
    if "torch.nn" in r and torch_device and torch_device != cell:
        cell += f" (torch.nn: {torch_device})"
    return cell


def _workload_table(rows):
    names = [
        "keras",
        "keras_lstm",
        "keras_lstm float32",
        "keras_lstm generic",
        "keras_lstm defaults",
        "keras_lstm no flush",
        "torch.nn",
    ]
    names = [n for n in names if any(n in r for r in rows)]
    header = "| backend | device | workload | " + " | ".join(names)
    header += " | keras / keras_lstm | note |"
    lines = [header, "|" + "---|" * (5 + len(names))]
    for r in rows:
        unit = r["unit"]
        cells = [r["backend"], _device_cell(r), r["workload"]]
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


def plot(steady_rows, workload_rows, path, title="keras_lstm speed-up"):
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
        level = "layer " if r.get("level") == "layer" else ""
        labels.append(
            f"{r['backend']} {level}{r['shape']} {r['mode']} {r['mask']}"
        )
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
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _table(rows):
    names = ["keras", "per direction", "keras_lstm", "torch.nn"]
    names = [n for n in names if any(n in r for r in rows)]
    header = "| backend | device | shape | mode | mask | kernel | "
    header += " | ".join(f"{n} ms" for n in names)
    header += " | keras / keras_lstm | keras_lstm / torch.nn |"
    lines = [header, "|" + "---|" * (8 + len(names))]
    for r in rows:
        cells = [r["backend"], _device_cell(r), r["shape"], r["mode"]]
        cells += [r["mask"], r["kernel"]]
        cells += [f"{r[n]:.1f}" if n in r else "-" for n in names]
        cells.append(f"{r['keras'] / r['keras_lstm']:.2f}x")
        torch_ms = r.get("torch.nn")
        cells.append(f"{r['keras_lstm'] / torch_ms:.2f}" if torch_ms else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _worker(args):
    """In a process on one backend: its rows, with where they ran."""
    import keras

    backend = keras.backend.backend()
    device, _ = util.device(backend)
    torch_device = util.torch_device_name()
    print(
        f"{backend}: Keras on {device}; "
        f"torch.nn.LSTM on {torch_device or '- (not timed)'}",
        file=sys.stderr,
        flush=True,
    )
    rows = []
    if "steady" in args.workloads:
        try:
            rows = steady.run_backend(
                args.shapes or list(ALL_SHAPES),
                args.repeats,
                args.bidirectional,
            )
        except Exception as error:  # one failure must not lose the rest
            traceback.print_exc()
            rows = [workloads_lib.error_row(backend, "steady", error)]
    others = [w for w in args.workloads if w != "steady"]
    rows += workloads_lib.run(backend, others, args.repeats, args.shapes)
    for row in rows:
        row["device"] = device
        if torch_device:
            row["torch.nn device"] = torch_device
    print(
        json.dumps(
            {"device": device, "torch.nn device": torch_device, "rows": rows}
        )
    )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-lstm bench",
        description=__doc__.split("\n")[0],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backends", nargs="+", default=["tensorflow", "jax", "torch"]
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=list(ALL_SHAPES),
        help="batch, timesteps, features, units: "
        + ", ".join(f"{k} {v}" for k, v in ALL_SHAPES.items())
        + " (GPU only). Default: all for steady (xlarge on a GPU only); "
        "main large xlarge for layer",
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
        help="what to time (default: all); 'steady' is the model-level "
        "shapes table, 'layer' the layer-level one (see below)",
    )
    parser.add_argument(
        "--plot", help="also draw keras / keras_lstm per row to this PNG"
    )
    parser.add_argument(
        "--no-torch-nn",
        action="store_true",
        help="leave the torch.nn.LSTM column out (e.g. where torch cannot "
        "share the GPU with JAX or TensorFlow in one process)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bidirectional:
        args.workloads = ["steady"]
    if args.no_torch_nn:  # read by every process from here on
        os.environ[util.TORCH_NN_ENV] = "0"

    if args.worker:
        return _worker(args)
    rows, devices, failed = [], {}, []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"skipping {backend}: not installed", file=sys.stderr)
            continue
        print(f"timing {backend} ...", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "keras_lstm.tools.bench.benchmark"]
        command.append("--worker")
        command += ["--repeats", str(args.repeats)]
        command += ["--workloads", *args.workloads]
        if args.shapes:
            command += ["--shapes", *args.shapes]
        if args.bidirectional:
            command.append("--bidirectional")
        try:
            out = util.run_json(command, backend)
        except RuntimeError as error:  # the others still run
            print(error, file=sys.stderr)
            failed.append(backend)
            continue
        rows += out["rows"]
        devices[backend] = (out["device"], out["torch.nn device"])
    failed += sorted({r["backend"] for r in rows if r.get("error")})
    layer = [r for r in rows if r.get("level") == "layer"]
    steady = [r for r in rows if "workload" not in r and r not in layer]
    others = [r for r in rows if "workload" in r]
    print(f"CPU: {cpu()}")
    for backend, (device, torch_device) in devices.items():
        line = f"device ({backend}): {device}"
        if torch_device:
            line += f"; torch.nn.LSTM: {torch_device}"
        print(line)
    print()
    if steady:
        print("Model level (predict_on_batch / train_on_batch):\n")
        print(_table(steady) + "\n")
    if layer:
        print(
            "Layer level (the layer on device tensors; JAX jitted, "
            "TensorFlow tf.function, torch eager):\n"
        )
        print(_table(layer) + "\n")
    if others:
        print(_workload_table(others))
    if failed:
        print(f"\nfailed: {', '.join(failed)} (see stderr)", file=sys.stderr)
    if args.plot:
        names = ", ".join(f"{b}: {d}" for b, (d, _) in devices.items())
        plot(
            [r for r in steady + layer if "keras" in r],
            others,
            args.plot,
            f"keras_lstm speed-up ({names or cpu()})",
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
