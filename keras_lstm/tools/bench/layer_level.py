"""The benchmark's `layer` workload: keras_lstm.LSTM and keras.layers.LSTM
called directly on device tensors, forward and forward+backward, as a Keras
train step runs them on each backend (a jitted `stateless_call` on JAX, a
tf.function on TensorFlow, eager calls on torch), next to torch.nn.LSTM.
See workloads.py for the list of workloads.
"""

import json
import sys

import numpy as np

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.contenders import (
    lstm_class,
    tensors,
    to_device,
    torch_forward,
)
from keras_lstm.tools.bench.util import time_alternating, torch_module

# -- the layer on device tensors ----------------------------------------------

LAYER_MODES = ("forward", "forward+backward")


def _jax_layer_runners(layer, x, mask):
    """Jitted, as a Keras train step runs the layer: `stateless_call`, and
    jax.value_and_grad of the sum of its outputs with respect to the
    weights and the inputs."""
    import jax
    import jax.numpy as jnp

    args = (
        [v.value for v in layer.trainable_variables],
        [v.value for v in layer.non_trainable_variables],
        jnp.asarray(x),
        None if mask is None else jnp.asarray(mask),
    )

    def call(training):
        def run(trainable, non_trainable, x, mask):
            return layer.stateless_call(
                trainable, non_trainable, x, mask=mask, training=training
            )[0]

        return run

    def loss(*args):
        return jnp.sum(call(True)(*args))

    forward = jax.jit(call(False))
    gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
    return {
        "forward": lambda: jax.block_until_ready(forward(*args)),
        "forward+backward": lambda: jax.block_until_ready(gradient(*args)),
    }


def _tensorflow_layer_runners(layer, x, mask, on_gpu):
    """tf.functions, as a Keras train step runs the layer: the call, and
    a GradientTape of the sum of its outputs with respect to the inputs
    and the weights."""
    import tensorflow as tf

    x = tf.identity(tf.constant(x))  # on the default device
    mask = None if mask is None else tf.identity(tf.constant(mask))
    weights = layer.trainable_variables

    @tf.function
    def forward():
        return layer(x, mask=mask)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, mask=mask, training=True))
        return loss, tape.gradient(loss, [x, *weights])

    def synced(fn):
        def run():
            out = fn()
            if on_gpu:  # a GPU runs TensorFlow's ops asynchronously
                tf.test.experimental.sync_devices()
            return out

        return run

    return {
        "forward": synced(forward),
        "forward+backward": synced(forward_backward),
    }


def _torch_backend_layer_runners(layer, x, mask):
    """Eager calls, as a Keras train step runs the layer on torch: under
    no_grad, and autograd of the sum of the outputs with respect to the
    inputs and the weights (util.sync waits for CUDA)."""
    import keras

    torch = sys.modules["torch"]  # the backend (even without the column)
    x = keras.ops.convert_to_tensor(x)  # on Keras' device
    mask = None if mask is None else keras.ops.convert_to_tensor(mask)
    x_grad = x.clone().requires_grad_()
    # The torch Parameters the layer computes with.
    weights = [v.value for v in layer.trainable_variables]

    def forward():
        with torch.no_grad():
            return layer(x, mask=mask)

    def forward_backward():
        loss = layer(x_grad, mask=mask, training=True).sum()
        return torch.autograd.grad(loss, [x_grad, *weights])

    return {"forward": forward, "forward+backward": forward_backward}


def _torch_nn_layer_runners(lstm, x, mask_kind, mask):
    """torch.nn.LSTM (cuDNN on a GPU) on the device: under no_grad, and
    autograd of the sum of the outputs with respect to the inputs and the
    weights; right-padded masks as a packed sequence."""
    torch = torch_module()
    lstm = to_device(lstm)
    (x,) = tensors(x)
    x_grad = x.clone().requires_grad_()
    lengths = None
    if mask_kind == "right":
        lengths = torch.from_numpy(mask.sum(1))
    forward = torch_forward(lstm, lengths, x.shape[1])
    weights = list(lstm.parameters())

    def run_forward():
        with torch.no_grad():
            return forward(x)

    def run_forward_backward():
        loss = forward(x_grad).sum()
        return torch.autograd.grad(loss, [x_grad, *weights])

    return {"forward": run_forward, "forward+backward": run_forward_backward}


def layer(backend, repeats, shapes=("main", "large", "xlarge")):
    """The layer called directly on device tensors (see the module
    docstring); shapes in `util.GPU_SHAPES` only on a GPU."""
    import keras_lstm
    from keras_lstm import convert

    torch = torch_module()
    on_gpu = util.device(backend)[1]
    rows = []
    for shape_name in shapes:
        if shape_name in util.GPU_SHAPES and not on_gpu:
            print(f"layer: {shape_name} skipped (GPU only)", file=sys.stderr)
            continue
        batch, timesteps, features, units = util.ALL_SHAPES[shape_name]
        rng = np.random.default_rng(7)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        layers = {}
        for contender in ("keras", "keras_lstm"):
            layers[contender] = lstm_class(contender)(
                units, return_sequences=True
            )
            layers[contender].build((batch, timesteps, features))
        layers["keras_lstm"].set_weights(layers["keras"].get_weights())
        for mask_kind, mask in util.masks(batch, timesteps, rng).items():
            runners = {}
            for contender, built in layers.items():
                if backend == "jax":
                    runners[contender] = _jax_layer_runners(built, x, mask)
                elif backend == "tensorflow":
                    runners[contender] = _tensorflow_layer_runners(
                        built, x, mask, on_gpu
                    )
                else:
                    runners[contender] = _torch_backend_layer_runners(
                        built, x, mask
                    )
            if torch is not None and mask_kind != "holes":
                runners["torch.nn"] = _torch_nn_layer_runners(
                    convert.to_torch(layers["keras_lstm"]), x, mask_kind, mask
                )
            kernel = keras_lstm.explain(layers["keras_lstm"], x, mask).kernel
            for mode in LAYER_MODES:
                medians = time_alternating(
                    {c: r[mode] for c, r in runners.items()}, repeats
                )
                rows.append(
                    {
                        "backend": backend,
                        "level": "layer",
                        "shape": shape_name,
                        "mode": mode,
                        "mask": mask_kind,
                        "kernel": kernel,
                        **medians,
                    }
                )
                # As they come (a long run that is cut short keeps them).
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows
