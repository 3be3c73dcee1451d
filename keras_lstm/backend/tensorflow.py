"""TensorFlow fused LSTM: CudnnRNNV3 on GPU; elsewhere a while_loop with
its backward pass written out, run as a graph (no compilation)."""

import contextlib

import tensorflow as tf

# Whether a gradient tape is recording: chooses the inference form of the
# loop. TensorFlow's own ops (script_ops) ask the same question.
from tensorflow.python.eager import record

# Whether a graph is being compiled by XLA as a whole (jit_compile=True):
# TensorFlow's own device switch asks the same question.
from tensorflow.python.ops import control_flow_util

from keras_lstm.backend import cpu
from keras_lstm.backend.cell import STANDARD

_LOOP_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_CUDNN_DTYPES = (tf.float16, tf.float32, tf.float64)


def _on_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def _cudnn(cell) -> bool:
    """Whether cuDNN may run the step (where the op runs on a GPU)."""
    return _on_gpu() and cell.standard


def name(inputs, cell=STANDARD) -> str:
    return "tensorflow-cudnn" if _cudnn(cell) else "tensorflow-loop"


def unsupported(inputs, cell=STANDARD) -> tuple[str, ...]:
    dtypes = _CUDNN_DTYPES if _cudnn(cell) else _LOOP_DTYPES
    if inputs.dtype not in dtypes:
        return (
            f"the {name(inputs, cell)} kernel does not take "
            f"{inputs.dtype.name}",
        )
    return ()


def _math_dtype(inputs) -> str:
    """On CPU, oneDNN's bfloat16 matmuls beat float32 where the CPU has
    bfloat16 units (1.4x on a train step here, AVX512-BF16); float16, and
    bfloat16 elsewhere, compute in float32."""
    dtype = inputs.dtype.name
    if _on_gpu():
        return dtype
    return cpu.math_dtype(dtype, fast_bfloat16=cpu.has_bfloat16_units())


def notes(inputs, units, cell=STANDARD) -> tuple[str, ...]:
    del units
    notes = cpu.notes(
        inputs.dtype.name,
        _math_dtype(inputs),
        "this CPU has no fast path for it",
    )
    if _on_gpu() and not cell.standard:
        notes += (
            f"cuDNN's LSTM computes tanh and sigmoid without recurrent "
            f"dropout; this step ({cell.describe()}) runs the graph loop "
            "on the GPU",
        )
    if (
        _cudnn(cell)
        and inputs.dtype == tf.float32
        and tf.config.experimental.tensor_float_32_execution_enabled()
    ):
        notes += (
            "float32 may run as TF32 on this GPU (TensorFlow's setting: "
            "tf.config.experimental.enable_tensor_float_32_execution(False), "
            "or keras_lstm.full_float32(), for full float32)",
        )
    return notes


@contextlib.contextmanager
def full_float32():
    """TensorFlow's TF32 execution off, its setting back after."""
    saved = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(saved)


def syncs_to_branch(inputs) -> bool:
    """A data-dependent branch runs on the device (a conditional in the
    compiled program or graph, or an eager host value): no sync."""
    return False


def takes_mask(inputs, cell=STANDARD) -> bool:
    """The loop selects per step from a mask as cheaply as from lengths;
    cuDNN needs lengths, and runs wherever TensorFlow sees a GPU."""
    return not _cudnn(cell)


def bidirectional_unsupported(inputs, masked_with_states) -> tuple[str, ...]:
    return (
        "the TensorFlow kernels have no bidirectional form here; each "
        "direction runs its own fused kernel",
    )


def _pack(kernel, recurrent_kernel, bias):
    """Keras weights as cuDNN's canonical parameter vector: per gate (i, f,
    c, o, as in Keras) the transposed input weights, then the recurrent
    ones, then the input biases and the recurrent biases (zero: Keras has
    one bias)."""
    weights = tf.split(kernel, 4, axis=1) + tf.split(recurrent_kernel, 4, 1)
    return tf.concat(
        [tf.reshape(tf.transpose(w), [-1]) for w in weights]
        + [bias, tf.zeros_like(bias)],
        axis=0,
    )


