"""Data-parallel training over two CPU devices gives single-device weights.

JAX: keras.distribution.DataParallel over two host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2). TensorFlow:
tf.distribute.MirroredStrategy over two logical CPUs. Both need the device
setup before the framework starts, so each runs in a fresh interpreter
(`python -m tests.test_distribution BACKEND OUT`: the worker code is in
this file), which trains one step without and one step with distribution
from the same weights and writes both results. On JAX a stateful model is
trained too: its kept states must come back whole from the sharded step.
Model parallelism on JAX: keras.distribution.ModelParallel on a 2x2 mesh of
four host devices, the Embedding and Dense layers around the keras_lstm
layers sharded, and then the first LSTM's own weights too, trains like one
device (`python -m tests.test_distribution jax-model-parallel OUT`).
Each test runs only under its own KERAS_BACKEND (the tox env of that
backend).
Multi-process training (torch, JAX, TensorFlow) is in
tests/test_multiprocess.py.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH, TIMESTEPS, FEATURES, UNITS = 8, 5, 3, 4


def _data():
    """A batch of 8 with right padding and holes, for the Masking layer."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (BATCH, TIMESTEPS, FEATURES)).astype("float32")
    x[::2, 3:] = 0.0
    x[1::4, 1] = 0.0
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    return x, y


# What a worker writes, for a plain and a stateful model: the weights
# before the step, after it on one device, and after it distributed.
KINDS = ("initial", "single", "distributed")


def _prefix(stateful):
    return "stateful_" if stateful else "plain_"


# ---------------------------------------------------------------------------
# Worker side.


def _build(stateful=False):
    import keras

    import keras_lstm

    if stateful:
        # States of the whole batch, kept across steps.
        x_in = keras.Input(batch_shape=(BATCH, TIMESTEPS, FEATURES))
    else:
        x_in = keras.Input((TIMESTEPS, FEATURES))
    y = keras.layers.Masking(0.0)(x_in)
    y = keras_lstm.LSTM(UNITS, return_sequences=True)(y)
    y = keras_lstm.LSTM(
        UNITS, go_backwards=True, stateful=stateful, name="last"
    )(y)
    return keras.Model(x_in, keras.layers.Dense(1)(y))


def _initial_weights(model):
    rng = np.random.default_rng(1)
    return [
        rng.normal(0.0, 0.5, w.shape).astype("float32")
        for w in model.get_weights()
    ]


def _train(weights, stateful=False, scope=None):
    """One SGD step on the batch of 8 from `weights`.

    Returns:
        The model, and its weights after the step followed by the kept
        states of a stateful model.
    """
    import contextlib

    import keras

    with scope or contextlib.nullcontext():
        model = _build(stateful)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x, y = _data()
    # One step: the whole batch of 8, split across the devices.
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    states = model.get_layer("last").states if stateful else []
    return model, model.get_weights() + [
        keras.ops.convert_to_numpy(s) for s in states
    ]


def _jax_worker():
    import jax
    import keras

    assert len(jax.devices()) == 2, jax.devices()
    results = {}
    for stateful in (False, True):
        weights = _initial_weights(_build(stateful))
        results[stateful] = [weights, _train(weights, stateful)[1]]
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices())
    )
    spread = True
    for stateful in (False, True):
        model, trained = _train(results[stateful][0], stateful)
        results[stateful].append(trained)
        # The variables really live on both devices (replicated).
        devices = {len(v.value.sharding.device_set) for v in model.variables}
        spread = spread and devices == {2}
    return results, spread


