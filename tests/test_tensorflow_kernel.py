"""The TensorFlow kernel inside graphs: the device switch and its gradient.

Keras fit, predict and export trace the layer into a graph. Where TensorFlow
sees a GPU, the kernel is chosen when the op runs, by its device: CudnnRNNV3
on a GPU, the loop elsewhere. Eager calls run one branch directly, so these
tests trace.
"""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers
from tests.test_fused_parity import forward, layer_pair, loss_fn

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow kernel"
)


def _graph_ops(graph_def):
    """Every op type in a GraphDef, its function library included."""
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


@pytest.mark.parametrize("gpu_visible", [False, True])
def test_graph_carries_the_cudnn_kernel_where_a_gpu_is_visible(
    monkeypatch, gpu_visible
):
    # Traced where TensorFlow sees a GPU (simulated here), the graph holds
    # cuDNN, forward and backward, behind a DeviceIndex switch: what makes a
    # SavedModel exported on a GPU machine run on CPU (test_export.py runs
    # one), and the switch picks the loop on this CPU. Where no GPU is
    # visible, the graph holds the loop alone (half the tracing).
    import tensorflow as tf

    from keras_lstm.backend import tensorflow as tf_kernels

    rng = np.random.default_rng(3)
    weights = helpers.random_weights(rng)
    fused, generic = layer_pair(weights)
    x = tf.constant(helpers.random_inputs(rng))
    monkeypatch.setattr(tf_kernels, "_on_gpu", lambda: gpu_visible)

    def train_step(layer):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x))
            return loss, tape.gradient(loss, layer.trainable_variables)

        return step

    step = train_step(fused)
    graph = step.get_concrete_function(x).graph.as_graph_def()
    switched = {"DeviceIndex", "CudnnRNNV3", "CudnnRNNBackpropV3"}
    if gpu_visible:
        assert switched <= _graph_ops(graph)
    else:
        assert not switched & _graph_ops(graph)
    for got, want in zip(
        tf.nest.flatten(step(x)),
        tf.nest.flatten(train_step(generic)(x)),
        strict=True,
    ):
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), rtol=helpers.RTOL, atol=helpers.ATOL
        )


def test_cudnn_unpack_is_the_gradient_of_pack():
    import tensorflow as tf

    from keras_lstm.backend import tensorflow as tf_kernels

    rng = np.random.default_rng(1)
    features, units = 3, 2
    weights = [
        tf.constant(rng.normal(size=s), tf.float32)
        for s in ((features, 4 * units), (units, 4 * units), (4 * units,))
    ]
    size = 4 * units * (features + units + 2)
    cotangent = tf.constant(rng.normal(size=size), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(weights)
        packed = tf_kernels._pack(*weights)
        loss = tf.reduce_sum(packed * cotangent)
    assert packed.shape == (size,)
    want = tape.gradient(loss, weights)
    got = tf_kernels._unpack(cotangent, features, units)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    # The layout itself: gate i's input weights, transposed, come first.
    np.testing.assert_array_equal(
        packed[: units * features].numpy(),
        weights[0].numpy()[:, :units].T.ravel(),
    )


def _spy_on_forms(monkeypatch):
    """Records which forward form of the loop ("train" or "infer") each
    trace runs."""
    from keras_lstm.backend import tensorflow as tf_kernels

    used = []
    real = tf_kernels._run

    def spy(form, *args, **kwargs):
        # The forms by key: ("train" or "infer", sequence, step), or
        # ("backward", step).
        (key,) = [k for k, f in tf_kernels._FORMS.items() if f is form]
        if key[0] != "backward":
            used.append(key[0])
        return real(form, *args, **kwargs)

    monkeypatch.setattr(tf_kernels, "_run", spy)
    return used


def test_predict_runs_the_inference_form_and_fit_the_training_form(
    monkeypatch,
):
    # Without a recording tape nothing is kept for a backward pass.
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    y = rng.normal(size=(helpers.BATCH, helpers.UNITS)).astype("float32")
    model = keras.Sequential(
        [keras.Input((helpers.TIMESTEPS, helpers.FEATURES)), keras_lstm.LSTM(4)]
    )
    model.compile(optimizer="sgd", loss="mse")
    used = _spy_on_forms(monkeypatch)
    model.predict(x, verbose=0)
    assert used and set(used) == {"infer"}
    used.clear()
    model.fit(x, y, epochs=1, verbose=0)
    assert used and set(used) == {"train"}


@pytest.mark.parametrize("mask_kind", ["none", "holes", "full_row"])
@pytest.mark.parametrize("how", ["tape", "tf.gradients"])
def test_gradients_in_a_graph_match_generic(monkeypatch, how, mask_kind):
    # Under a tape (Keras fit) the training form runs; tf.gradients records
    # no tape, so the inference form runs and its gradient recomputes the
    # training form.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True
    )
    expected = forward(generic, x, state, mask)
    cotangents = [rng.normal(size=e.shape) for e in expected]
    arguments = [tf.constant(a, tf.float32) for a in [x, *state, *weights]]

    def graph_gradients(layer):
        fn = loss_fn(layer, mask, cotangents, with_state=True)

        @tf.function
        def gradients(*tensors):
            if how == "tf.gradients":
                return tf.gradients(fn(*tensors), tensors)
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                loss = fn(*tensors)
            return tape.gradient(loss, tensors)

        return [g.numpy() for g in gradients(*arguments)]

    want = graph_gradients(generic)
    used = _spy_on_forms(monkeypatch)
    got = graph_gradients(fused)
    if how == "tape":
        assert used == ["train"]
    else:
        assert used == ["infer", "train"]
    for g, w in zip(got, want, strict=True):
        assert np.any(w != 0)
        np.testing.assert_allclose(g, w, rtol=helpers.ATOL, atol=helpers.ATOL)

    outputs = tf.function(
        lambda x, h, c, m: fused(x, initial_state=[h, c], mask=m)
    )(
        arguments[0],
        arguments[1],
        arguments[2],
        tf.constant(np.ones((x.shape[:2]), bool) if mask is None else mask),
    )
    helpers.assert_close([o.numpy() for o in outputs], expected)


