"""Saving and loading: .keras archives, configs and .weights.h5 interop."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers

B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS


def test_registered_name():
    assert keras.saving.get_registered_name(keras_lstm.LSTM) == (
        "keras_lstm>LSTM"
    )
    assert keras.saving.get_registered_object("keras_lstm>LSTM") is (
        keras_lstm.LSTM
    )


# Every init argument set away from its default.
FULL_KWARGS = dict(
    units=5,
    activation="relu",
    recurrent_activation="hard_sigmoid",
    use_bias=False,
    kernel_initializer="he_normal",
    recurrent_initializer="glorot_normal",
    bias_initializer="ones",
    unit_forget_bias=False,
    kernel_regularizer="l2",
    recurrent_regularizer="l1",
    bias_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
    activity_regularizer="l2",
    kernel_constraint="non_neg",
    recurrent_constraint="unit_norm",
    bias_constraint="max_norm",
    dropout=0.25,
    recurrent_dropout=0.125,
    seed=17,
    return_sequences=True,
    return_state=True,
    go_backwards=True,
    stateful=True,
    time_major=True,
    unroll=True,
    use_cudnn=False,
)


def test_config_carries_every_argument():
    layer = keras_lstm.LSTM(**FULL_KWARGS)
    config = layer.get_config()
    plain = {
        k: v
        for k, v in FULL_KWARGS.items()
        if not k.endswith(("_initializer", "_regularizer", "_constraint"))
        and k not in ("activation", "recurrent_activation")
    }
    for key, value in plain.items():
        assert config[key] == value, key
    assert keras.activations.get(config["activation"]) is (
        keras.activations.relu
    )
    assert keras.activations.get(config["recurrent_activation"]) is (
        keras.activations.hard_sigmoid
    )
    assert isinstance(
        keras.initializers.get(config["kernel_initializer"]),
        keras.initializers.HeNormal,
    )
    assert isinstance(
        keras.initializers.get(config["recurrent_initializer"]),
        keras.initializers.GlorotNormal,
    )
    assert isinstance(
        keras.initializers.get(config["bias_initializer"]),
        keras.initializers.Ones,
    )
    assert isinstance(
        keras.regularizers.get(config["kernel_regularizer"]),
        keras.regularizers.L2,
    )
    assert isinstance(
        keras.regularizers.get(config["recurrent_regularizer"]),
        keras.regularizers.L1,
    )
    assert isinstance(
        keras.regularizers.get(config["bias_regularizer"]),
        keras.regularizers.L1L2,
    )
    assert isinstance(
        keras.regularizers.get(config["activity_regularizer"]),
        keras.regularizers.L2,
    )
    assert isinstance(
        keras.constraints.get(config["kernel_constraint"]),
        keras.constraints.NonNeg,
    )
    assert isinstance(
        keras.constraints.get(config["recurrent_constraint"]),
        keras.constraints.UnitNorm,
    )
    assert isinstance(
        keras.constraints.get(config["bias_constraint"]),
        keras.constraints.MaxNorm,
    )


def test_config_round_trip():
    layer = keras_lstm.LSTM(**FULL_KWARGS, name="full")
    config = layer.get_config()
    clone = keras_lstm.LSTM.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "full"
    # The arguments must also reach the behaviour, not only the config.
    assert clone.return_sequences and clone.return_state
    assert clone.go_backwards and clone.stateful
    assert clone.time_major and clone.unroll
    assert clone.use_cudnn is False


def test_default_config_round_trip():
    layer = keras_lstm.LSTM(U)
    config = layer.get_config()
    assert config["use_cudnn"] == "auto"
    assert config["time_major"] is False
    assert config["unroll"] is False
    assert config["unit_forget_bias"] is True
    assert config["seed"] is None
    assert keras_lstm.LSTM.from_config(config).get_config() == config


def test_serialize_round_trip():
    layer = keras_lstm.LSTM(U, return_sequences=True, time_major=True)
    serialized = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is keras_lstm.LSTM
    assert clone.get_config() == layer.get_config()


def _model(layer_cls, **kwargs):
    x_in = keras.Input((None, F))
    y = keras.layers.Masking(0.0)(x_in)
    y = layer_cls(U, return_sequences=True, **kwargs)(y)
    y = layer_cls(U + 1, **kwargs)(y)
    return keras.Model(x_in, keras.layers.Dense(2)(y))


def _data(seed):
    rng = np.random.default_rng(seed)
    x = helpers.random_inputs(rng)
    x[0, 3:] = 0.0
    return x


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(go_backwards=True, use_cudnn=False, seed=3, dropout=0.1)],
    ids=["default", "custom"],
)
def test_keras_file_round_trip(tmp_path, kwargs):
    model = _model(keras_lstm.LSTM, **kwargs)
    x = _data(60)
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    lstms = [layer for layer in loaded.layers if "lstm" in layer.name]
    assert len(lstms) == 2
    assert all(type(layer) is keras_lstm.LSTM for layer in lstms)
    for old, new in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6
    )


def test_keras_file_round_trip_trained_and_compiled(tmp_path):
    model = _model(keras_lstm.LSTM)
    model.compile(optimizer="adam", loss="mse")
    x = _data(61)
    y = np.ones((B, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "trained.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    # The optimizer state came along: training resumes identically.
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_keras_file_round_trip_time_major(tmp_path):
    x_in = keras.Input((B, F))
    model = keras.Model(
        x_in, keras_lstm.LSTM(U, time_major=True, return_sequences=True)(x_in)
    )
    x = np.ascontiguousarray(np.transpose(_data(62), (1, 0, 2)))
    expected = helpers.to_numpy(model(helpers.tensor(x)))
    path = tmp_path / "tm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[-1].time_major is True
    helpers.assert_close(loaded(helpers.tensor(x)), expected, rtol=1e-6)


def test_stateful_model_round_trip(tmp_path):
    x_in = keras.Input(batch_shape=(B, None, F))
    model = keras.Model(x_in, keras_lstm.LSTM(U, stateful=True)(x_in))
    path = tmp_path / "stateful.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    lstm = loaded.layers[-1]
    assert lstm.stateful
    x = _data(63)
    np.testing.assert_allclose(
        loaded.predict(x, batch_size=B, verbose=0),
        model.predict(x, batch_size=B, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "source, target",
    [
        (keras.layers.LSTM, keras_lstm.LSTM),
        (keras_lstm.LSTM, keras.layers.LSTM),
    ],
    ids=["keras-to-ours", "ours-to-keras"],
)
def test_weights_h5_interop(tmp_path, source, target):
    saved = _model(source)
    rng = np.random.default_rng(64)
    # Random weights: fresh initializers could hide a swapped layer order.
    saved.set_weights(
        [
            rng.normal(0.0, 0.5, w.shape).astype("float32")
            for w in saved.get_weights()
        ]
    )
    path = tmp_path / "model.weights.h5"
    saved.save_weights(path)
    loaded = _model(target)
    loaded.load_weights(path)
    for a, b in zip(saved.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Right padding only, where keras.layers.LSTM is correct everywhere.
    x = _data(65)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0),
        saved.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


# ---------------------------------------------------------------------------
# Files saved by release 0.2.0 (tests/fixtures, made by
# tests/fixtures/release_0_2_0.py with that release's tree and Keras 3.10.0
# on JAX: its docstring has the commands).

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def _release_0_2_0():
    spec = importlib.util.spec_from_file_location(
        "release_0_2_0", FIXTURES / "release_0_2_0.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with np.load(FIXTURES / "outputs_0_2_0.npz") as data:
        expected = [data["output_0"], data["output_1"]]
        x = data["x"]
    return module, x, expected


@pytest.mark.parametrize("kind", ["keras", "weights.h5"])
# Keras 3.10 saved the functional model's inputs as a list of one.
@pytest.mark.filterwarnings("ignore:The structure of `inputs`")
def test_files_saved_by_release_0_2_0_load(kind):
    """A .keras file and a .weights.h5 file saved by release 0.2.0 load
    and give the outputs 0.2.0 recorded (computed on JAX; here on every
    backend, so within float32 tolerance). The model: Masking,
    keras_lstm.Bidirectional, keras_lstm.LSTM with return_state and
    go_backwards, keras_lstm.LSTM with hard_sigmoid and
    unit_forget_bias=False, Dense; compiled (Adam) after two train steps.
    The script that made them: tests/fixtures/release_0_2_0.py."""
    release, x, expected = _release_0_2_0()
    if kind == "keras":
        model = keras.saving.load_model(FIXTURES / "model_0_2_0.keras")
        assert model.optimizer is not None
    else:
        model = release.build(keras, keras_lstm)
        model.load_weights(FIXTURES / "model_0_2_0.weights.h5")
    np.testing.assert_array_equal(x, release.inputs())
    assert isinstance(model.layers[2], keras_lstm.Bidirectional)
    got = [helpers.to_numpy(o) for o in model(x, training=False)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