def _tensorflow_worker():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    weights = _initial_weights(_build())
    single = _train(weights)[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    model, distributed = _train(weights, scope=strategy.scope())
    mirrored = all(
        isinstance(v.value, tf.distribute.DistributedValues)
        for v in model.trainable_variables
    )
    # No stateful model here: each replica sees half the batch, and states
    # kept for the whole batch cannot take it.
    spread = strategy.num_replicas_in_sync == 2 and mirrored
    return {False: [weights, single, distributed]}, spread


# Model parallelism (JAX): token ids, right-padded with 0 (the Embedding's
# mask), two steps of a batch of 8.
VOCABULARY, EMBEDDING, HIDDEN = 10, 6, 8
# The layouts asked for: the layers around the LSTMs, then the first
# LSTM's own weights too (their 4 * units axis over "model").
AROUND = {
    "embedding/embeddings": (None, "model"),
    "hidden/kernel": (None, "model"),
    "hidden/bias": ("model",),
}
OWN = {
    "first/lstm_cell/kernel": (None, "model"),
    "first/lstm_cell/recurrent_kernel": (None, "model"),
    "first/lstm_cell/bias": ("model",),
}


def _tokens():
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCABULARY, (2 * BATCH, TIMESTEPS))
    lengths = rng.integers(1, TIMESTEPS + 1, 2 * BATCH)
    lengths[0] = TIMESTEPS
    x[np.arange(TIMESTEPS) >= lengths[:, None]] = 0
    return x.astype("int32"), rng.normal(size=(2 * BATCH, 1)).astype("float32")


def _model_parallel_train():
    """Two SGD steps of the embedding model from fixed weights; returns it."""
    import keras

    import keras_lstm

    x_in = keras.Input((TIMESTEPS,), dtype="int32")
    y = keras.layers.Embedding(
        VOCABULARY, EMBEDDING, mask_zero=True, name="embedding"
    )(x_in)
    y = keras_lstm.LSTM(UNITS, return_sequences=True, name="first")(y)
    y = keras_lstm.LSTM(UNITS, name="last")(y)
    y = keras.layers.Dense(HIDDEN, activation="tanh", name="hidden")(y)
    model = keras.Model(x_in, keras.layers.Dense(1, name="out")(y))
    model.set_weights(_initial_weights(model))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x, y = _tokens()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def _jax_model_parallel_worker(out):
    import jax
    import keras

    from keras_lstm import dispatch

    assert len(jax.devices()) == 4, jax.devices()
    arrays = {}
    kernels = []
    plan = dispatch.plan

    def spy(layer, inputs, training=False, strict=True):
        chosen = plan(layer, inputs, training, strict)
        kernels.append(chosen.kernel)
        return chosen

    dispatch.plan = spy
    model = _model_parallel_train()
    for i, (w, before) in enumerate(
        zip(model.get_weights(), _initial_weights(model), strict=True)
    ):
        arrays[f"single_{i}"] = w
        arrays[f"initial_{i}"] = before
    mesh = keras.distribution.DeviceMesh(
        (2, 2), ("batch", "model"), jax.devices()
    )
    for kind, layouts in (("around", AROUND), ("own", {**AROUND, **OWN})):
        layout_map = keras.distribution.LayoutMap(mesh)
        for path, axes in layouts.items():
            layout_map[path] = axes
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(
                layout_map=layout_map, batch_dim_name="batch"
            )
        )
        model = _model_parallel_train()
        for i, w in enumerate(model.get_weights()):
            arrays[f"{kind}_{i}"] = w
        # How each asked-for variable is laid out over the mesh.
        for v in model.variables:
            if v.path in layouts:
                spec = tuple(v.value.sharding.spec)
                arrays[f"{kind}_spec_{v.path}"] = np.array(
                    [str(a) for a in spec]
                )
    arrays["kernels"] = np.array(kernels)
    np.savez(out, **arrays)


def _worker(backend, out):
    import keras

    assert keras.backend.backend() == backend
    worker = {"jax": _jax_worker, "tensorflow": _tensorflow_worker}[backend]
    results, spread = worker()
    arrays = {"spread": np.array(spread)}
    for stateful, lists in results.items():
        for kind, values in zip(KINDS, lists, strict=True):
            for i, value in enumerate(values):
                arrays[f"{_prefix(stateful)}{kind}_{i}"] = value
    np.savez(out, **arrays)


