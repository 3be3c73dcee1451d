"""TensorFlow fused LSTM: CudnnRNNV3 on GPU, a graph while_loop elsewhere.

The CPU loop is a tf.function without jit_compile of its own: Keras compiles
the whole train / predict step with XLA (jit_compile="auto"), and an inner
XLA function would break gradients there (TensorLists cannot cross the
XLA/TF boundary).
"""

import tensorflow as tf

_LOOP_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_CUDNN_DTYPES = (tf.float16, tf.float32, tf.float64)


def _on_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def name(inputs) -> str:
    return "tensorflow-cudnn" if _on_gpu() else "tensorflow-while"


def unsupported(inputs) -> tuple[str, ...]:
    dtypes = _CUDNN_DTYPES if _on_gpu() else _LOOP_DTYPES
    if inputs.dtype not in dtypes:
        return (f"the {name(inputs)} kernel does not take {inputs.dtype.name}",)
    return ()


def _cudnn(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    batch, timesteps = tf.shape(inputs)[0], tf.shape(inputs)[1]
    if lengths is None:
        lengths = tf.fill([batch], timesteps)
    # cuDNN's canonical layout: per gate (i, f, c, o, as in Keras) the
    # transposed input weights, then the recurrent ones, then the input
    # biases and the recurrent biases. Keras has one bias; the recurrent
    # set is zero.
    weights = tf.split(kernel, 4, axis=1) + tf.split(recurrent_kernel, 4, 1)
    params = tf.concat(
        [tf.reshape(tf.transpose(w), [-1]) for w in weights]
        + [bias, tf.zeros_like(bias)],
        axis=0,
    )
    sequence, h, c, _, _ = tf.raw_ops.CudnnRNNV3(
        input=inputs,
        input_h=h0[:, None],
        input_c=c0[:, None],
        params=params,
        sequence_lengths=tf.cast(lengths, tf.int32),
        rnn_mode="lstm",
        is_training=True,
        time_major=False,
    )
    return sequence, h[:, 0], c[:, 0]


@tf.function(autograph=False, reduce_retracing=True)
def _loop(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    timesteps = inputs.shape[1] or tf.shape(inputs)[1]
    # Steps are read from a TensorArray (its gradient is a scatter, where a
    # slice of a captured tensor would add a dense (timesteps, ...) tensor
    # per step), and each step projects its own input: under XLA on CPU
    # that is 2x faster on predict than one hoisted matmul (benchmarks/).
    steps = tf.TensorArray(inputs.dtype, size=timesteps).unstack(
        tf.transpose(inputs, (1, 0, 2))
    )

    def body(t, h, c, sequence):
        z = steps.read(t) @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h_new = tf.sigmoid(o) * tf.tanh(c_new)
        if lengths is not None:
            # Past a row's length the states stay: they end as the states
            # after its last valid step.
            valid = (t < lengths)[:, None]
            h_new = tf.where(valid, h_new, h)
            c_new = tf.where(valid, c_new, c)
        return t + 1, h_new, c_new, sequence.write(t, h_new)

    sequence = tf.TensorArray(inputs.dtype, size=timesteps)
    _, h, c, sequence = tf.while_loop(
        lambda t, *_: t < timesteps,
        body,
        (0, h0, c0, sequence),
        maximum_iterations=timesteps,
    )
    return tf.transpose(sequence.stack(), (1, 0, 2)), h, c


def lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    if _on_gpu():
        return _cudnn(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias)
    # Tensors, not variables: the function is shared by every layer, and a
    # traced variable argument outlives its layer.
    weights = [
        tf.convert_to_tensor(w) for w in (kernel, recurrent_kernel, bias)
    ]
    return _loop(inputs, h0, c0, lengths, *weights)
