"""Where the time of TensorFlow's loop kernel goes, step by step.

The default TensorFlow CPU kernel (`tensorflow-loop`) is a graph
`while_loop`: nothing compiled, so a new shape costs nothing, but each op
runs at TensorFlow's graph rate. This probe builds the inference loop up
one piece at a time at one shape and times each stage in one process
(alternating runs, medians), next to the kernel itself and the same loop
XLA-compiled:

    python benchmarks/probe_tensorflow_loop.py                # the main shape
    python benchmarks/probe_tensorflow_loop.py --shape 128 100 256 512

The difference between two rows is what that piece costs. A second table
times the recurrent chain alone with each of TensorFlow's matmul ops and
operand layouts (the graph kernel can use any of them) against XLA's;
run it with TF_ENABLE_ONEDNN_OPTS=0 as well to compare Eigen's matmul.
"""

import argparse

import numpy as np
import tensorflow as tf

from keras_lstm.backend import tensorflow as tf_kernel
from keras_lstm.tools.bench.util import time_alternating


def _loop(stage, inputs, h0, kernel, recurrent, bias, projected=None):
    """The loop up to `stage`: "chain" (h @ recurrent, a tanh),
    "projection" (+ each step's input @ kernel), "gates" (+ the LSTM gate
    math), "sequence" (+ the outputs written: the whole forward pass);
    with `projected`, the input projection comes from one matmul made
    before the loop."""
    batch, timesteps = inputs.shape[:2]
    units = h0.shape[-1]
    outputs = tf.TensorArray(h0.dtype, size=timesteps)

    def body(t, h, c, outputs):
        if stage == "chain":
            return t + 1, tf.tanh((h @ recurrent)[:, :units]), c, outputs
        if projected is None:
            z = inputs[:, t] @ kernel + h @ recurrent + bias
        else:
            z = projected[:, t] + h @ recurrent
        if stage == "projection":
            return t + 1, tf.tanh(z[:, :units]), c, outputs
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        if stage == "gates":
            return t + 1, h, c, outputs
        return t + 1, h, c, outputs.write(t, h)

    return tf.while_loop(
        lambda t, *_: t < timesteps, body, (0, h0, h0, outputs)
    )[1]


def _chain(matmul, h0, timesteps, jit_compile=False):
    """`timesteps` chained `tanh(matmul(h)[..., :units])`, compiled with
    XLA or run as a graph."""
    units = h0.shape[-1]

    def run(h0):
        return tf.while_loop(
            lambda t, _: t < timesteps,
            lambda t, h: (t + 1, tf.tanh(matmul(h)[..., :units])),
            (0, h0),
        )[1]

    run = tf.function(run, jit_compile=jit_compile)
    return lambda: run(h0)


def _matmul_ops(h0, recurrent, timesteps):
    """The chain with each matmul op; in the transposed layout the states
    are (units, batch) and each step is recurrent^T @ h^T."""
    transposed = tf.transpose(recurrent)
    batched = recurrent[None]
    return {
        "MatMul (h @ recurrent_kernel)": _chain(
            lambda h: h @ recurrent, h0, timesteps
        ),
        "MatMul, recurrent_kernel stored transposed": _chain(
            lambda h: tf.matmul(h, transposed, transpose_b=True), h0, timesteps
        ),
        "BatchMatMulV2": _chain(
            lambda h: tf.raw_ops.BatchMatMulV2(x=h[None], y=batched)[0],
            h0,
            timesteps,
        ),
        "einsum": _chain(
            lambda h: tf.einsum("bu,uk->bk", h, recurrent), h0, timesteps
        ),
        "transposed layout (units, batch)": _chain(
            # (the chain's [..., :batch] slice keeps every column)
            lambda h: (transposed @ h)[: h.shape[0]],
            tf.transpose(h0),
            timesteps,
        ),
        "XLA (jit_compile=True), MatMul": _chain(
            lambda h: h @ recurrent, h0, timesteps, jit_compile=True
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape",
        type=int,
        nargs=4,
        default=(64, 100, 128, 256),
        metavar=("BATCH", "STEPS", "FEATURES", "UNITS"),
    )
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    batch, steps, features, units = args.shape
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(batch, steps, features)), tf.float32)
    kernel = tf.constant(
        rng.normal(size=(features, 4 * units)) * 0.05, tf.float32
    )
    recurrent = tf.constant(
        rng.normal(size=(units, 4 * units)) * 0.05, tf.float32
    )
    bias = tf.zeros([4 * units])
    h0 = tf.zeros([batch, units])
    weights = (kernel, recurrent, bias)

    def graph(stage):
        run = tf.function(lambda x: _loop(stage, x, h0, *weights))
        return lambda: run(inputs)

    @tf.function
    def projection(x):
        flat = tf.reshape(x, [-1, features]) @ kernel + bias
        return tf.reshape(flat, [batch, steps, 4 * units])

    hoisted = tf.function(
        lambda x: _loop("sequence", x, h0, *weights, projected=projection(x))
    )
    xla = tf.function(
        lambda x: _loop("sequence", x, h0, *weights), jit_compile=True
    )
    stages = {
        "recurrent chain (h @ recurrent_kernel)": graph("chain"),
        "+ input projection in each step": graph("projection"),
        "+ gate math": graph("gates"),
        "+ output sequence (the whole forward pass)": graph("sequence"),
        "keras_lstm's tensorflow-loop kernel (inference form)": lambda: (
            tf_kernel._run(
                "infer", inputs, h0, h0, None, *weights, weights=weights
            )
        ),
        "the same, input projection as one matmul first": lambda: hoisted(
            inputs
        ),
        "the input projection alone (one matmul)": lambda: projection(inputs),
        "the whole forward pass under XLA (jit_compile=True)": lambda: xla(
            inputs
        ),
    }
    print(
        f"shape: batch {batch}, {steps} steps, {features} features, "
        f"{units} units"
    )
    print("| stage | ms |\n|---|---|")
    for name, ms in time_alternating(stages, args.repeats).items():
        print(f"| {name} | {ms:.1f} |")
    flops = 2 * batch * units * 4 * units * steps
    print("\n| recurrent chain with | ms | GFLOP/s |\n|---|---|---|")
    chains = _matmul_ops(h0 + 0.1, recurrent, steps)
    for name, ms in time_alternating(chains, args.repeats).items():
        print(f"| {name} | {ms:.1f} | {flops / ms / 1e6:.0f} |")


if __name__ == "__main__":
    main()