# ---------------------------------------------------------------------------
# Test side.


def _backend():
    import keras

    return keras.backend.backend()


def _run_worker(backend, tmp_path, extra_env):
    """Runs the worker; returns {stateful: (initial, single, distributed)}
    and whether the distributed models were spread over two devices."""
    if _backend() != backend:
        pytest.skip(f"runs in the {backend} env (KERAS_BACKEND={backend})")
    out = tmp_path / "weights.npz"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_distribution", backend, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    results = {}
    for stateful in (False, True):
        lists = []
        for kind in KINDS:
            key = f"{_prefix(stateful)}{kind}_"
            count = sum(k.startswith(key) for k in arrays)
            lists.append([arrays[f"{key}{i}"] for i in range(count)])
        if lists[0]:
            results[stateful] = lists
    return results, bool(arrays["spread"])


def _check(initial, single, distributed):
    # Two LSTMs (3 each), the Dense kernel and bias.
    assert len(initial) == 8
    for before, want in zip(initial, single[: len(initial)], strict=True):
        # The step moved every weight: equal results are not "untrained".
        assert np.max(np.abs(want - before)) > 1e-4
    assert len(single) == len(distributed)
    for want, got in zip(single, distributed, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_jax_data_parallel_matches_single_device(tmp_path):
    flags = [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=2",
    ]
    env = {"XLA_FLAGS": " ".join(filter(None, flags)), "JAX_PLATFORMS": "cpu"}
    results, spread = _run_worker("jax", tmp_path, env)
    assert spread, "the distributed models were not spread over two devices"
    _check(*results[False])
    # The stateful model: weights, then the two kept states, which the
    # distributed step must have written back whole (all rows).
    initial, single, distributed = results[True]
    assert len(single) == len(initial) + 2
    for state in distributed[-2:]:
        assert state.shape == (BATCH, UNITS)
        assert np.all(np.abs(state).sum(axis=1) > 0)
    _check(initial, single, distributed)


def test_tensorflow_mirrored_strategy_matches_single_device(tmp_path):
    results, spread = _run_worker("tensorflow", tmp_path, {})
    assert spread, "the distributed model was not mirrored on two devices"
    _check(*results[False])


def test_jax_model_parallel_matches_single_device(tmp_path):
    if _backend() != "jax":
        pytest.skip("runs in the jax env (KERAS_BACKEND=jax)")
    out = tmp_path / "weights.npz"
    flags = [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=4",
    ]
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join(filter(None, flags)),
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_distribution"]
        + ["jax-model-parallel", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    # The fused kernel ran, one device and sharded alike.
    assert set(arrays["kernels"].tolist()) == {"jax-scan"}
    count = sum(k.startswith("single_") for k in arrays)
    single = [arrays[f"single_{i}"] for i in range(count)]
    for i, want in enumerate(single):
        # The steps moved every weight (the embeddings of the ids seen).
        assert np.max(np.abs(want - arrays[f"initial_{i}"])) > 1e-4
    for kind, layouts in (("around", AROUND), ("own", {**AROUND, **OWN})):
        # Each asked-for layout is the variable's sharding.
        for path, axes in layouts.items():
            got = arrays[f"{kind}_spec_{path}"].tolist()
            assert got == [str(a) for a in axes], (kind, path, got)
        for i, want in enumerate(single):
            np.testing.assert_allclose(
                arrays[f"{kind}_{i}"], want, rtol=0, atol=1e-6
            )


if __name__ == "__main__":
    # python -m tests.test_distribution BACKEND OUT.npz
    if sys.argv[1] == "jax-model-parallel":
        _jax_model_parallel_worker(sys.argv[2])
    else:
        _worker(sys.argv[1], sys.argv[2])
