"""Multi-process data-parallel training on each backend's own engine.

Two processes on the loopback interface (127.0.0.1, free ports, each
process bounded by a timeout and killed with its children on the way out)
train a Masking + two keras_lstm.LSTM + Dense model on right-padded data
from the same initial weights:

- torch: `torch.distributed` with gloo, the Keras model wrapped in
  `DistributedDataParallel` and a torch.optim loop, as Keras's guide to
  distributed training with the torch backend does it; launched as a user
  would, `python -m torch.distributed.run --nproc-per-node 2`;
- JAX: `jax.distributed.initialize` (CPU collectives: gloo) and
  `keras.distribution.DataParallel` over the devices of both processes,
  `fit` on each process's rows of the global batch; a stateful model too;
- TensorFlow: `MultiWorkerMirroredStrategy` (two workers, TF_CONFIG), a
  custom loop (`strategy.run`, GradientTape); `fit` is an expected failure
  while Keras reduces its first batch in a way the multi-worker strategy
  refuses (keras-team/keras#20585).

Each test checks that every process ends with the same weights, equal to
float32 rounding to one process training the same steps on the global
batch (here, in the test process), and that the fused kernel ran in the
workers (a spy on the dispatch, and explain()). The worker code is in this
file: `python -m tests.test_multiprocess BACKEND OUT [RANK ADDRESS]`.
Each test runs only under its own KERAS_BACKEND (the tox env of that
backend).
"""

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The global batch of each step, split over the two processes.
PROCESSES, GLOBAL, TIMESTEPS, FEATURES, UNITS, STEPS = 2, 8, 5, 3, 4, 3
LOCAL = GLOBAL // PROCESSES
LEARNING_RATE = 0.5
# Seconds for a whole launch (both processes); it takes 4-12 here.
TIMEOUT = 120


def _data():
    """STEPS global batches, right-padded (each row its own length, one
    full-length row), for the Masking layer: x (STEPS, GLOBAL, TIMESTEPS,
    FEATURES) and y (STEPS, GLOBAL, 1)."""
    rng = np.random.default_rng(0)
    shape = (STEPS, GLOBAL, TIMESTEPS, FEATURES)
    x = rng.uniform(-1.0, 1.0, shape).astype("float32")
    lengths = rng.integers(1, TIMESTEPS + 1, (STEPS, GLOBAL))
    lengths[:, 0] = TIMESTEPS
    x[np.arange(TIMESTEPS) >= lengths[..., None]] = 0.0
    y = rng.normal(size=(STEPS, GLOBAL, 1)).astype("float32")
    return x, y


def _rows(array, rank):
    """This process's rows of each global batch."""
    return array[:, rank * LOCAL : (rank + 1) * LOCAL]


# ---------------------------------------------------------------------------
# The model and its training, shared by the workers and the test process.