def _unpack(params, features, units):
    """The gradient of `_pack`: a cuDNN parameter vector (a gradient of
    one) as Keras (kernel, recurrent_kernel, bias); the recurrent biases
    are dropped."""
    sizes = [units * features] * 4 + [units * units] * 4 + [4 * units] * 2
    parts = tf.split(params, sizes)
    kernel = tf.concat(
        [tf.transpose(tf.reshape(w, (units, features))) for w in parts[:4]],
        axis=1,
    )
    recurrent = tf.concat(
        [tf.transpose(tf.reshape(w, (units, units))) for w in parts[4:8]],
        axis=1,
    )
    return kernel, recurrent, parts[8]


def _cudnn_forward(inputs, h0, c0, lengths, kernel, recurrent_kernel, bias):
    params = _pack(kernel, recurrent_kernel, bias)
    # Batch-major inputs: the states are (batch, layers, units).
    sequence, h, c, reserve, host = tf.raw_ops.CudnnRNNV3(
        input=inputs,
        input_h=h0[:, None],
        input_c=c0[:, None],
        params=params,
        sequence_lengths=lengths,
        rnn_mode="lstm",
        is_training=True,
        time_major=False,
    )
    return sequence, h[:, 0], c[:, 0], params, reserve, host


def _cudnn_backward(
    d_sequence,
    d_h,
    d_c,
    inputs,
    h0,
    c0,
    lengths,
    kernel,
    sequence,
    h,
    c,
    params,
    reserve,
    host,
):
    d_inputs, d_h0, d_c0, d_params = tf.raw_ops.CudnnRNNBackpropV3(
        input=inputs,
        input_h=h0[:, None],
        input_c=c0[:, None],
        params=params,
        sequence_lengths=lengths,
        output=sequence,
        output_h=h[:, None],
        output_c=c[:, None],
        output_backprop=d_sequence,
        output_h_backprop=d_h[:, None],
        output_c_backprop=d_c[:, None],
        reserve_space=reserve,
        host_reserved=host,
        rnn_mode="lstm",
        time_major=False,
    )
    units = h.shape[-1]
    weights = _unpack(d_params, kernel.shape[0], units)
    return (d_inputs, d_h0[:, 0], d_c0[:, 0], *weights)


def _stacked(array, element_shape):
    """A TensorArray of the loop as a batch-major tensor. The element
    shape is given at run time: a graph traced for any length may run with
    none, and TensorFlow cannot stack an empty list otherwise (its batch
    size is not static)."""
    stacked = tf.raw_ops.TensorListStack(
        input_handle=array.flow,
        element_shape=element_shape,
        element_dtype=array.dtype,
    )
    return tf.transpose(stacked, (1, 0, 2))


def _step_validity(valid, timesteps):
    """`t -> (batch, 1) bool`, whether step t of each row is valid, from
    `valid` (a mask or lengths, see `lstm`); None when all are."""
    if valid is None:
        return None
    if valid.shape.rank == 1:
        return lambda t: (t < valid)[:, None]
    steps = tf.TensorArray(tf.bool, size=timesteps).unstack(tf.transpose(valid))
    return lambda t: steps.read(t)[:, None]


def _time_major_list(inputs, timesteps):
    """The inputs as a TensorList of steps, as Keras's own TensorFlow loop
    reads them."""
    steps = tf.TensorArray(inputs.dtype, size=timesteps)
    return steps.unstack(tf.transpose(inputs, (1, 0, 2)))


def _custom(cell) -> bool:
    """Whether the step calls Keras activations other than tanh and
    sigmoid: the backward pass then differentiates them itself."""
    return cell.activation is not None or cell.recurrent_activation is not None


