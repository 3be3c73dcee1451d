"""Which kernel runs a call: the dispatch rules, explain(), use_cudnn=True.

A spy on the backend's fused kernel (`keras_lstm.backend.kernels.lstm`)
says what really ran; explain() must say the same thing for every call.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from keras_lstm import dispatch
from keras_lstm.dispatch import GENERIC
from tests import helpers
from tests.test_fused_parity import spy_on_kernel

BACKEND = keras.backend.backend()
KERNELS = keras_lstm.backend.kernels

needs_kernel = pytest.mark.skipif(
    KERNELS is None, reason=f"the {BACKEND} backend has no fused kernel"
)


def _layer(**kwargs):
    rng = np.random.default_rng(0)
    weights = helpers.random_weights(rng, use_bias=kwargs.get("use_bias", True))
    return helpers.built_layer(keras_lstm.LSTM, weights, **kwargs)


def _inputs():
    return helpers.random_inputs(np.random.default_rng(1))


def _run_and_explain(monkeypatch, layer, x, mask=None, training=None):
    """Explains a call, runs it under the spy; returns (plan, fused ran)."""
    plan = keras_lstm.explain(layer, x, mask=mask, training=bool(training))
    calls = spy_on_kernel(monkeypatch)
    helpers.call_layer(layer, x, mask=mask, training=training)
    assert len(calls) <= 1
    fused = len(calls) == 1
    # explain() agrees with what ran: reasons exactly when generic.
    assert (plan.reasons == ()) == fused, plan
    assert (plan.kernel == GENERIC) == (not fused), plan
    return plan, fused


# (id, layer arguments, call arguments): calls a fused kernel must take.
ELIGIBLE = [
    ("defaults", {}, {}),
    ("mask", {}, {"mask": helpers.make_mask("holes")}),
    ("fully_masked_row", {}, {"mask": helpers.make_mask("full_row")}),
    ("input_dropout_training", {"dropout": 0.5}, {"training": True}),
    ("recurrent_dropout_inference", {"recurrent_dropout": 0.5}, {}),
    (
        "recurrent_dropout_training_false",
        {"recurrent_dropout": 0.5},
        {"training": False},
    ),
    ("no_bias", {"use_bias": False}, {}),
    ("go_backwards", {"go_backwards": True}, {}),
    ("stateful", {"stateful": True}, {}),
    ("use_cudnn_true", {"use_cudnn": True}, {}),
    ("activation_tanh_object", {"activation": keras.activations.tanh}, {}),
    # Steps the frameworks' fused ops do not compute run the kernels' own
    # loops (torch-loop on torch).
    ("activation", {"activation": "relu"}, {}),
    ("recurrent_activation", {"recurrent_activation": "hard_sigmoid"}, {}),
    (
        "recurrent_dropout_training",
        {"recurrent_dropout": 0.5},
        {"training": True},
    ),
    ("unroll", {"unroll": True}, {}),
    (
        "everything_at_once",
        {
            "activation": "relu",
            "recurrent_activation": "hard_sigmoid",
            "recurrent_dropout": 0.5,
            "unroll": True,
        },
        {"training": True, "mask": helpers.make_mask("holes")},
    ),
]

# (id, layer arguments, call arguments, a word the single reason must hold):
# one failed rule each, so each rule is seen to act on its own.
INELIGIBLE = [
    ("use_cudnn_false", {"use_cudnn": False}, {}, "use_cudnn=False"),
]


@needs_kernel
@pytest.mark.parametrize(
    "layer_kwargs, call_kwargs",
    [case[1:] for case in ELIGIBLE],
    ids=[case[0] for case in ELIGIBLE],
)
def test_eligible_calls_run_the_fused_kernel(
    monkeypatch, layer_kwargs, call_kwargs
):
    layer = _layer(**layer_kwargs)
    x = _inputs()
    plan, fused = _run_and_explain(monkeypatch, layer, x, **call_kwargs)
    assert fused
    assert plan.reasons == ()
    step = dispatch.cell(layer, call_kwargs.get("training"))
    assert plan.kernel == KERNELS.name(keras.ops.convert_to_tensor(x), step)
    assert plan.kernel != GENERIC
    if BACKEND == "torch":
        standard = step.standard
        assert (plan.kernel == "torch-loop") == (not standard), plan


@needs_kernel
@pytest.mark.parametrize(
    "layer_kwargs, call_kwargs, reason",
    [case[1:] for case in INELIGIBLE],
    ids=[case[0] for case in INELIGIBLE],
)
def test_each_rule_alone_keeps_the_fused_kernel_off(
    monkeypatch, layer_kwargs, call_kwargs, reason
):
    layer = _layer(**layer_kwargs)
    plan, fused = _run_and_explain(monkeypatch, layer, _inputs(), **call_kwargs)
    assert not fused
    assert plan.kernel == GENERIC
    assert len(plan.reasons) == 1, plan.reasons
    assert reason in plan.reasons[0]


@needs_kernel
def test_backend_reasons_keep_the_fused_kernel_off(monkeypatch):
    # Device, dtype and tracing rules come from the backend module; whatever
    # it reports must reach explain() and keep the call generic.
    reason = "the test says this device cannot run it"
    monkeypatch.setattr(
        KERNELS, "unsupported", lambda inputs, cell=None: (reason,)
    )
    plan, fused = _run_and_explain(monkeypatch, _layer(), _inputs())
    assert not fused
    assert plan == keras_lstm.Plan(GENERIC, (reason,))


@needs_kernel
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_unsupported_dtype_falls_back(monkeypatch, dtype):
    x = keras.ops.convert_to_tensor(_inputs(), dtype=dtype)
    if keras.backend.standardize_dtype(x.dtype) != dtype:
        pytest.skip(f"{BACKEND} does not make {dtype} tensors here")
    backend_reasons = KERNELS.unsupported(x)
    # torch on CPU has no QR in half precision, which the default
    # orthogonal initializer needs: a Keras limit, not the one tested here.
    layer = keras_lstm.LSTM(
        helpers.UNITS, dtype=dtype, recurrent_initializer="glorot_uniform"
    )
    plan, fused = _run_and_explain(monkeypatch, layer, x)
    # Whatever the kernel takes or refuses, explain and the call agree
    # with the backend module.
    assert fused == (not backend_reasons)
    assert plan.reasons == backend_reasons
    if backend_reasons:
        assert dtype in plan.reasons[0]


@pytest.mark.skipif(BACKEND != "torch", reason="torch tracing rules")
@pytest.mark.parametrize(
    "patched", ["torch.compiler.is_exporting", "torch.jit.is_tracing"]
)
def test_torch_tracing_runs_the_export_form(monkeypatch, patched):
    # Exporting a model here would take long; the rule only asks torch
    # whether it is tracing, so answering "yes" exercises it: the fused
    # kernel's exportable form runs (test_export.py exports for real), and
    # gives the keras.ops path's numbers, masked too.
    monkeypatch.setattr(patched, lambda: True)
    layer, x = _layer(), _inputs()
    mask = helpers.make_mask("holes")
    plan, fused = _run_and_explain(monkeypatch, layer, x, mask=mask)
    assert fused and plan.kernel == "torch-export"
    actual = helpers.call_layer(layer, x, mask=mask)
    monkeypatch.setattr(layer, "use_cudnn", False)  # the keras.ops path
    expected = helpers.call_layer(layer, x, mask=mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual),
        keras.ops.convert_to_numpy(expected),
        rtol=1e-5,
        atol=1e-6,
    )


@needs_kernel
def test_explain_follows_training(monkeypatch):
    # Recurrent dropout exists in training only: the same layer runs the
    # standard step outside it (torch's own op on torch) and the kernels'
    # loop in it, call by call.
    layer = _layer(recurrent_dropout=0.5)
    x = _inputs()
    kernels = {}
    for training in (True, False, True):
        plan, fused = _run_and_explain(monkeypatch, layer, x, training=training)
        assert fused and plan.reasons == ()
        kernels.setdefault(training, set()).add(plan.kernel)
    assert len(kernels[True]) == 1
    if BACKEND == "torch":
        assert kernels == {True: {"torch-loop"}, False: {"torch-cpu"}}


@needs_kernel
def test_explain_ignores_the_mask_and_handles_time_major():
    layer = _layer(time_major=True)
    x = np.transpose(_inputs(), (1, 0, 2))
    mask = helpers.make_mask("left").T
    plan = keras_lstm.explain(layer, x)
    assert plan == keras_lstm.explain(layer, x, mask=mask)
    assert plan.reasons == ()
    batch_major = keras.ops.convert_to_tensor(_inputs())
    assert plan.kernel == KERNELS.name(batch_major)


@needs_kernel
def test_other_steps_are_explained_where_the_framework_op_cannot_run():
    layer = _layer(
        activation="relu",
        recurrent_activation="hard_sigmoid",
        recurrent_dropout=0.5,
    )
    plan = keras_lstm.explain(layer, _inputs(), training=True)
    assert plan.reasons == ()
    if BACKEND == "torch":
        # torch's op fixes tanh and sigmoid: the note names the loop and
        # what the op cannot take.
        (note,) = [n for n in plan.notes if "torch loop" in n]
        for word in ("'relu'", "'hard_sigmoid'", "recurrent dropout"):
            assert word in note


def test_use_cudnn_false_is_the_only_layer_rule():
    layer = _layer(
        activation="relu",
        recurrent_activation="hard_sigmoid",
        recurrent_dropout=0.5,
        unroll=True,
        use_cudnn=False,
    )
    plan = keras_lstm.explain(layer, _inputs(), training=True)
    assert plan == keras_lstm.Plan(
        GENERIC, ("use_cudnn=False forces the keras.ops path",)
    )


@needs_kernel
def test_use_cudnn_true_names_every_failed_condition(monkeypatch):
    layer = _layer(activation="relu", unroll=True, use_cudnn=True)
    x = _inputs()
    reasons = ("the test says the device cannot", "and the dtype neither")
    monkeypatch.setattr(
        KERNELS, "unsupported", lambda inputs, cell=None: reasons
    )
    # explain() does not raise: it returns what the call raises with.
    plan = keras_lstm.explain(layer, x)
    assert plan == keras_lstm.Plan(GENERIC, reasons)
    calls = spy_on_kernel(monkeypatch)
    with pytest.raises(ValueError, match="use_cudnn=True") as error:
        helpers.call_layer(layer, x)
    message = str(error.value)
    assert layer.name in message
    for reason in reasons:
        assert reason in message
    assert not calls


@needs_kernel
def test_use_cudnn_true_takes_every_configuration(monkeypatch):
    # use_cudnn=True demands a kernel: every activation, recurrent dropout
    # and unroll have one.
    layer = _layer(
        recurrent_activation="hard_sigmoid",
        recurrent_dropout=0.5,
        unroll=True,
        use_cudnn=True,
    )
    for training in (False, True):
        _, fused = _run_and_explain(
            monkeypatch, layer, _inputs(), training=training
        )
        assert fused


# ---------------------------------------------------------------------------
# Imports: only the active backend's kernel module.

_IMPORT_SCRIPT = """
import json, sys
import keras
before = set(sys.modules)
import keras_lstm
added = sorted(set(sys.modules) - before)
print(json.dumps({"backend": keras.backend.backend(), "added": added}))
"""

_FRAMEWORKS = {
    "tensorflow": ("tensorflow",),
    "jax": ("jax", "jaxlib"),
    "torch": ("torch",),
}


def _modules_added(backend, script, timeout):
    """Runs `script` on `backend` in a fresh interpreter; the modules it
    reports it added (skips when the backend is not installed)."""
    if importlib.util.find_spec(_FRAMEWORKS[backend][0]) is None:
        pytest.skip(f"{backend} is not installed")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report["added"]


@pytest.mark.parametrize("backend", sorted(_FRAMEWORKS))
def test_import_adds_no_other_framework(backend):
    # A fresh interpreter: this one has every framework the suite touched.
    added = _modules_added(backend, _IMPORT_SCRIPT, timeout=120)
    # The measurement sees imports: the backend's own module is among them.
    assert f"keras_lstm.backend.{backend}" in added
    # Frameworks `import keras` already brought in are in the baseline, so
    # only what keras_lstm itself imports can show up here.
    others = [b for b in _FRAMEWORKS if b != backend]
    forbidden = {name for b in others for name in _FRAMEWORKS[b]}
    forbidden |= {f"keras_lstm.backend.{b}" for b in others}
    leaked = [
        m for m in added if m.split(".")[0] in forbidden or m in forbidden
    ]
    assert not leaked


_FIRST_CALL_SCRIPT = """
import json, sys
import numpy as np
import keras
import keras_lstm
before = set(sys.modules)
x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
x[1, 4:] = 0.0
model = keras.Sequential([
    keras.Input((None, 3)),
    keras.layers.Masking(),
    keras_lstm.LSTM(5, return_sequences=True, go_backwards=True),
    keras_lstm.LSTM(4),
    keras.layers.Dense(1),
])
model.compile(optimizer="adam", loss="mse")
model.predict_on_batch(x)
model.train_on_batch(x, np.zeros((4, 1), "float32"))
model.train_on_batch(x[:3, :5], np.zeros((3, 1), "float32"))
keras_lstm.explain(model.layers[2], x)
added = sorted(set(sys.modules) - before)
print(json.dumps({"backend": keras.backend.backend(), "added": added}))
"""


@pytest.mark.cross
@pytest.mark.parametrize("backend", sorted(_FRAMEWORKS))
def test_first_calls_import_no_other_framework(backend):
    # With every framework installed, building, calling and training a
    # model imports only the active backend's (TensorFlow, imported on
    # first use, takes seconds: it must not be paid on JAX or torch).
    # Not covered: keras.layers.Bidirectional's constructor, which Keras
    # writes with serialize_keras_object (it asks whether TensorFlow is
    # available, and so imports it), as does any get_config.
    added = _modules_added(backend, _FIRST_CALL_SCRIPT, timeout=300)
    others = {n for b in _FRAMEWORKS if b != backend for n in _FRAMEWORKS[b]}
    leaked = [m for m in added if m.split(".")[0] in others]
    assert not leaked, leaked[:5]


# ---------------------------------------------------------------------------
# Models: fit and predict take the fused path and learn what the generic
# path learns.


def _masked_model(use_cudnn, weights):
    model = keras.Sequential(
        [
            keras.Input((helpers.TIMESTEPS, helpers.FEATURES)),
            keras.layers.Masking(mask_value=0.0),
            keras_lstm.LSTM(helpers.UNITS, use_cudnn=use_cudnn),
            keras.layers.Dense(1),
        ]
    )
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@needs_kernel
def test_fit_and_predict_with_masking_use_the_fused_kernel(monkeypatch):
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng, batch=4)
    # Zero steps are masked by Masking: right padding and a hole.
    x[0, 3:] = 0.0
    x[1, 1] = 0.0
    x[2, :2] = 0.0
    y = rng.normal(size=(4, 1)).astype("float32")
    weights = helpers.random_weights(rng) + [
        rng.normal(size=(helpers.UNITS, 1)).astype("float32"),
        np.zeros(1, "float32"),
    ]
    generic = _masked_model(False, weights)
    generic.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    want = generic.predict(x, batch_size=2, verbose=0)

    fused = _masked_model("auto", weights)
    calls = spy_on_kernel(monkeypatch)
    history = fused.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert calls, "fit did not run the fused kernel"
    # Every call saw lengths: the mask reached the kernel.
    assert all(args[3] is not None for args in calls)
    assert np.all(np.isfinite(history.history["loss"]))
    seen = len(calls)
    got = fused.predict(x, batch_size=2, verbose=0)
    assert len(calls) > seen, "predict did not run the fused kernel"

    # The same training on both paths: same weights, same predictions.
    for a, b in zip(fused.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fused.get_weights()[0], weights[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("hides", [False, True])
def test_jit_is_declined_where_xla_would_hide_the_fused_kernel(
    monkeypatch, hides
):
    # As keras.layers.LSTM on a TensorFlow GPU: cuDNN has no XLA form, so
    # the layer tells Keras not to jit-compile the model; use_cudnn=False
    # asks for no fused kernel, so nothing is lost (unless the keras.ops
    # path itself cannot be compiled: TensorFlow, test_jit_compile.py).
    kernels = keras_lstm.backend.kernels
    monkeypatch.setattr(kernels, "xla_hides_fused", lambda: hides)
    assert keras_lstm.LSTM(4).supports_jit is not hides
    generic = keras_lstm.LSTM(4, use_cudnn=False)
    assert generic.supports_jit is kernels.scan_runs_under_xla()
    model = keras.Sequential([keras.Input((5, 3)), keras_lstm.LSTM(4)])
    model.compile(loss="mse", jit_compile="auto")
    if hides:
        assert model.jit_compile is False


def test_explain_refuses_other_layers():
    with pytest.raises(TypeError, match="keras_lstm.LSTM or a Bidirectional"):
        keras_lstm.explain(keras.layers.LSTM(3), _inputs())


def test_the_dispatch_hook_imports_no_layer():
    # The layers import the hook; the hook reads them through their
    # attributes, so the package has no import circle.
    import ast

    source = pathlib.Path(keras_lstm.dispatch.__file__).read_text()
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert (
        not {
            "keras_lstm.layer",
            "keras_lstm.bidirectional",
            "keras_lstm.explain",
            "keras_lstm",
        }
        & imported
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch meta tensors")
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    "layer_kwargs",
    [
        {},
        {"return_sequences": True, "return_state": True},
        {"return_state": True, "go_backwards": True, "time_major": True},
    ],
)
def test_torch_meta_tensors_get_shapes_without_a_loop(
    monkeypatch, layer_kwargs, masked
):
    # Keras infers shapes by calling layers on meta tensors: building a
    # model, and again in the first train step. Those calls get their
    # shapes from the fused kernel at no cost, never from the keras.ops
    # loop stepping through meta tensors (60 ms of a first train step).
    import torch

    layer = keras_lstm.LSTM(helpers.UNITS, **layer_kwargs)
    x = _inputs()
    if layer.time_major:
        x = np.swapaxes(x, 0, 1)
    mask = helpers.make_mask("holes") if masked else None
    if layer.time_major and masked:
        mask = np.swapaxes(mask, 0, 1)
    want = helpers.call_layer(layer, x, mask=mask)

    def loop(*args, **kwargs):
        raise AssertionError("the keras.ops loop ran on meta tensors")

    monkeypatch.setattr(keras_lstm.ops, "lstm", loop)
    meta_x = torch.empty(x.shape, device="meta")
    meta_mask = None
    if masked:
        meta_mask = torch.empty(mask.shape, dtype=torch.bool, device="meta")
    assert KERNELS.name(meta_x) == "torch-meta"
    with keras.device("meta"):  # as Keras's compute_output_spec calls it
        got = layer(meta_x, mask=meta_mask)
    got, want = keras.tree.flatten(got), keras.tree.flatten(want)
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    assert all(g.device.type == "meta" for g in got)
    assert [g.dtype for g in got] == [w.dtype for w in want]


@pytest.mark.skipif(BACKEND != "torch", reason="torch meta tensors")
def test_torch_first_train_step_runs_no_keras_ops_loop(monkeypatch):
    calls = []
    real = keras_lstm.ops.lstm

    def spy(*args, **kwargs):
        calls.append(args[0].device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras_lstm.ops, "lstm", spy)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Masking(),
            keras_lstm.Bidirectional(keras_lstm.LSTM(4, return_sequences=True)),
            keras_lstm.LSTM(4),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((2, 5, 3), "float32")
    x[0, 3:] = 0.0  # masked steps
    model.train_on_batch(x, np.ones((2, 1), "float32"))
    model.predict_on_batch(x)
    assert calls == []