def _build(stateful=False):
    import keras

    import keras_lstm

    if stateful:
        # States kept for the whole global batch.
        x_in = keras.Input(batch_shape=(GLOBAL, TIMESTEPS, FEATURES))
    else:
        x_in = keras.Input((TIMESTEPS, FEATURES))
    y = keras.layers.Masking(0.0)(x_in)
    y = keras_lstm.LSTM(UNITS, return_sequences=True, name="first")(y)
    y = keras_lstm.LSTM(UNITS, stateful=stateful, name="last")(y)
    model = keras.Model(x_in, keras.layers.Dense(1)(y))
    # The same initial weights everywhere.
    rng = np.random.default_rng(1)
    model.set_weights(
        [
            rng.normal(0.0, 0.5, w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    return model


def _stateful_states(model):
    import keras

    return [
        keras.ops.convert_to_numpy(s) for s in model.get_layer("last").states
    ]


def _torch_train(model, module, x, y):
    """The loop of Keras's torch distributed-training guide: `module` is
    the model, or the DistributedDataParallel around it."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.MSELoss()
    for inputs, targets in zip(x, y, strict=True):
        loss = loss_fn(module(torch.from_numpy(inputs)), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _tensorflow_train(model, x, y, strategy=None):
    """A custom loop: GradientTape under `strategy.run`, the loss averaged
    over the global batch, the gradients summed over the replicas."""
    import keras
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(model.trainable_variables)

    def step(inputs, targets):
        with tf.GradientTape() as tape:
            error = tf.square(model(inputs, training=True) - targets)
            loss = tf.nn.compute_average_loss(
                tf.reduce_mean(error, axis=-1), global_batch_size=GLOBAL
            )
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    @tf.function
    def distributed_step(inputs, targets):
        strategy.run(step, args=(inputs, targets))

    for inputs, targets in zip(x, y, strict=True):
        distributed_step(tf.constant(inputs), tf.constant(targets))


def _fit(model, x, y):
    """fit on the batches of `x` and `y`, one step each: on JAX each
    process's rows, on TensorFlow the global batches."""
    import keras

    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    batch = x.shape[1]
    model.fit(
        x.reshape(-1, TIMESTEPS, FEATURES),
        y.reshape(-1, 1),
        batch_size=batch,
        epochs=1,
        shuffle=False,
        verbose=0,
    )


# ---------------------------------------------------------------------------
# Worker side.


@contextlib.contextmanager
def _kernel_spy(kernels):
    """Appends the kernel keras_lstm's dispatch chooses for each LSTM call
    (at trace time under a compiled function) to `kernels`."""
    from keras_lstm import dispatch

    plan = dispatch.plan

    def spy(layer, inputs, training=False, strict=True):
        chosen = plan(layer, inputs, training, strict)
        kernels.append(chosen.kernel)
        return chosen

    dispatch.plan = spy
    try:
        yield
    finally:
        dispatch.plan = plan


def _explained(model, x):
    """explain() on each LSTM of `model`, on its inputs in the worker."""
    import keras

    import keras_lstm

    names = []
    inputs = keras.layers.Masking(0.0)(x[0])
    for name in ("first", "last"):
        layer = model.get_layer(name)
        names.append(keras_lstm.explain(layer, inputs).kernel)
        inputs = keras.ops.zeros((x.shape[1], TIMESTEPS, UNITS))
    return names


_KEPT = []


def _torch_worker():
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == PROCESSES
    x, y = (_rows(a, rank) for a in _data())
    model = _build()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    kernels = []
    with _kernel_spy(kernels):
        _torch_train(model, ddp, x, y)
    dist.barrier()
    dist.destroy_process_group()
    # Kept until the process leaves with os._exit (`_worker`): freeing it
    # can hang torch 2.13's gloo (docs/distribution.md).
    _KEPT.append(ddp)
    return rank, {"plain": model}, kernels, _explained(model, x)


def _jax_worker(rank, address):
    import jax
    import keras

    jax.distributed.initialize(address, PROCESSES, rank)
    # jax.distributed.initialize leaves each process its own seed
    # generators, which variables replicated over the processes refuse.
    keras.utils.set_random_seed(0)
    assert jax.process_count() == PROCESSES
    assert len(jax.devices()) == PROCESSES, jax.devices()
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    # Each process feeds its own rows (Keras would otherwise shard a
    # tf.data.Dataset, and refuses NumPy arrays).
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    x, y = (_rows(a, rank) for a in _data())
    models, kernels = {}, []
    with _kernel_spy(kernels):
        for kind in ("plain", "stateful"):
            models[kind] = _build(stateful=kind == "stateful")
            _fit(models[kind], x, y)
    # The variables really live on the devices of both processes.
    spread = {
        len(v.value.sharding.device_set) for v in models["plain"].variables
    }
    assert spread == {PROCESSES}, spread
    return rank, models, kernels, _explained(models["plain"], x)


def _tensorflow_worker(out):
    import tensorflow as tf

    rank = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == PROCESSES
    x, y = (_rows(a, rank) for a in _data())
    with strategy.scope():
        model = _build()
    kernels = []
    with _kernel_spy(kernels):
        _tensorflow_train(model, x, y, strategy)
    models = {"plain": model}
    # fit, on a fresh model: every worker feeds the global batches, which
    # the strategy shards (each worker gets its rows of each batch).
    with strategy.scope():
        models["fit"] = _build()
    try:
        _fit(models["fit"], *_data())
    except Exception as e:  # reported to the test
        del models["fit"]
        error = f"{type(e).__name__}: {e}"
        (pathlib.Path(out) / f"fit_error{rank}.txt").write_text(error)
    return rank, models, kernels, _explained(model, x)


def _worker(backend, out, *args):
    import keras

    assert keras.backend.backend() == backend
    worker = {
        "torch": _torch_worker,
        "jax": lambda: _jax_worker(int(args[0]), args[1]),
        "tensorflow": lambda: _tensorflow_worker(out),
    }[backend]
    rank, models, kernels, explained = worker()
    arrays = {"kernels": np.array(kernels), "explained": np.array(explained)}
    for kind, model in models.items():
        for i, w in enumerate(model.get_weights()):
            arrays[f"{kind}_weight_{i}"] = w
        if kind == "stateful":
            for i, s in enumerate(_stateful_states(model)):
                arrays[f"{kind}_state_{i}"] = s
    np.savez(pathlib.Path(out) / f"rank{rank}.npz", **arrays)
    if backend == "torch":
        # As docs/distribution.md's recipe leaves: torch 2.13's gloo can
        # hang while DistributedDataParallel is freed.
        sys.stdout.flush()
        os._exit(0)


# ---------------------------------------------------------------------------
# Test side.


def _require(backend):
    import keras

    if keras.backend.backend() != backend:
        pytest.skip(f"runs in the {backend} env (KERAS_BACKEND={backend})")


def _free_ports(count):
    """Ports free on 127.0.0.1 now (held together, so all distinct)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    # Collectives over the loopback interface only.
    env["GLOO_SOCKET_IFNAME"] = "lo"
    env.update(extra)
    return env


def _launch(commands, tmp_path, timeout=TIMEOUT):
    """Runs `commands` [(argv, env)] at once, in their own process groups,
    and waits for all of them; on a failure or past `timeout` kills every
    group still running. Fails with the output of each command."""
    processes, logs = [], []
    try:
        for i, (argv, env) in enumerate(commands):
            log = open(tmp_path / f"process{i}.log", "w+")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in processes):
            failed = any(p.returncode not in (None, 0) for p in processes)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in processes:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    codes = [p.returncode for p in processes]
    report = "\n".join(
        f"--- process {i} (exit {code}):\n{text[-4000:]}"
        for i, (code, text) in enumerate(zip(codes, outputs, strict=True))
    )
    assert codes == [0] * len(commands), report


def _results(out):
    """Each rank's arrays, by rank."""
    results = []
    for rank in range(PROCESSES):
        with np.load(out / f"rank{rank}.npz") as data:
            results.append({k: data[k] for k in data.files})
    return results


def _check(results, kind, model, fused, states=()):
    """Every rank holds the reference model's weights (and kept states);
    the fused kernel ran in each."""
    want = model.get_weights()
    initial = _build(stateful=kind == "stateful").get_weights()
    assert len(want) == 8  # two LSTMs (3 each), the Dense kernel and bias
    for before, after in zip(initial, want, strict=True):
        # The steps moved every weight: equal results are not "untrained".
        assert np.max(np.abs(after - before)) > 1e-3
    for rank, arrays in enumerate(results):
        got = [arrays[f"{kind}_weight_{i}"] for i in range(len(want))]
        got += [arrays[f"{kind}_state_{i}"] for i in range(len(states))]
        for i, (g, w) in enumerate(zip(got, [*want, *states], strict=True)):
            np.testing.assert_allclose(
                g, w, rtol=0, atol=1e-6, err_msg=f"rank {rank}, array {i}"
            )
        kernels = set(arrays["kernels"].tolist())
        assert fused in kernels and "generic" not in kernels, kernels
        assert arrays["explained"].tolist() == [fused, fused]


def test_torch_distributed_data_parallel(tmp_path):
    _require("torch")
    (port,) = _free_ports(1)
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={PROCESSES}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "tests.test_multiprocess",
        "torch",
        str(tmp_path),
    ]
    _launch([(argv, _env("torch", OMP_NUM_THREADS="1"))], tmp_path)
    model = _build()
    _torch_train(model, model, *_data())
    _check(_results(tmp_path), "plain", model, "torch-cpu")


def test_jax_distributed_data_parallel(tmp_path):
    _require("jax")
    import keras

    from tests import helpers

    if not helpers.keras_fits_numpy_per_process():
        pytest.skip(
            f"Keras {keras.version()} fits only a tf.data.Dataset under a "
            "multi-process distribution (no auto_shard_dataset)"
        )
    (port,) = _free_ports(1)
    env = _env("jax", JAX_PLATFORMS="cpu")
    _launch(
        [
            (
                [
                    sys.executable,
                    "-m",
                    "tests.test_multiprocess",
                    "jax",
                    str(tmp_path),
                    str(rank),
                    f"127.0.0.1:{port}",
                ],
                env,
            )
            for rank in range(PROCESSES)
        ],
        tmp_path,
    )
    results = _results(tmp_path)
    x, y = _data()
    model = _build()
    _fit(model, x, y)
    _check(results, "plain", model, "jax-scan")
    # The stateful model: each process's rows of the kept states came
    # back, so every process holds the states of the whole global batch.
    model = _build(stateful=True)
    _fit(model, x, y)
    states = _stateful_states(model)
    for state in states:
        assert state.shape == (GLOBAL, UNITS)
        assert np.all(np.abs(state).sum(axis=1) > 0)
    _check(results, "stateful", model, "jax-scan", states)


@pytest.fixture(scope="module")
def tensorflow_workers(tmp_path_factory):
    """Runs the two TensorFlow workers once for the tests below: their
    results (custom loop, and fit where it ran) and fit's errors."""
    _require("tensorflow")
    out = tmp_path_factory.mktemp("tensorflow_workers")
    ports = _free_ports(PROCESSES)
    workers = [f"127.0.0.1:{p}" for p in ports]
    commands = []
    for rank in range(PROCESSES):
        config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": rank},
        }
        argv = [sys.executable, "-m", "tests.test_multiprocess", "tensorflow"]
        env = _env("tensorflow", TF_CONFIG=json.dumps(config))
        commands.append(([*argv, str(out)], env))
    _launch(commands, out)
    errors = [
        (out / f"fit_error{rank}.txt").read_text()
        for rank in range(PROCESSES)
        if (out / f"fit_error{rank}.txt").exists()
    ]
    return _results(out), errors


def test_tensorflow_multi_worker_custom_loop(tensorflow_workers):
    results, _ = tensorflow_workers
    model = _build()
    _tensorflow_train(model, *_data())
    _check(results, "plain", model, "tensorflow-loop")


class UpstreamFitError(Exception):
    """model.fit failed in the workers."""


@pytest.mark.xfail(
    raises=UpstreamFitError,
    strict=True,
    reason="keras-team/keras#20585: under MultiWorkerMirroredStrategy, "
    "fit reduces its first batch with strategy.reduce, which the "
    "multi-worker strategy refuses for a tuple (any Keras model)",
)
def test_tensorflow_multi_worker_fit(tensorflow_workers):
    results, errors = tensorflow_workers
    if errors:
        raise UpstreamFitError("\n".join(errors)[:2000])
    model = _build()
    _fit(model, *_data())
    _check(results, "fit", model, "tensorflow-loop")


if __name__ == "__main__":
    # python -m tests.test_multiprocess BACKEND OUT_DIR [RANK ADDRESS]
    _worker(*sys.argv[1:])