def _loop(
    inputs,
    h0,
    c0,
    valid,
    recurrent_mask,
    kernel,
    recurrent_kernel,
    bias,
    saves,
    sequence,
    cell,
):
    """Runs the LSTM. With `sequence`, returns the batch-major sequence of
    outputs (else an empty placeholder: nothing stacked); with `saves`,
    also what the backward pass needs: every h, c and the gate activations
    (the pre-activations where the step calls other Keras activations), as
    TensorLists (`_saved` reads them back), which cost no copy (stacking
    them into tensors doubled the peak memory of a long sequence). `valid`
    may be None (every step valid): no per-step selects then; so may
    `recurrent_mask` (no recurrent dropout)."""
    timesteps = tf.shape(inputs)[1]
    is_valid = _step_validity(valid, timesteps)
    activation, recurrent_activation = cell.functions(tf.tanh, tf.sigmoid)
    custom = _custom(cell)
    # The inference form always writes the outputs (stacked only with
    # `sequence`) and reads its steps from a list: the loop tf2onnx
    # rewrites as ONNX's LSTM op (docs/export.md). Without `sequence` the
    # outputs list holds one step, overwritten every step, as Keras's loop
    # keeps it without return_sequences: TFLite's converter lowers each
    # write to a list of every step as a copy of the list (twice as slow
    # for 100 steps). Each list's element shape is (batch, width) from the
    # run-time batch size: TFLite's converter lowers only lists whose
    # element shape folds to a constant, and the form is traced for any
    # batch size.
    kept = 3 if saves else 1
    batch = tf.shape(h0)[0]
    units = h0.shape[-1]
    length = timesteps if sequence or saves else 1
    outputs = [
        tf.TensorArray(
            inputs.dtype,
            flow=tf.raw_ops.TensorListReserve(
                element_shape=tf.stack([batch, width]),
                num_elements=length,
                element_dtype=inputs.dtype,
            ),
        )
        for width in (units, units, 4 * units)[:kept]
    ]
    steps = None if saves else _time_major_list(inputs, timesteps)

    def body(t, h, c, *outputs):
        h_rec = h if recurrent_mask is None else h * recurrent_mask
        # Each step projects its own input: under XLA on CPU that is 2x
        # faster than one hoisted matmul over all steps, and equal in a
        # graph.
        x = inputs[:, t] if steps is None else steps.read(t)
        z = tf.nn.bias_add(x @ kernel + h_rec @ recurrent_kernel, bias)
        i, f, g, o = tf.split(z, 4, axis=-1)
        # Each gate on its own, as the keras.ops path computes them.
        i = recurrent_activation(i)
        f = recurrent_activation(f)
        g = activation(g)
        o = recurrent_activation(o)
        c_new = f * c + i * g
        h_new = o * activation(c_new)
        if is_valid is not None:
            # An invalid step keeps the states: they end as the states
            # after the row's last valid step.
            step_valid = is_valid(t)
            h_new = tf.where(step_valid, h_new, h)
            c_new = tf.where(step_valid, c_new, c)
        gates = z if custom else tf.concat([i, f, g, o], axis=-1)
        values = (h_new, c_new, gates)
        index = t if sequence or saves else 0
        written = [
            a.write(index, v)
            for a, v in zip(outputs, values[:kept], strict=True)
        ]
        return (t + 1, h_new, c_new, *written)

    # The bound is maximum_iterations alone: a condition that captured
    # `timesteps` too made tf2onnx's Loop carry it as int64 where the body
    # reads int32, a file ONNX Runtime refused ("Tensor element type
    # mismatch").
    _, h, c, *lists = tf.while_loop(
        lambda *_: True,
        body,
        (0, h0, c0, *outputs),
        maximum_iterations=timesteps,
    )
    if sequence:
        outputs = _stacked(lists[0], tf.shape(h0))
    else:
        outputs = tf.zeros([0, 0, h.shape[-1]], h.dtype)
    return (outputs, h, c, *(a.flow for a in lists[: 3 if saves else 0]))


def _saved(handle, t, like):
    """Step t of a TensorList kept by `_loop`: (batch, width) as `like`."""
    item = tf.raw_ops.TensorListGetItem(
        input_handle=handle,
        index=t,
        element_shape=[-1, like.shape[-1]],
        element_dtype=like.dtype,
    )
    item.set_shape(like.shape)
    return item


