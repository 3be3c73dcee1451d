"""ONNX Runtime latency of a model exported with model.export(format="onnx")
on the current Keras backend: keras_lstm.LSTM against keras.layers.LSTM.

    KERAS_BACKEND=tensorflow python benchmarks/export_latency.py
    KERAS_BACKEND=torch python benchmarks/export_latency.py --runs 500

Every backend's files timed in one process (one call of each file in
turn, so that the machine's noise falls on all alike): export on each
backend into one folder, then compare (needs onnxruntime alone):

    for b in tensorflow jax torch; do
        KERAS_BACKEND=$b python benchmarks/export_latency.py --export-to DIR
    done
    python benchmarks/export_latency.py --compare DIR --runs 300

The model is issue 26's: a Sequential of LSTM(256) on inputs (1, 100, 64)
and Dense(3). For each layer it prints the ONNX op that runs the LSTM
(LSTM or Loop), the node count and the median of `--runs` ONNX Runtime
calls (after 20 warm-up calls), one thread pool as ONNX Runtime sets it.
Needs onnx, onnxruntime and the backend's exporter (tf2onnx, onnxscript,
jax2onnx).
"""

import argparse
import collections
import glob
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime

LAYERS = ("keras.layers.LSTM", "keras_lstm.LSTM")


def _export(name, x, directory):
    import keras

    import keras_lstm

    layer_class = keras.layers.LSTM if name == LAYERS[0] else keras_lstm.LSTM
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            layer_class(256),
            keras.layers.Dense(3),
        ]
    )
    expected = keras.ops.convert_to_numpy(model(x))
    stem = os.path.join(directory, f"{keras.backend.backend()}-{name}")
    model.export(stem + ".onnx", format="onnx", verbose=False)
    np.save(stem + ".npy", expected)
    return stem + ".onnx"


def _session(path, x):
    session = onnxruntime.InferenceSession(path)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(20):
        session.run(None, feed)
    return session, feed


def _describe(path, x, session, feed, times):
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    op = "LSTM" if "LSTM" in ops else "Loop" if "Loop" in ops else "-"
    out = session.run(None, feed)[0]
    error = float(np.abs(out - np.load(path[: -len(".onnx")] + ".npy")).max())
    name = os.path.basename(path)[: -len(".onnx")]
    return (
        f"{name}: op {op}, {sum(ops.values())} nodes, "
        f"{1e3 * float(np.median(times)):.3f} ms, max |error| {error:.1e}"
    )


def _compare(paths, x, runs):
    """Times every file, one call of each in turn."""
    sessions = [_session(path, x) for path in paths]
    times = [[] for _ in paths]
    for _ in range(runs):
        for (session, feed), spent in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(None, feed)
            spent.append(time.perf_counter() - start)
    for path, session, spent in zip(paths, sessions, times, strict=True):
        print(_describe(path, x, *session, spent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--export-to", metavar="DIR", help="export the active backend's files"
    )
    parser.add_argument(
        "--compare", metavar="DIR", help="time every file exported to DIR"
    )
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(1, 100, 64)).astype("float32")
    if args.compare:
        paths = sorted(glob.glob(os.path.join(args.compare, "*.onnx")))
        print(
            f"onnxruntime {onnxruntime.__version__}, median of {args.runs} "
            f"runs, the files called in turn"
        )
        _compare(paths, x, args.runs)
        return
    if args.export_to:
        for name in LAYERS:
            print(_export(name, x, args.export_to))
        return
    import keras

    print(
        f"backend {keras.backend.backend()}, onnxruntime "
        f"{onnxruntime.__version__}, median of {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as directory:
        _compare([_export(name, x, directory) for name in LAYERS], x, args.runs)


if __name__ == "__main__":
    main()
