"""`model.compile(jit_compile=True)` on every backend: XLA on TensorFlow and
JAX, torch.compile on torch (the fused op runs outside the compiled graph).
Fit, predict, save and reload give what the same model gives without it."""

import contextlib

import keras
import numpy as np
import pytest

import keras_lstm

BACKEND = keras.backend.backend()
KERAS = tuple(int(p) for p in keras.__version__.split(".")[:2])

pytestmark = pytest.mark.skipif(
    BACKEND == "torch" and KERAS < (3, 15),
    reason="keras 3.10's own train step fails under torch 2.13's Dynamo "
    "(keras.layers.LSTM too: 'exception table entry start instruction has "
    "no offset')",
)


def _model(jit_compile):
    model = keras.Sequential(
        [
            keras.Input((7, 4)),
            keras.layers.Masking(),
            keras_lstm.LSTM(5, return_sequences=True),
            keras_lstm.LSTM(3),
            keras.layers.Dense(1),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile
    )
    return model


def test_jit_compile_fits_predicts_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 7, 4)).astype("float32")
    x[2, 5:] = 0.0  # masked steps
    y = rng.normal(size=(8, 1)).astype("float32")
    compiled, plain = _model(True), _model(False)
    plain.set_weights(compiled.get_weights())
    assert compiled.jit_compile
    for model in (compiled, plain):
        model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    for got, want in zip(
        compiled.get_weights(), plain.get_weights(), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    predicted = compiled.predict(x, verbose=0)
    np.testing.assert_allclose(
        predicted, plain.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    path = str(tmp_path / "model.keras")
    compiled.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.jit_compile == compiled.jit_compile
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), predicted, rtol=1e-5, atol=1e-6
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile")
def test_torch_compile_runs_the_fused_op(monkeypatch):
    from tests.test_fused_parity import spy_on_kernel

    calls = spy_on_kernel(monkeypatch)
    model = _model(True)
    x = np.ones((4, 7, 4), "float32")
    model.predict(x, verbose=0)
    assert calls, "the fused kernel should run under torch.compile"


@pytest.mark.parametrize(
    "kwargs, ops_path",
    [
        ({"activation": "relu"}, False),
        ({"recurrent_dropout": 0.3}, False),
        ({"use_cudnn": False}, True),
    ],
    ids=["relu", "recurrent_dropout", "use_cudnn_false"],
)
def test_jit_compile_with_every_step(kwargs, ops_path):
    # Other activations and recurrent dropout run the kernels' own loops,
    # compiled with the model. The keras.ops path's scan has no XLA
    # gradient on TensorFlow: there a layer that runs it declines jit
    # (Keras warns and trains without XLA), elsewhere it is compiled;
    # either way the model trains.
    model = keras.Sequential(
        [
            keras.Input((7, 4)),
            keras_lstm.LSTM(5, **kwargs),
            keras.layers.Dense(1),
        ]
    )
    declines = ops_path and BACKEND == "tensorflow"
    warns = pytest.warns(UserWarning, match="jit_compile")
    with warns if declines else contextlib.nullcontext():
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert model.jit_compile == (not declines)
    history = model.fit(
        np.ones((4, 7, 4), "float32"), np.ones((4, 1)), epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
