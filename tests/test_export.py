"""Export for serving: TensorFlow SavedModel, torch.export and ONNX."""

import importlib.util

import keras
import numpy as np
import pytest

import keras_lstm

BACKEND = keras.backend.backend()


def _model_and_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    x[1, 3:] = 0.0  # masked by the Masking layer: the mask path is exported
    inputs = keras.Input((5, 3))
    masked = keras.layers.Masking()(inputs)
    seq = keras_lstm.LSTM(4, return_sequences=True, go_backwards=True)(masked)
    last = keras_lstm.LSTM(3)(seq)
    return keras.Model(inputs, last), x


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow export")
@pytest.mark.parametrize(
    "exported_where", ["cpu_only", "where_cuda_is_visible"]
)
def test_tf_saved_model_reloads_and_matches(
    tmp_path, monkeypatch, exported_where
):
    import tensorflow as tf

    from keras_lstm.backend import tensorflow as tf_kernels

    model, x = _model_and_inputs()
    expected = keras.ops.convert_to_numpy(model(x))
    with monkeypatch.context() as patch:
        if exported_where == "where_cuda_is_visible":
            # As if TensorFlow saw a GPU while exporting.
            patch.setattr(tf_kernels, "_on_gpu", lambda: True)
        model.export(str(tmp_path / "saved"), format="tf_saved_model")
    # Exported where a GPU is visible, the artefact carries the GPU kernel
    # behind a device switch (see test_tensorflow_kernel.py) and still runs
    # here, on CPU: the kernel is chosen when the op runs, by its device.
    # Exported on a CPU-only machine, it carries the loop alone.
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "saved" / "saved_model.pb").read_bytes())
    ops = {
        node.op
        for graph in saved.meta_graphs
        for function in graph.graph_def.library.function
        for node in function.node_def
    }
    has_cudnn = {"DeviceIndex", "CudnnRNNV3"} <= ops
    assert has_cudnn == (exported_where == "where_cuda_is_visible")
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(
        reloaded.serve(x).numpy(), expected, rtol=1e-5, atol=1e-6
    )


def _needs_symbolic_sizes():
    from tests import helpers

    if not helpers.keras_keeps_symbolic_sizes():
        pytest.skip(
            f"Keras {keras.version()} fixes a dynamic size torch.export "
            "traces (standardize_shape calls int() on it)"
        )


