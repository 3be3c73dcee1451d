"""ONNX Runtime latency of a model exported with model.export(format="onnx")
on the current Keras backend: keras_lstm.LSTM against keras.layers.LSTM.

    KERAS_BACKEND=tensorflow python benchmarks/export_latency.py
    KERAS_BACKEND=torch python benchmarks/export_latency.py --runs 500

The model is issue 26's: a Sequential of LSTM(256) on inputs (1, 100, 64)
and Dense(3). For each layer it prints the ONNX op that runs the LSTM
(LSTM or Loop), the node count and the median of `--runs` ONNX Runtime
calls (after 20 warm-up calls), one thread pool as ONNX Runtime sets it.
Needs onnx, onnxruntime and the backend's exporter (tf2onnx, onnxscript,
jax2onnx).
"""

import argparse
import collections
import os
import tempfile
import time

import keras
import numpy as np
import onnx
import onnxruntime

import keras_lstm


def _export(layer_class, x, directory):
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            layer_class(256),
            keras.layers.Dense(3),
        ]
    )
    expected = keras.ops.convert_to_numpy(model(x))
    path = os.path.join(directory, f"{layer_class.__module__}.onnx")
    model.export(path, format="onnx", verbose=False)
    return path, expected


def _time(path, x, runs):
    session = onnxruntime.InferenceSession(path)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(20):
        out = session.run(None, feed)[0]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return out, 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(1, 100, 64)).astype("float32")
    print(
        f"backend {keras.backend.backend()}, onnxruntime "
        f"{onnxruntime.__version__}, median of {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as directory:
        for name, layer in (
            ("keras.layers.LSTM", keras.layers.LSTM),
            ("keras_lstm.LSTM", keras_lstm.LSTM),
        ):
            path, expected = _export(layer, x, directory)
            ops = collections.Counter(
                n.op_type for n in onnx.load(path).graph.node
            )
            op = "LSTM" if "LSTM" in ops else "Loop" if "Loop" in ops else "-"
            out, ms = _time(path, x, args.runs)
            error = float(np.abs(out - expected).max())
            print(
                f"{name}: op {op}, {sum(ops.values())} nodes, {ms:.3f} ms, "
                f"max |error| {error:.1e}"
            )


if __name__ == "__main__":
    main()
