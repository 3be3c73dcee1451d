"""The TensorFlow kernel inside graphs: the device switch and its gradient.

Keras fit, predict and export trace the layer into a graph, where the kernel
is chosen when the op runs, by its device: CudnnRNNV3 on a GPU, the XLA loop
elsewhere. Eager calls run one branch directly, so these tests trace.
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


def test_graph_carries_the_cudnn_kernel_behind_a_device_switch():
    # On this CPU-only machine the traced graph still holds cuDNN, forward
    # and backward, behind a DeviceIndex switch: what makes a SavedModel
    # exported on a GPU machine run on CPU (test_export.py runs one).
    import tensorflow as tf

    layer = keras_lstm.LSTM(4)
    x = tf.zeros((2, 5, 3))
    layer(x)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.trainable_variables)

    graph = train_step.get_concrete_function(x).graph.as_graph_def()
    ops = _graph_ops(graph)
    assert {"DeviceIndex", "CudnnRNNV3", "CudnnRNNBackpropV3"} <= ops


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
    """Records which compiled form of the XLA loop each trace uses."""
    from keras_lstm.backend import tensorflow as tf_kernels

    used = []
    for form in ("_forward", "_infer"):
        real = getattr(tf_kernels, form)

        def spy(*args, _real=real, _form=form):
            used.append(_form)
            return _real(*args)

        monkeypatch.setattr(tf_kernels, form, spy)
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
    assert used and set(used) == {"_infer"}
    used.clear()
    model.fit(x, y, epochs=1, verbose=0)
    assert used and set(used) == {"_forward"}


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
        assert used == ["_forward"]
    else:
        assert used == ["_infer", "_forward"]
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