@pytest.mark.skipif(BACKEND != "torch", reason="torch export")
def test_torch_export_keeps_torch_lstm_op_and_matches():
    # The fused kernel's exportable form: one aten.lstm per layer, with a
    # dynamic batch and length; masks included (their valid steps moved to
    # the front).
    import torch

    _needs_symbolic_sizes()
    model, x = _model_and_inputs()
    expected = keras.ops.convert_to_numpy(model(x))
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model, (torch.from_numpy(x),), dynamic_shapes=(({0: batch},),)
    )
    targets = [str(n.target) for n in program.graph.nodes]
    assert sum("aten.lstm" in t for t in targets) == 2, targets
    actual = program.module()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # Another batch size than the one traced.
    x3 = np.concatenate([x, x[:1]])
    actual = program.module()(torch.from_numpy(x3)).detach().numpy()
    np.testing.assert_allclose(
        actual,
        keras.ops.convert_to_numpy(model(x3)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch export")
def test_torch_export_with_a_dynamic_time_axis():
    # aten.lstm fixes the length to the traced one under torch.export (its
    # shapes come from a decomposition that loops over the steps; so does
    # torch.nn.LSTM's): with a dynamic time axis the exportable form runs
    # as keras_lstm's own op, torch's LSTM op inside. Masks with holes
    # included.
    import torch

    _needs_symbolic_sizes()

    inputs = keras.Input((None, 3))
    masked = keras.layers.Masking()(inputs)
    seq = keras_lstm.LSTM(4, return_sequences=True, go_backwards=True)(masked)
    model = keras.Model(inputs, keras_lstm.LSTM(3)(seq))
    x = np.random.default_rng(4).normal(size=(2, 5, 3)).astype("float32")
    x[1, 3:] = 0.0
    model(x)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
    program = torch.export.export(
        model, (torch.from_numpy(x),), dynamic_shapes=((dims,),)
    )
    targets = [str(n.target) for n in program.graph.nodes]
    assert targets.count("keras_lstm.lstm.default") == 2, targets
    x = np.random.default_rng(5).normal(size=(3, 9, 3)).astype("float32")
    x[1, 6:] = 0.0
    x[2, :2] = 0.0
    np.testing.assert_allclose(
        program.module()(torch.from_numpy(x)).detach().numpy(),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch export")
def test_exporting_reports_the_export_form(monkeypatch):
    # torch.export and torch.jit.trace (torch.onnx) run the kernel's
    # exportable form; torch.compile keeps the fused op, outside the
    # compiled graph (test_jit_compile.py runs one).
    import torch

    layer = keras_lstm.LSTM(4)
    x = np.zeros((2, 5, 3), "float32")
    layer(x)
    assert keras_lstm.explain(layer, x).kernel not in (
        "generic",
        "torch-export",
    )
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    plan = keras_lstm.explain(layer, x)
    assert plan.kernel != "generic"
    assert any("graph break" in n for n in plan.notes)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    plan = keras_lstm.explain(layer, x)
    assert plan.kernel == "torch-export"
    assert not plan.reasons
    assert any("ONNX" in n for n in plan.notes)
    assert not any("graph break" in n for n in plan.notes)


# The package each backend's ONNX export goes through (Keras's
# model.export(format="onnx")).
_ONNX_EXPORTERS = {
    "tensorflow": ("tf2onnx",),
    "torch": ("onnxscript",),
    "jax": ("jax2onnx",),
}


def _onnx_export_missing():
    needed = ("onnx", "onnxruntime", *_ONNX_EXPORTERS.get(BACKEND, ("-",)))
    return [m for m in needed if importlib.util.find_spec(m) is None]


needs_onnx = pytest.mark.skipif(
    bool(_onnx_export_missing()),
    reason=f"ONNX export on {BACKEND} needs {_onnx_export_missing()}",
)


def _run_onnx(path, *inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs, strict=True)))


@needs_onnx
def test_onnx_export_runs_in_onnxruntime(tmp_path):
    # Static timesteps: on TensorFlow, tf2onnx once typed the loop's bound
    # int64 outside the Loop and int32 inside it, and ONNX Runtime refused
    # the file ("Tensor element type mismatch. 7 != 6").
    model, x = _model_and_inputs()
    expected = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    actual = _run_onnx(path, x)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def _sequences_and_states():
    """return_sequences and return_state, initial states as inputs."""
    inputs = keras.Input((None, 3))
    h0, c0 = keras.Input((4,)), keras.Input((4,))
    outputs = keras_lstm.LSTM(4, return_sequences=True, return_state=True)(
        inputs, initial_state=[h0, c0]
    )
    return keras.Model([inputs, h0, c0], outputs)


def _sequential(*layers):
    return keras.Sequential([keras.Input((None, 3)), *layers])


# Each configuration, and the ONNX op its export runs the LSTM as on each
# backend: ONNX's LSTM where the exporter reaches it, else a Loop.
_CONFIGURATIONS = {
    "last_output": (
        lambda: _sequential(keras_lstm.LSTM(4), keras.layers.Dense(2)),
        {"tensorflow": "LSTM", "torch": "LSTM", "jax": "Loop"},
    ),
    "sequences_and_states": (
        _sequences_and_states,
        {"tensorflow": "LSTM", "torch": "LSTM", "jax": "Loop"},
    ),
    "go_backwards_no_bias": (
        lambda: _sequential(
            keras_lstm.LSTM(
                4, go_backwards=True, use_bias=False, return_sequences=True
            )
        ),
        {"tensorflow": "LSTM", "torch": "LSTM", "jax": "Loop"},
    ),
    "bidirectional": (
        lambda: _sequential(keras_lstm.Bidirectional(keras_lstm.LSTM(4))),
        {"tensorflow": "LSTM", "torch": "LSTM", "jax": "Loop"},
    ),
    # Recurrent dropout is off in inference: the standard step exports.
    "recurrent_dropout": (
        lambda: _sequential(keras_lstm.LSTM(4, recurrent_dropout=0.5)),
        {"tensorflow": "LSTM", "torch": "LSTM", "jax": "Loop"},
    ),
    # A mask that is not right-padded in the data: the loop selects per
    # step (TensorFlow), or the valid steps move to the front first.
    "masked": (
        lambda: _sequential(keras.layers.Masking(), keras_lstm.LSTM(4)),
        {"tensorflow": "Loop", "torch": "LSTM", "jax": "Loop"},
    ),
}


@needs_onnx
@pytest.mark.parametrize("configuration", sorted(_CONFIGURATIONS))
def test_onnx_export_runs_the_lstm_op_and_matches(tmp_path, configuration):
    import onnx

    build, ops = _CONFIGURATIONS[configuration]
    model = build()
    rng = np.random.default_rng(1)
    # Another batch size and length than the export traced with: dynamic
    # axes.
    x = rng.normal(size=(3, 6, 3)).astype("float32")
    x[1, :2] = 0.0  # masked at the front, for the Masking layer
    x[2, 4:] = 0.0  # and at the back
    inputs = [x]
    if len(model.inputs) == 3:
        inputs += [rng.normal(size=(3, 4)).astype("float32")] * 2
    expected = model.predict(inputs if len(inputs) > 1 else x, verbose=0)
    if not isinstance(expected, (list, tuple)):
        expected = [expected]
    model(inputs if len(inputs) > 1 else x)  # JAX's export wants a call
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    graph = onnx.load(path).graph
    op_types = {n.op_type for n in graph.node}
    assert ops[BACKEND] in op_types
    for actual, wanted in zip(_run_onnx(path, *inputs), expected, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-6)


@needs_onnx
@pytest.mark.parametrize("timesteps", [None, 6])
def test_onnx_export_of_another_activation(tmp_path, timesteps):
    # hard_sigmoid: a loop on TensorFlow and JAX (tf2onnx does not map
    # Keras's hard_sigmoid onto ONNX's). On torch the keras.ops loop runs,
    # which the TorchScript exporter unrolls for the traced length: with a
    # dynamic time axis the export is refused, naming the layer, rather
    # than written as a file that fails at other lengths.
    import onnx

    layer = keras_lstm.LSTM(4, recurrent_activation="hard_sigmoid")
    model = keras.Sequential([keras.Input((timesteps, 3)), layer])
    x = np.random.default_rng(6).normal(size=(2, 6, 3)).astype("float32")
    model(x)
    path = str(tmp_path / "model.onnx")
    if BACKEND == "torch" and timesteps is None:
        with pytest.raises(ValueError, match=f"'{layer.name}' cannot be exp"):
            model.export(path, format="onnx", verbose=False)
        return
    model.export(path, format="onnx", verbose=False)
    if BACKEND != "torch":
        assert "Loop" in {n.op_type for n in onnx.load(path).graph.node}
    np.testing.assert_allclose(
        _run_onnx(path, x)[0],
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def _tflite(model, quantize=False):
    """The model converted by TFLite's converter (its flatbuffer), its
    interpreter, and a function that runs it there."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own, deprecated but in TF 2.21
        Interpreter = tf.lite.Interpreter

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (given,), (taken,) = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )

    def run(x):
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(taken["index"])

    return flatbuffer, interpreter, run


# Batch 1 and a fixed length, as TFLite serves: the layer's loop becomes
# one WHILE op (benchmarks/tflite_latency.py times it against
# keras.layers.LSTM's).
_TFLITE_CONFIGURATIONS = {
    "last_output": {},
    "sequences_go_backwards": {"return_sequences": True, "go_backwards": True},
    "masked": {"masked": True},
}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TFLite: TensorFlow")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("configuration", sorted(_TFLITE_CONFIGURATIONS))
def test_tflite_converts_and_matches(configuration):
    options = dict(_TFLITE_CONFIGURATIONS[configuration])
    inputs = keras.Input((6, 3), batch_size=1)
    x = keras.layers.Masking()(inputs) if options.pop("masked", 0) else inputs
    model = keras.Model(inputs, keras_lstm.LSTM(4, **options)(x))
    x = np.random.default_rng(2).normal(size=(1, 6, 3)).astype("float32")
    x[:, 4:] = 0.0  # masked, where the Masking layer is
    _, interpreter, run = _tflite(model)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "WHILE" in ops, ops
    np.testing.assert_allclose(
        run(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TFLite: TensorFlow")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_dynamic_range_quantization_converts_and_runs():
    # Weights of 1,024 elements or more are stored as int8 (the converter
    # leaves smaller ones in float): the file shrinks to about a quarter.
    model = keras.Sequential(
        [keras.Input((10, 32), batch_size=1), keras_lstm.LSTM(64)]
    )
    x = np.random.default_rng(3).normal(size=(1, 10, 32)).astype("float32")
    floats = 4 * sum(w.size for w in model.get_weights())
    flatbuffer, _, run = _tflite(model, quantize=True)
    assert len(flatbuffer) < floats / 2
    np.testing.assert_allclose(
        run(x), model.predict(x, verbose=0), rtol=0, atol=0.05
    )