def _gate_gradients(cell, gates, c_t, c_prev, d_h, d_c):
    """One step's gradient with respect to its pre-activations z, and that
    of c_t in full (through h_t and from the next step), from what the
    forward pass saved: the gate activations (tanh and sigmoid: their
    derivatives written out) or the pre-activations (other Keras
    activations: differentiated by TensorFlow, the forward step
    recomputed)."""
    if not _custom(cell):
        i, f, g, o = tf.split(gates, 4, axis=-1)
        tanh_c = tf.tanh(c_t)
        d_c_t = d_c + d_h * o * (1 - tanh_c * tanh_c)
        d_z = tf.concat(
            [
                d_c_t * g * i * (1 - i),
                d_c_t * c_prev * f * (1 - f),
                d_c_t * i * (1 - g * g),
                d_h * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        return d_z, d_c_t, f
    activation, recurrent_activation = cell.functions(tf.tanh, tf.sigmoid)
    z = tf.split(gates, 4, axis=-1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([*z, c_t])
        i, f, o = (recurrent_activation(z[k]) for k in (0, 1, 3))
        g = activation(z[2])
        act_c = activation(c_t)

    def grad(y, x, d_y):
        d_x = tape.gradient(y, x, output_gradients=d_y)
        return tf.zeros_like(x) if d_x is None else d_x

    d_c_t = d_c + grad(act_c, c_t, d_h * o)
    d_z = tf.concat(
        [
            grad(i, z[0], d_c_t * g),
            grad(f, z[1], d_c_t * c_prev),
            grad(g, z[2], d_c_t * i),
            grad(o, z[3], d_h * act_c),
        ],
        axis=-1,
    )
    return d_z, d_c_t, f


def _backprop(
    d_sequence,
    d_h,
    d_c,
    inputs,
    h0,
    c0,
    valid,
    recurrent_mask,
    kernel,
    recurrent_kernel,
    hs,
    cs,
    gates,
    cell,
):
    """Backpropagation through time for `_loop(..., saves=True)`; `hs`,
    `cs` and `gates` are its TensorLists, `d_sequence` may be None (only
    the last output or the states are used).

    Each step reads what it needs from the lists and adds its share of the
    weight gradients: nothing of the size of the sequence is copied or
    kept beyond what the forward pass saved (on a 4,000-step train step
    that was a third of the peak memory), and it was faster at the
    benchmark's main shape than one matmul per weight after the loop.
    """
    timesteps = tf.shape(inputs)[1]
    is_valid = _step_validity(valid, timesteps)
    recurrent_t = tf.transpose(recurrent_kernel)
    kernel_t = tf.transpose(kernel)
    like_gates = tf.TensorSpec(h0.shape[:1] + kernel.shape[1:], h0.dtype)

    def body(t, d_h, d_c, d_inputs, d_kernel, d_recurrent, d_bias):
        before = tf.maximum(t - 1, 0)
        h_prev = tf.where(t > 0, _saved(hs, before, h0), h0)
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        if d_sequence is not None:
            d_h = d_h + d_sequence[:, t]
        c_prev = tf.where(t > 0, _saved(cs, before, c0), c0)
        d_z, d_c_t, f = _gate_gradients(
            cell,
            _saved(gates, t, like_gates),
            _saved(cs, t, c0),
            c_prev,
            d_h,
            d_c,
        )
        d_h_prev = d_z @ recurrent_t
        if recurrent_mask is not None:
            d_h_prev = d_h_prev * recurrent_mask
        if is_valid is None:
            d_h, d_c = d_h_prev, d_c_t * f
        else:
            # An invalid step passed h and c through unchanged.
            step_valid = is_valid(t)
            d_z = tf.where(step_valid, d_z, 0)
            d_h = tf.where(step_valid, d_h_prev, d_h)
            d_c = tf.where(step_valid, d_c_t * f, d_c)
        return (
            t - 1,
            d_h,
            d_c,
            d_inputs.write(t, d_z @ kernel_t),
            d_kernel + tf.matmul(inputs[:, t], d_z, transpose_a=True),
            d_recurrent + tf.matmul(h_prev, d_z, transpose_a=True),
            d_bias + tf.reduce_sum(d_z, axis=0),
        )

    _, d_h0, d_c0, d_inputs, d_kernel, d_recurrent, d_bias = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (
            timesteps - 1,
            d_h,
            d_c,
            tf.TensorArray(inputs.dtype, size=timesteps),
            tf.zeros_like(kernel),
            tf.zeros_like(recurrent_kernel),
            tf.zeros_like(kernel[0]),
        ),
        maximum_iterations=timesteps,
    )
    d_inputs = _stacked(d_inputs, tf.gather(tf.shape(inputs), [0, 2]))
    return d_inputs, d_h0, d_c0, d_kernel, d_recurrent, d_bias


# The loop's forms: the training forward keeps every h, c and gate for the
# backward pass, the inference forward nothing (15% faster at the main
# benchmark shape); each with or without the sequence of outputs
# ("...-last": only the final states are used). Run by TensorFlow's graph
# executor, as
# keras.layers.LSTM is on CPU: nothing is compiled, so a new shape (dynamic
# padding, a partial last batch) costs nothing. XLA ran the loop 1.3-2x
# faster once compiled, but compiled 0.3-0.6 s per form and shape; switching
# to it once a shape was hot (a call count per shape in the graph, a tf.cond
# between the two) cost 0.5 s on the first call and 20% on every call of a
# small model (measured in one process, issue 8's note). jit_compile=True
# compiles the loop with the rest of the model (`_in_xla_context`).
# One form per step (`Cell`, hashable) too: the activations are traced in.
# Every form made so far, by key.
_FORMS = {}


def _form(saves, sequence, cell):
    key = ("train" if saves else "infer", sequence, cell)
    if key not in _FORMS:

        def loop(
            inputs,
            h0,
            c0,
            valid,
            recurrent_mask,
            kernel,
            recurrent_kernel,
            bias,
        ):
            return _loop(
                inputs,
                h0,
                c0,
                valid,
                recurrent_mask,
                kernel,
                recurrent_kernel,
                bias,
                saves=saves,
                sequence=sequence,
                cell=cell,
            )

        _FORMS[key] = tf.function(loop, autograph=False)
    return _FORMS[key]


def _backward_form(cell):
    key = ("backward", cell)
    if key not in _FORMS:

        def backward(*args):
            return _backprop(*args, cell=cell)

        _FORMS[key] = tf.function(backward, autograph=False)
    return _FORMS[key]


def _loop_cell(cell):
    """The step as the loop's forms are keyed: `unroll` changes nothing
    here (the graph loop ran as fast as keras.layers.LSTM unrolled,
    benchmarks/ `--workloads configs`), so it makes no other trace."""
    return cell._replace(unroll=False)


def _in_xla_context() -> bool:
    """Whether an enclosing XLA compilation (jit_compile=True) takes the
    loop: then it runs inline, compiled with the rest."""
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def _run(form, *args, weights):
    """Runs `form` (a `_form` or `_backward_form`) through its trace for
    any batch size and length: traced once per process for each feature
    size, unit count, dtype and step, not again for every model or Keras
    retrace (inline under XLA). The `weights` keep their shapes; other
    float arguments keep only the size of their last axis."""
    if _in_xla_context():
        return form.python_function(*args)

    def spec(a):
        if a is None:
            return None
        if any(a is w for w in weights):
            return tf.TensorSpec(a.shape, a.dtype)
        if not a.dtype.is_floating:  # lengths or a mask
            return tf.TensorSpec([None] * a.shape.rank, a.dtype)
        shape = [None] * (a.shape.rank - 1) + [a.shape[-1]]
        return tf.TensorSpec(shape, a.dtype)

    specs = [spec(a) for a in args]
    return form.get_concrete_function(*specs)(*args)


def _on_device(inputs, cell, gpu, other):
    """`gpu()` where the op runs on a GPU and cuDNN takes the dtype, else
    `other()`: chosen when the op runs, not when the graph is traced, so a
    SavedModel exported on a GPU machine carries both and runs on a
    CPU-only one. Where TensorFlow sees no GPU at all, `other()` alone:
    tracing the switch and the cuDNN branch would double the cost of the
    first call (and of every new trace) for a branch that cannot run; a
    SavedModel exported there runs the loop on any device. Inside an XLA
    cluster, `other()`: CudnnRNNV3 has no XLA form. A step cuDNN does not
    compute (other activations, recurrent dropout) runs `other()` on any
    device."""
    if inputs.dtype not in _CUDNN_DTYPES or not _cudnn(cell):
        return other()
    return tf.__internal__.execute_fn_for_device(
        {"GPU": gpu}, default_fn=other, name="keras_lstm_device"
    )


def _cudnn_lengths(inputs, valid):
    """cuDNN always takes sequence lengths (never a mask: `takes_mask` is
    False wherever cuDNN may run)."""
    if valid is not None:
        return valid
    return tf.fill(tf.shape(inputs)[:1], tf.shape(inputs)[1])


def _fused(
    inputs,
    h0,
    c0,
    valid,
    recurrent_mask,
    kernel,
    recurrent_kernel,
    bias,
    sequence,
    cell,
):
    """The training kernel: results, and a gradient written out (for cuDNN,
    its backprop op; for the loop, `_backprop`, which reads the forward's
    TensorLists and was faster and far leaner than TensorFlow's own
    gradient of the loop, as keras.layers.LSTM gets it). The custom
    gradient sits outside the device switch: TF 2.21 cannot differentiate
    through one inside it. `valid` (see `lstm`) and `recurrent_mask` are
    not differentiated."""
    cudnn_lengths = _cudnn_lengths(inputs, valid)
    if recurrent_mask is not None:
        recurrent_mask = tf.stop_gradient(recurrent_mask)

    @tf.custom_gradient
    def run(inputs, h0, c0, kernel, recurrent_kernel, bias):
        # stop_gradient: no tape may differentiate the kernels themselves.
        args = [tf.stop_gradient(a) for a in (inputs, h0, c0)]
        weights = [
            tf.stop_gradient(w) for w in (kernel, recurrent_kernel, bias)
        ]

        # Both branches return the same structure: the results, then what
        # their backward pass needs: cuDNN's parameters and reserve, then
        # the loop's three TensorLists (the other branch's slots are empty).
        def no_list():
            return tf.raw_ops.EmptyTensorList(
                element_shape=[-1], max_num_elements=0, element_dtype=dtype
            )

        def loop_forward():
            outputs, h, c, *lists = _run(
                form, *args, valid, recurrent_mask, *weights, weights=weights
            )
            empty = tf.zeros([0], dtype)
            int8 = tf.zeros([0], tf.int8)
            return (outputs, h, c, empty, empty, int8, *lists)

        dtype = inputs.dtype
        form = _form(True, sequence, _loop_cell(cell))
        outputs, h, c, *saved = _on_device(
            inputs,
            cell,
            lambda: (
                *_cudnn_forward(*args, cudnn_lengths, *weights),
                *(no_list() for _ in range(3)),
            ),
            loop_forward,
        )

        # Static shapes are lost through the device switch; the loops and
        # the layers downstream want them.
        if sequence:
            outputs.set_shape(inputs.shape[:2] + recurrent_kernel.shape[:1])
        h.set_shape(h0.shape)
        c.set_shape(c0.shape)

        def grad(d_sequence, d_h, d_c):
            zeros = tf.zeros_like
            d_h = zeros(h) if d_h is None else d_h
            d_c = zeros(c) if d_c is None else d_c
            d = _on_device(
                inputs,
                cell,
                lambda: _cudnn_backward(
                    zeros(outputs) if d_sequence is None else d_sequence,
                    d_h,
                    d_c,
                    *args,
                    cudnn_lengths,
                    kernel,
                    outputs,
                    h,
                    c,
                    *saved[:3],
                ),
                # Without a gradient for the sequence (only the last output
                # or the states are used), none is made up.
                lambda: _run(
                    _backward_form(_loop_cell(cell)),
                    d_sequence if sequence else None,
                    d_h,
                    d_c,
                    *args,
                    valid,
                    recurrent_mask,
                    *weights[:2],
                    *saved[3:],
                    weights=weights,
                ),
            )
            for gradient, x in zip(d, (inputs, h0, c0, *weights), strict=True):
                gradient.set_shape(x.shape)
            return d

        return (outputs, h, c), grad

    return run(inputs, h0, c0, kernel, recurrent_kernel, bias)


def _fused_inference(
    inputs,
    h0,
    c0,
    valid,
    recurrent_mask,
    kernel,
    recurrent_kernel,
    bias,
    sequence,
    cell,
):
    """The kernel when no tape records (predict, serving): nothing is kept
    for a backward pass. A gradient asked for anyway (tf.gradients)
    recomputes the forward pass of `_fused` and differentiates that."""
    cudnn_lengths = _cudnn_lengths(inputs, valid)

    @tf.custom_gradient
    def run(inputs, h0, c0, kernel, recurrent_kernel, bias):
        args = [tf.stop_gradient(a) for a in (inputs, h0, c0)]
        weights = [
            tf.stop_gradient(w) for w in (kernel, recurrent_kernel, bias)
        ]
        form = _form(False, sequence, _loop_cell(cell))
        outputs, h, c = _on_device(
            inputs,
            cell,
            lambda: _cudnn_forward(*args, cudnn_lengths, *weights)[:3],
            lambda: _run(
                form, *args, valid, recurrent_mask, *weights, weights=weights
            ),
        )
        if sequence:
            outputs.set_shape(inputs.shape[:2] + recurrent_kernel.shape[:1])
        h.set_shape(h0.shape)
        c.set_shape(c0.shape)

        def grad(*d_results):
            differentiable = [inputs, h0, c0, kernel, recurrent_kernel, bias]
            with tf.GradientTape() as tape:
                tape.watch(differentiable)
                results = _fused(
                    inputs,
                    h0,
                    c0,
                    valid,
                    recurrent_mask,
                    *differentiable[3:],
                    sequence,
                    cell,
                )
            d_results = [
                tf.zeros_like(r) if d is None else d
                for r, d in zip(results, d_results, strict=True)
            ]
            return tape.gradient(
                results, differentiable, output_gradients=d_results
            )

        return (outputs, h, c), grad

    return run(inputs, h0, c0, kernel, recurrent_kernel, bias)


def scan_runs_under_xla() -> bool:
    """keras.ops.scan builds its TensorFlow while_loop without
    maximum_iterations, and XLA cannot differentiate that loop: a model
    that may run the keras.ops path must not be jit-compiled here."""
    return False


def xla_hides_fused() -> bool:
    """Whether XLA-compiling the layer would lose this machine's kernel:
    CudnnRNNV3 has no XLA form, so Keras should not jit-compile a model
    that uses it."""
    return _on_gpu()


def _unrolled(
    inputs, h0, c0, valid, recurrent_mask, kernel, recurrent_kernel, bias, cell
):
    """`unroll=True` with a static length: every step written out in the
    graph, as keras.layers.LSTM(unroll=True) builds it (each step
    projecting its own input: hoisting that matmul made predict 1.2x
    slower at 100 steps), differentiated by TensorFlow: at 20 steps a
    train step took 0.7x the time of the graph loop, as Keras's own (bench
    `--workloads configs`). Returns (sequence, h, c)."""
    activation, recurrent_activation = cell.functions(tf.tanh, tf.sigmoid)
    h, c, outputs = h0, c0, []
    for t, x in enumerate(tf.unstack(inputs, axis=1)):
        h_rec = h if recurrent_mask is None else h * recurrent_mask
        z = x @ kernel + h_rec @ recurrent_kernel + bias
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_new = recurrent_activation(f) * c + recurrent_activation(
            i
        ) * activation(g)
        h_new = recurrent_activation(o) * activation(c_new)
        if valid is not None:
            step_valid = (
                (t < valid)[:, None]
                if valid.shape.rank == 1
                else valid[:, t : t + 1]
            )
            h_new = tf.where(step_valid, h_new, h)
            c_new = tf.where(step_valid, c_new, c)
        h, c = h_new, c_new
        outputs.append(h)
    return tf.stack(outputs, axis=1), h, c


def lstm(
    inputs,
    h0,
    c0,
    valid,
    kernel,
    recurrent_kernel,
    bias,
    sequence=True,
    cell=STANDARD,
    recurrent_mask=None,
):
    # Tensors, not variables: the loop functions are shared by every layer,
    # and a traced variable argument would outlive its layer.
    dtype, math = inputs.dtype, _math_dtype(inputs)
    weights = [tf.cast(w, math) for w in (kernel, recurrent_kernel, bias)]
    if valid is not None and valid.shape.rank == 1:
        valid = tf.cast(valid, tf.int32)
    inputs, h0, c0 = (tf.cast(a, math) for a in (inputs, h0, c0))
    if recurrent_mask is not None:
        recurrent_mask = tf.cast(recurrent_mask, math)
    if cell.unroll and inputs.shape[1] is not None and not _cudnn(cell):
        outputs, h, c = _unrolled(
            inputs, h0, c0, valid, recurrent_mask, *weights, cell
        )
    else:
        kernel = _fused if record.could_possibly_record() else _fused_inference
        outputs, h, c = kernel(
            inputs, h0, c0, valid, recurrent_mask, *weights, sequence, cell
        )
    if not sequence:
        outputs = None
    return tuple(
        None if r is None else tf.cast(r, dtype) for r in (outputs, h, c)
    )