def test_new_lengths_and_batch_sizes_trace_nothing_new(monkeypatch):
    # Dynamic padding: every batch has its own length (and the last batch
    # is partial). The loop is traced once per form for any batch size and
    # length, and nothing is XLA-compiled, so new shapes cost nothing.
    from keras_lstm.backend import tensorflow as tf_kernels

    traces = []
    real = tf_kernels._loop

    def spy(*args, saves, sequence, cell):
        traces.append(("train" if saves else "infer", sequence))
        return real(*args, saves=saves, sequence=sequence, cell=cell)

    monkeypatch.setattr(tf_kernels, "_loop", spy)
    # A layer size no other test uses: its forms are traced here first.
    model = keras.Sequential(
        [keras.Input((None, 5)), keras_lstm.LSTM(7), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(4)
    for i, timesteps in enumerate(range(3, 23)):
        batch = 4 if i < 19 else 3  # a partial last batch
        x = rng.normal(size=(batch, timesteps, 5)).astype("float32")
        model.train_on_batch(x, np.zeros((batch, 1), "float32"))
        model.predict_on_batch(x)
    # The last output only: the forms that keep no sequence of outputs.
    assert sorted(traces) == [("infer", False), ("train", False)]
    assert not any(f._jit_compile for f in tf_kernels._FORMS.values()), (
        "the loop must not be XLA-compiled per shape"
    )


def test_jit_compile_runs_the_loop_inside_xla():
    # model.compile(jit_compile=True): Keras XLA-compiles the whole step and
    # the loop is compiled with it; the numbers stay the generic path's
    # (run without XLA: keras.ops.scan has no XLA gradient on TensorFlow).
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng)
    y = rng.normal(size=(helpers.BATCH, 1)).astype("float32")
    models = []
    for use_cudnn in ("auto", False):
        model = keras.Sequential(
            [
                keras.Input((None, helpers.FEATURES)),
                keras_lstm.LSTM(4, use_cudnn=use_cudnn),
                keras.layers.Dense(1),
            ]
        )
        model.compile(
            optimizer="sgd", loss="mse", jit_compile=use_cudnn == "auto"
        )
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    assert models[0].jit_compile
    for model in models:
        model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    for got, want in zip(
        models[0].get_weights(), models[1].get_weights(), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        models[0].predict(x, verbose=0),
        models[1].predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
