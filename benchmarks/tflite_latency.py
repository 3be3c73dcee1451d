"""TFLite latency on the TensorFlow backend: keras_lstm.LSTM against
keras.layers.LSTM, converted by tf.lite.TFLiteConverter.from_keras_model.

    KERAS_BACKEND=tensorflow python benchmarks/tflite_latency.py
    KERAS_BACKEND=tensorflow python benchmarks/tflite_latency.py \
        --return-sequences --runs 500

The model is issue 26's: a Sequential of LSTM(256) on inputs (1, 100, 64)
(batch 1, fixed length, as TFLite serves) and Dense(3). Each layer is
converted in float and with dynamic-range quantization
(`optimizations = [tf.lite.Optimize.DEFAULT]`: int8 weights), and run in
TFLite's interpreter with one thread and with the interpreter's default.
The two layers' interpreters are called in turn, `--runs` times each after
20 warm-up calls (alternating which goes first), so a machine shared with
other work slows both alike; the median is printed, with the ops of the
converted loop's WHILE body.
"""

import argparse
import collections
import contextlib
import io
import re
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_lstm

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # TensorFlow's own, deprecated but in TF 2.21
    Interpreter = tf.lite.Interpreter
    warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated")


def _convert(layer_class, x, return_sequences, quantize):
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:], batch_size=x.shape[0]),
            layer_class(256, return_sequences=return_sequences),
            keras.layers.Dense(3),
        ]
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert(), model.predict(x, verbose=0)


def _while_body_ops(flatbuffer):
    """The op types of the converted graph's WHILE bodies, counted."""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        tf.lite.experimental.Analyzer.analyze(model_content=flatbuffer)
    ops, in_body = collections.Counter(), False
    for line in report.getvalue().splitlines():
        if line.startswith("Subgraph#"):
            in_body = "while_body" in line
        elif in_body and (op := re.match(r"\s+Op#\d+ (\w+)", line)):
            ops[op.group(1)] += 1
    return ops


def _interpreter(flatbuffer, x, threads):
    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    output = interpreter.get_output_details()[0]["index"]
    return interpreter, interpreter.get_tensor(output)


def _time_in_turn(interpreters, runs):
    times = [[] for _ in interpreters]
    for _ in range(20):
        for interpreter in interpreters:
            interpreter.invoke()
    for run in range(runs):
        order = range(len(interpreters))
        for i in order if run % 2 else reversed(order):
            start = time.perf_counter()
            interpreters[i].invoke()
            times[i].append(time.perf_counter() - start)
    return [1e3 * float(np.median(t)) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--return-sequences", action="store_true")
    args = parser.parse_args()
    x = np.random.default_rng(0).normal(size=(1, 100, 64)).astype("float32")
    layers = {
        "keras.layers.LSTM": keras.layers.LSTM,
        "keras_lstm.LSTM": keras_lstm.LSTM,
    }
    print(
        f"tensorflow {tf.__version__}, {Interpreter.__module__}, "
        f"return_sequences={args.return_sequences}, median of {args.runs} "
        "runs, the layers in turn"
    )
    for quantize in (False, True):
        converted = {}
        for name, layer in layers.items():
            flatbuffer, expected = _convert(
                layer, x, args.return_sequences, quantize
            )
            ops = _while_body_ops(flatbuffer)
            converted[name] = (flatbuffer, expected)
            print(
                f"{'dynamic-range' if quantize else 'float'} {name}: "
                f"{len(flatbuffer)} bytes, WHILE body {sum(ops.values())} "
                f"ops: {dict(sorted(ops.items()))}"
            )
        for threads in (1, None):
            interpreters, errors = [], []
            for flatbuffer, expected in converted.values():
                interpreter, out = _interpreter(flatbuffer, x, threads)
                interpreters.append(interpreter)
                errors.append(float(np.abs(out - expected).max()))
            medians = _time_in_turn(interpreters, args.runs)
            for name, ms, error in zip(layers, medians, errors, strict=True):
                print(
                    f"  threads {threads or 'default'}: {name} {ms:.3f} ms, "
                    f"max |error| against predict {error:.1e}"
                )
            print(f"  keras_lstm / keras: {medians[1] / medians[0]:.2f}")


if __name__ == "__main__":
    main()
