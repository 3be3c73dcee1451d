"""The matmul limit each framework's LSTM kernel works against, on this CPU.

An LSTM forward pass over T steps cannot beat T chained recurrent matmuls
(`h @ recurrent_kernel`, (batch, units) x (units, 4 units), each waiting for
the last) plus the input projection (one (batch * T, features) x (features,
4 units) matmul). This probe times both in each framework, the way each
kernel runs them: torch (eager oneDNN), TensorFlow as a graph while_loop
(the default kernel) and XLA-compiled (jit_compile=True), JAX under jit.
Next to torch.nn.LSTM's own time, it shows how much of a gap to torch is
the framework's own matmul rate rather than the kernel.

    python benchmarks/probe_matmul.py                 # the main shape
    python benchmarks/probe_matmul.py --shape 128 100 256 512

Needs torch, tensorflow and jax installed (the tox env `cross` has all).
Each backend's keras_lstm.LSTM forward pass (predict_on_batch of a one-layer
model, return_sequences=True) is timed in a subprocess of its own and shown
as "kernel / limit": how close the kernel is to its framework's matmul rate.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

if importlib.util.find_spec("torch"):
    import torch  # before TensorFlow: the other order can crash


def _median_ms(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _torch(shape, repeats):
    batch, steps, features, units = shape
    torch.set_grad_enabled(False)
    r = torch.randn(units, 4 * units) * 0.05
    w = torch.randn(features, 4 * units) * 0.05
    x = torch.randn(batch * steps, features)
    h0 = torch.zeros(batch, units)

    def chain():
        h = h0
        for _ in range(steps):
            h = torch.tanh((h @ r)[:, :units])
        return h

    lstm = torch.nn.LSTM(features, units, batch_first=True)
    inputs = torch.randn(batch, steps, features)
    return {
        "recurrent chain": _median_ms(chain, repeats),
        "input projection": _median_ms(lambda: x @ w, repeats),
        "torch.nn.LSTM forward": _median_ms(lambda: lstm(inputs), repeats),
    }


def _tensorflow(shape, repeats, jit):
    import tensorflow as tf

    batch, steps, features, units = shape
    r = tf.random.normal((units, 4 * units)) * 0.05
    w = tf.random.normal((features, 4 * units)) * 0.05
    x = tf.random.normal((batch * steps, features))
    h0 = tf.zeros((batch, units))

    @tf.function(jit_compile=jit, autograph=False)
    def chain(h0):
        return tf.while_loop(
            lambda t, h: t < steps,
            lambda t, h: (t + 1, tf.tanh((h @ r)[:, :units])),
            (0, h0),
            maximum_iterations=steps,
        )[1]

    project = tf.function(lambda x: x @ w, jit_compile=jit, autograph=False)
    return {
        "recurrent chain": _median_ms(lambda: chain(h0).numpy(), repeats),
        "input projection": _median_ms(lambda: project(x).numpy(), repeats),
    }


def _jax(shape, repeats):
    import jax
    import jax.numpy as jnp

    batch, steps, features, units = shape
    key = jax.random.PRNGKey(0)
    r = jax.random.normal(key, (units, 4 * units)) * 0.05
    w = jax.random.normal(key, (features, 4 * units)) * 0.05
    x = jax.random.normal(key, (batch * steps, features))
    h0 = jnp.zeros((batch, units))

    @jax.jit
    def chain(h0):
        def step(h, _):
            return jnp.tanh((h @ r)[:, :units]), None

        return jax.lax.scan(step, h0, None, length=steps)[0]

    project = jax.jit(lambda x: x @ w)
    return {
        "recurrent chain": _median_ms(
            lambda: chain(h0).block_until_ready(), repeats
        ),
        "input projection": _median_ms(
            lambda: project(x).block_until_ready(), repeats
        ),
    }


def _kernel_worker(backend, shape, repeats):
    """keras_lstm.LSTM's predict ms on one backend (run in a subprocess)."""
    os.environ["KERAS_BACKEND"] = backend
    import keras

    import keras_lstm

    batch, steps, features, units = shape
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch, steps, features)),
            keras_lstm.LSTM(units, return_sequences=True),
        ]
    )
    x = np.random.default_rng(0).normal(size=(batch, steps, features))
    x = x.astype("float32")
    kernel = keras_lstm.explain(model.layers[0], x).kernel
    ms = _median_ms(lambda: model.predict_on_batch(x), repeats)
    print(json.dumps({"kernel": kernel, "ms": ms}))


def _kernel(backend, shape, repeats):
    command = [sys.executable, __file__, "--kernel-worker", backend]
    command += ["--shape", *map(str, shape), "--repeats", str(repeats)]
    env = dict(os.environ, KERAS_BACKEND=backend)
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{backend} kernel worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape",
        nargs=4,
        type=int,
        default=[64, 100, 128, 256],
        metavar=("BATCH", "STEPS", "FEATURES", "UNITS"),
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--kernel-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    shape = tuple(args.shape)
    if args.kernel_worker:
        return _kernel_worker(args.kernel_worker, shape, args.repeats)
    from keras_lstm.benchmark import cpu

    batch, steps, features, units = shape
    results = {
        "torch (eager, oneDNN)": _torch(shape, args.repeats),
        "tensorflow graph (default kernel)": _tensorflow(
            shape, args.repeats, jit=False
        ),
        "tensorflow XLA (jit_compile=True)": _tensorflow(
            shape, args.repeats, jit=True
        ),
        "jax (jit)": _jax(shape, args.repeats),
    }
    kernels = {
        backend: _kernel(backend, shape, args.repeats)
        for backend in ("tensorflow", "jax", "torch")
    }
    limits = {
        "tensorflow": results["tensorflow graph (default kernel)"],
        "jax": results["jax (jit)"],
        "torch": results["torch (eager, oneDNN)"],
    }
    chain_flop = 2 * batch * units * 4 * units * steps
    project_flop = 2 * batch * steps * features * 4 * units
    print(f"CPU: {cpu()}; shape (batch, steps, features, units) {shape}")
    print(
        "\n| framework | recurrent chain ms | GFLOP/s | input projection ms "
        "| GFLOP/s | limit ms (sum) |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        chain, project = r["recurrent chain"], r["input projection"]
        print(
            f"| {name} | {chain:.1f} | {chain_flop / chain / 1e6:.0f} | "
            f"{project:.1f} | {project_flop / project / 1e6:.0f} | "
            f"{chain + project:.1f} |"
        )
    forward = results["torch (eager, oneDNN)"]["torch.nn.LSTM forward"]
    print(
        f"\ntorch.nn.LSTM forward: {forward:.1f} ms "
        f"({(chain_flop + project_flop) / forward / 1e6:.0f} GFLOP/s)\n"
    )
    print(
        "| backend | keras_lstm kernel | predict ms | limit ms "
        "| kernel / limit | kernel / torch.nn.LSTM |"
    )
    print("|---|---|---|---|---|---|")
    for backend, k in kernels.items():
        limit = limits[backend]
        limit = limit["recurrent chain"] + limit["input projection"]
        print(
            f"| {backend} | {k['kernel']} | {k['ms']:.1f} | {limit:.1f} | "
            f"{k['ms'] / limit:.2f} | {k['ms'] / forward:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"shape": shape, "results": results, "kernels": kernels},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
