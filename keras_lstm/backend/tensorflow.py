"""TensorFlow fused LSTM: CudnnRNNV3 on GPU, XLA-compiled forward and
backward loops elsewhere."""

import tensorflow as tf

_XLA_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_CUDNN_DTYPES = (tf.float16, tf.float32, tf.float64)


def _on_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def name(inputs) -> str:
    return "tensorflow-cudnn" if _on_gpu() else "tensorflow-xla"


def unsupported(inputs) -> tuple[str, ...]:
    dtypes = _CUDNN_DTYPES if _on_gpu() else _XLA_DTYPES
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


_xla = tf.function(jit_compile=True, autograph=False, reduce_retracing=True)


def _time_major(x):
    return tf.transpose(x, (1, 0, 2))


@_xla
def _forward(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    """Runs the LSTM; also returns what the backward pass needs."""
    timesteps = tf.shape(inputs)[1]
    # Each step projects its own input: under XLA on CPU that is 2x faster
    # than one hoisted matmul over all steps (benchmarks/).
    steps = tf.TensorArray(inputs.dtype, size=timesteps).unstack(
        _time_major(inputs)
    )
    outputs = [tf.TensorArray(inputs.dtype, size=timesteps) for _ in "hcz"]

    def body(t, h, c, hs, cs, zs):
        z = steps.read(t) @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c_new = f * c + i * g
        h_new = o * tf.tanh(c_new)
        # Past a row's length the states stay: they end as the states after
        # its last valid step.
        valid = (t < lengths)[:, None]
        h_new = tf.where(valid, h_new, h)
        c_new = tf.where(valid, c_new, c)
        gates = tf.concat([i, f, g, o], axis=-1)
        return (
            t + 1,
            h_new,
            c_new,
            hs.write(t, h_new),
            cs.write(t, c_new),
            zs.write(t, gates),
        )

    _, h, c, hs, cs, zs = tf.while_loop(
        lambda t, *_: t < timesteps,
        body,
        (0, h0, c0, *outputs),
        maximum_iterations=timesteps,
    )
    return _time_major(hs.stack()), h, c, cs.stack(), zs.stack()


@_xla
def _backward(
    d_sequence,
    d_h,
    d_c,
    inputs,
    h0,
    c0,
    lengths,
    kernel,
    recurrent_kernel,
    sequence,
    cs,
    gates,
):
    """Backpropagation through time for `_forward` (same XLA context)."""
    timesteps = tf.shape(inputs)[1]
    hs = _time_major(sequence)
    h_prev = tf.concat([h0[None], hs[:-1]], axis=0)
    c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
    d_steps = tf.TensorArray(inputs.dtype, size=timesteps).unstack(
        _time_major(d_sequence)
    )
    d_zs = tf.TensorArray(inputs.dtype, size=timesteps)
    recurrent_t = tf.transpose(recurrent_kernel)

    def body(t, d_h, d_c, d_zs):
        i, f, g, o = tf.split(gates[t], 4, axis=-1)
        tanh_c = tf.tanh(cs[t])
        d_h = d_h + d_steps.read(t)
        d_c_t = d_c + d_h * o * (1 - tanh_c * tanh_c)
        d_z = tf.concat(
            [
                d_c_t * g * i * (1 - i),
                d_c_t * c_prev[t] * f * (1 - f),
                d_c_t * i * (1 - g * g),
                d_h * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        # A step past the row's length passed h and c through unchanged.
        valid = (t < lengths)[:, None]
        d_z = tf.where(valid, d_z, 0)
        d_h = tf.where(valid, d_z @ recurrent_t, d_h)
        d_c = tf.where(valid, d_c_t * f, d_c)
        return t - 1, d_h, d_c, d_zs.write(t, d_z)

    _, d_h0, d_c0, d_zs = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (timesteps - 1, d_h, d_c, d_zs),
        maximum_iterations=timesteps,
    )
    d_z = d_zs.stack()
    # The weight gradients are one matmul each over all steps.
    d_kernel = tf.einsum("btf,tbg->fg", inputs, d_z)
    d_recurrent = tf.einsum("tbu,tbg->ug", h_prev, d_z)
    d_bias = tf.reduce_sum(d_z, axis=(0, 1))
    d_inputs = tf.einsum("tbg,fg->btf", d_z, kernel)
    return d_inputs, d_h0, d_c0, d_kernel, d_recurrent, d_bias


@tf.custom_gradient
def _fused(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    # An explicit backward pass: TensorFlow cannot differentiate through an
    # XLA-compiled while_loop from outside it (TensorLists cannot cross the
    # XLA/TF boundary), and Keras does not XLA-compile steps on CPU.
    # stop_gradient: no tape may differentiate the XLA function itself.
    args = [tf.stop_gradient(a) for a in (inputs, h0, c0, lengths)]
    weights = [tf.stop_gradient(w) for w in (kernel, recurrent_kernel, bias)]
    sequence, h, c, cs, gates = _forward(*args, *weights)

    def grad(d_sequence, d_h, d_c):
        zeros = tf.zeros_like
        d = _backward(
            zeros(sequence) if d_sequence is None else d_sequence,
            zeros(h) if d_h is None else d_h,
            zeros(c) if d_c is None else d_c,
            inputs,
            h0,
            c0,
            lengths,
            kernel,
            recurrent_kernel,
            sequence,
            cs,
            gates,
        )
        d_inputs, d_h0, d_c0, d_kernel, d_recurrent, d_bias = d
        return d_inputs, d_h0, d_c0, None, d_kernel, d_recurrent, d_bias

    return (sequence, h, c), grad


def lstm(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    if _on_gpu():
        return _cudnn(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias)
    # Tensors, not variables: the functions are shared by every layer, and
    # a traced variable argument would outlive its layer.
    weights = [
        tf.convert_to_tensor(w) for w in (kernel, recurrent_kernel, bias)
    ]
    if lengths is None:
        lengths = tf.fill(tf.shape(inputs)[:1], tf.shape(inputs)[1])
    sequence, h, c = _fused(
        inputs, h0, c0, tf.cast(lengths, tf.int32), *weights
    )
    # Shapes are lost through custom_gradient; Keras layers downstream
    # want them.
    units = recurrent_kernel.shape[0]
    sequence.set_shape(inputs.shape[:2] + [units])
    h.set_shape(h0.shape)
    c.set_shape(c0.shape)
    return sequence, h, c
