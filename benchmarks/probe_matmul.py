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
One subprocess per Keras backend times, in alternating runs (the machine
is shared and noisy: only ratios within a process count; on torch the
chain and projection alternate on their own, see `_worker`), its
framework's chain and projection, keras_lstm.LSTM's forward pass
(predict_on_batch of a one-layer model, return_sequences=True; on
TensorFlow also compiled with jit_compile=True) and torch.nn.LSTM's
forward pass. "kernel / limit" is how close the kernel is to its
framework's matmul rate, "kernel / torch.nn.LSTM" the gap to torch; both
are ratios of one process.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

if importlib.util.find_spec("torch"):
    import torch  # before TensorFlow: the other order can crash


def _torch_limit(shape):
    batch, steps, features, units = shape
    r = torch.randn(units, 4 * units) * 0.05
    w = torch.randn(features, 4 * units) * 0.05
    x = torch.randn(batch * steps, features)
    h0 = torch.zeros(batch, units)

    def chain():
        with torch.no_grad():
            h = h0
            for _ in range(steps):
                h = torch.tanh((h @ r)[:, :units])
            return h

    def project():
        with torch.no_grad():
            return x @ w

    return chain, project


def _torch_lstm(shape):
    batch, steps, features, units = shape
    lstm = torch.nn.LSTM(features, units, batch_first=True)
    inputs = torch.randn(batch, steps, features)

    def forward():
        with torch.no_grad():
            return lstm(inputs)

    return forward


def _tensorflow_limit(shape, jit):
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
    return lambda: chain(h0).numpy(), lambda: project(x).numpy()


def _jax_limit(shape):
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
    return (
        lambda: chain(h0).block_until_ready(),
        lambda: project(x).block_until_ready(),
    )


def _keras_lstm(shape, jit_compile=False):
    """keras_lstm.LSTM's forward pass; its kernel's name."""
    import keras

    import keras_lstm

    batch, steps, features, units = shape
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(batch, steps, features)),
            keras_lstm.LSTM(units, return_sequences=True),
        ]
    )
    if jit_compile:
        model.compile(jit_compile=True)
    x = np.random.default_rng(0).normal(size=(batch, steps, features))
    x = x.astype("float32")
    kernel = keras_lstm.explain(model.layers[0], x).kernel
    return (lambda: model.predict_on_batch(x)), kernel


def _worker(backend, shape, repeats):
    """In a subprocess on `backend`: every timing of that backend, in
    alternating runs; prints them as JSON."""
    from keras_lstm.tools.bench.util import time_alternating

    # (framework, limit part) -> runner; kernels apart.
    if backend == "torch":
        limits = {"torch (eager, oneDNN)": _torch_limit(shape)}
    elif backend == "tensorflow":
        limits = {
            "tensorflow graph (default kernel)": _tensorflow_limit(
                shape, jit=False
            ),
            "tensorflow XLA (jit_compile=True)": _tensorflow_limit(
                shape, jit=True
            ),
        }
    else:
        limits = {"jax (jit)": _jax_limit(shape)}
    parts = {}
    for framework, (chain, project) in limits.items():
        parts[f"{framework}|recurrent chain"] = chain
        parts[f"{framework}|input projection"] = project
    kernels = {"default": _keras_lstm(shape)}
    if backend == "tensorflow":
        kernels["jit_compile=True"] = _keras_lstm(shape, jit_compile=True)
    runners = {f"kernel|{label}": run for label, (run, _) in kernels.items()}
    runners["torch.nn.LSTM forward"] = _torch_lstm(shape)
    if backend == "torch":
        # torch's eager chain, run between them, slowed the torch ops after
        # it (torch.nn.LSTM forward 26 -> 50 ms here): its parts are timed
        # on their own first.
        times = time_alternating(parts, repeats)
    else:
        runners = {**parts, **runners}
        times = {}
    times.update(time_alternating(runners, repeats))
    print(
        json.dumps(
            {
                "times": times,
                "kernels": {k: name for k, (_, name) in kernels.items()},
                "frameworks": list(limits),
            }
        )
    )


def _in_subprocess(backend, shape, repeats):
    command = [sys.executable, __file__, "--worker", backend]
    command += ["--shape", *map(str, shape), "--repeats", str(repeats)]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{backend} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# Which framework limit each kernel works against.
_LIMIT_OF = {
    ("tensorflow", "default"): "tensorflow graph (default kernel)",
    ("tensorflow", "jit_compile=True"): "tensorflow XLA (jit_compile=True)",
    ("jax", "default"): "jax (jit)",
    ("torch", "default"): "torch (eager, oneDNN)",
}


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
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    if args.worker:
        return _worker(args.worker, shape, args.repeats)
    from keras_lstm.tools.bench.util import cpu

    results = {
        backend: _in_subprocess(backend, shape, args.repeats)
        for backend in ("tensorflow", "jax", "torch")
    }
    batch, steps, features, units = shape
    chain_flop = 2 * batch * units * 4 * units * steps
    project_flop = 2 * batch * steps * features * 4 * units
    print(f"CPU: {cpu()}; shape (batch, steps, features, units) {shape}")
    print(
        "\n| framework (process) | recurrent chain ms | GFLOP/s "
        "| input projection ms | GFLOP/s | limit ms (sum) |"
    )
    print("|---|---|---|---|---|---|")
    limits = {}
    for result in results.values():
        times = result["times"]
        for framework in result["frameworks"]:
            chain = times[f"{framework}|recurrent chain"]
            project = times[f"{framework}|input projection"]
            limits[framework] = chain + project
            print(
                f"| {framework} | {chain:.1f} | "
                f"{chain_flop / chain / 1e6:.0f} | {project:.1f} | "
                f"{project_flop / project / 1e6:.0f} | {chain + project:.1f} |"
            )
    print(
        "\n| backend | keras_lstm kernel | predict ms | limit ms "
        "| kernel / limit | torch.nn.LSTM ms (same process) "
        "| kernel / torch.nn.LSTM |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend, result in results.items():
        times = result["times"]
        forward = times["torch.nn.LSTM forward"]
        for label, kernel in result["kernels"].items():
            ms = times[f"kernel|{label}"]
            limit = limits[_LIMIT_OF[backend, label]]
            name = kernel if label == "default" else f"{kernel}, {label}"
            print(
                f"| {backend} | {name} | {ms:.1f} | {limit:.1f} | "
                f"{ms / limit:.2f} | {forward:.1f} | {ms / forward:.2f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": shape, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
