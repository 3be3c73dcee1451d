"""The keras_lstm.LSTM layer: arguments, weights, config and semantics.

Everything that defines what the layer computes lives here, once, written
against keras.ops: time_major, go_backwards, masks, initial and stateful
states, dropout. The loop itself runs in `keras_lstm.ops.lstm`.
"""

import functools
import numbers

import keras
from keras import activations, constraints, initializers, ops, regularizers

from keras_lstm import dispatch, masking
from keras_lstm import ops as lstm_ops
from keras_lstm.backend import kernels

_USE_CUDNN_CHOICES = ("auto", True, False)


def _get(module, name, value):
    """`module.get(value)`, with an error that names the argument."""
    try:
        return module.get(value)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a name or an "
            f"object that keras.{module.__name__.split('.')[-1]} understands. "
            f"Received: {name}={value!r} ({e})"
        ) from None


def _check_rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a float in "
            f"[0, 1). Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_lstm")
class LSTM(keras.layers.Layer):
    """Long Short-Term Memory layer (Hochreiter 1997), one semantics on every
    backend.

    A drop-in replacement for `keras.layers.LSTM`: same arguments (plus
    `time_major` from tf.keras), same weights in the same order, and the same
    numbers on TensorFlow, JAX and PyTorch.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the cell and the output. Default `"tanh"`.
            `None` means linear.
        recurrent_activation: Activation of the gates. Default `"sigmoid"`.
        use_bias: Whether the layer uses a bias vector. Default `True`.
        kernel_initializer: Initializer for `kernel`. Default
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default `"zeros"`.
        unit_forget_bias: If `True` (default), add 1 to the forget-gate bias
            at initialization.
        kernel_regularizer: Regularizer for `kernel`.
        recurrent_regularizer: Regularizer for `recurrent_kernel`.
        bias_regularizer: Regularizer for `bias`.
        activity_regularizer: Regularizer for the layer's output.
        kernel_constraint: Constraint for `kernel`.
        recurrent_constraint: Constraint for `recurrent_kernel`.
        bias_constraint: Constraint for `bias`.
        dropout: Float in [0, 1): fraction of the input features dropped in
            training. One mask per sequence, shared by all steps and gates.
        recurrent_dropout: Float in [0, 1): fraction of the hidden units
            dropped in the recurrent product in training. One mask per
            sequence, shared by all steps and gates.
        seed: Random seed for dropout.
        return_sequences: Return the full sequence instead of the last
            output. Default `False`.
        return_state: Also return the final states: `(output, h, c)`.
            Default `False`.
        go_backwards: Process the sequence backwards and return the reversed
            sequence. Default `False`.
        stateful: Keep the final states of each batch as the initial states
            of the next one (needs a static batch size). Default `False`.
        time_major: Inputs, masks and sequence outputs are
            `(timesteps, batch, ...)` instead of `(batch, timesteps, ...)`.
            Default `False`.
        unroll: Unroll the loop in Python (needs a static number of
            timesteps). Default `False`.
        use_cudnn: `"auto"` (default) runs a fused kernel when the call is
            eligible; `False` always runs the generic keras.ops path; `True`
            demands a fused kernel and raises a `ValueError` naming every
            condition that failed when none can run.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).
            `implementation` is accepted for compatibility and has no effect.
            `zero_output_for_mask` (from keras.layers.RNN, default False):
            masked steps output zeros instead of the previous output;
            `keras.layers.Bidirectional` sets it to `return_sequences`.

    Call arguments:
        inputs: A 3D tensor `(batch, timesteps, features)`, or
            `(timesteps, batch, features)` when `time_major`.
        initial_state: Optional list `[h, c]` of `(batch, units)` tensors.
            Default: zeros (or the kept states, when `stateful`).
        mask: Optional boolean tensor with the layout of `inputs` without the
            feature axis. A `False` step keeps h and c and repeats the
            previous output (zeros before a row's first valid step).
        training: Whether dropout applies.

    Output shape:
        `(batch, units)`, or the full sequence `(batch, timesteps, units)`
        with `return_sequences` (time-major when `time_major`). With
        `return_state`, a tuple `(output, h, c)`, as keras.layers.LSTM.

    Example:

    >>> inputs = np.random.random((32, 10, 8))
    >>> output = keras_lstm.LSTM(4)(inputs)
    >>> tuple(output.shape)
    (32, 4)
    >>> seq, h, c = keras_lstm.LSTM(
    ...     4, return_sequences=True, return_state=True)(inputs)
    >>> tuple(seq.shape), tuple(h.shape), tuple(c.shape)
    ((32, 10, 4), (32, 4), (32, 4))
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        time_major=False,
        unroll=False,
        use_cudnn="auto",
        **kwargs,
    ):
        # Accepted so that code written for tf.keras / Keras 3 keeps working;
        # keras_lstm has one implementation of the step.
        self.implementation = kwargs.pop("implementation", 2)
        # A keras.layers.RNN argument: masked steps output zeros instead of
        # repeating the previous output. Bidirectional sets it to
        # return_sequences, so that both directions are zero where masked.
        self.zero_output_for_mask = bool(
            kwargs.pop("zero_output_for_mask", False)
        )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if (
            isinstance(units, bool)
            or not isinstance(units, numbers.Integral)
            or units <= 0
        ):
            raise ValueError(
                "Invalid value for argument `units`: expected a positive "
                f"integer. Received: units={units!r}"
            )
        if not (use_cudnn is True or use_cudnn is False or use_cudnn == "auto"):
            raise ValueError(
                "Invalid value for argument `use_cudnn`: expected one of "
                f"{_USE_CUDNN_CHOICES}. Received: use_cudnn={use_cudnn!r}"
            )
        self.units = int(units)
        self.activation = _get(activations, "activation", activation)
        self.recurrent_activation = _get(
            activations, "recurrent_activation", recurrent_activation
        )
        self.use_bias = bool(use_bias)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.dropout = _check_rate("dropout", dropout)
        self.recurrent_dropout = _check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.time_major = bool(time_major)
        self.unroll = bool(unroll)
        self.use_cudnn = use_cudnn
        self.supports_masking = True
        self.states = None
        self.supports_jit = self._supports_jit()
        # As keras.layers.RNN: one size per state (h, c).
        self.state_size = [self.units, self.units]
        self.single_state = False

        # The weights live in a keras.layers.LSTMCell, as in keras.layers.LSTM:
        # same variable names, initial values, get_weights order and
        # .weights.h5 layout, so weights move between the two layers freely.
        # The cell only holds them; the loop is keras_lstm.ops.lstm.
        self.cell = keras.layers.LSTMCell(
            self.units,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            use_bias=self.use_bias,
            kernel_initializer=_get(
                initializers, "kernel_initializer", kernel_initializer
            ),
            recurrent_initializer=_get(
                initializers, "recurrent_initializer", recurrent_initializer
            ),
            bias_initializer=_get(
                initializers, "bias_initializer", bias_initializer
            ),
            unit_forget_bias=self.unit_forget_bias,
            kernel_regularizer=_get(
                regularizers, "kernel_regularizer", kernel_regularizer
            ),
            recurrent_regularizer=_get(
                regularizers, "recurrent_regularizer", recurrent_regularizer
            ),
            bias_regularizer=_get(
                regularizers, "bias_regularizer", bias_regularizer
            ),
            kernel_constraint=_get(
                constraints, "kernel_constraint", kernel_constraint
            ),
            recurrent_constraint=_get(
                constraints, "recurrent_constraint", recurrent_constraint
            ),
            bias_constraint=_get(
                constraints, "bias_constraint", bias_constraint
            ),
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            seed=seed,
            dtype=self.dtype_policy,
            trainable=self.trainable,
            name="lstm_cell",
        )

    def _supports_jit(self):
        """Whether Keras may XLA-compile a model holding this layer (it
        jit-compiles only if every layer supports it): not where XLA would
        hide this machine's fused kernel (cuDNN on TensorFlow, as for
        keras.layers.LSTM), nor where the layer may run the keras.ops scan
        and the backend cannot compile its gradient (TensorFlow). Keras
        then trains without XLA, with a warning, instead of failing."""
        if kernels is None:
            return True
        fused = self.use_cudnn is not False
        scan = not fused and not self.unroll
        if scan and not kernels.scan_runs_under_xla():
            return False
        return not (fused and kernels.xla_hides_fused())

    # Initializers, regularizers and constraints belong to the cell, which
    # applies them; the layer shows them under the keras.layers.LSTM names.
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(
        lambda self: self.cell.recurrent_initializer
    )
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    recurrent_regularizer = property(
        lambda self: self.cell.recurrent_regularizer
    )
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    recurrent_constraint = property(lambda self: self.cell.recurrent_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)

    # ------------------------------------------------------------------
    # Shapes and state

    @property
    def _layout(self):
        return "timesteps, batch" if self.time_major else "batch, timesteps"

    def _split_shape(self, shape):
        """(batch, timesteps, features) of an input shape, any layout."""
        if len(shape) != 3:
            raise ValueError(
                f"Invalid `inputs` for LSTM: expected a 3D tensor "
                f"({self._layout}, features). Received inputs of rank "
                f"{len(shape)}, shape {shape}."
            )
        if self.time_major:
            return shape[1], shape[0], shape[2]
        return shape[0], shape[1], shape[2]

    def build(self, inputs_shape):
        batch, timesteps, features = self._split_shape(tuple(inputs_shape))
        # A model with a dynamic time axis exports it dynamic (see `_loop`).
        self._any_length = timesteps is None
        if features is None:
            raise ValueError(
                "Invalid `inputs` for LSTM: the feature size (last axis) must "
                f"be known. Received inputs of shape {tuple(inputs_shape)}."
            )
        self.cell.build((batch, features))
        if self.stateful:
            if batch is None:
                raise ValueError(
                    "A stateful LSTM needs a static batch size: pass "
                    "`batch_shape=(batch, timesteps, features)` to "
                    "keras.Input (or `batch_size` to the model). Received "
                    f"inputs of shape {tuple(inputs_shape)}, batch None."
                )
            # Tracked as non-trainable variables, so that stateless training
            # (JAX) carries their updates; kept out of `weights` and the
            # weights file, as in keras.layers.LSTM.
            self.states = [
                self.add_weight(
                    shape=(batch, self.units),
                    initializer="zeros",
                    trainable=False,
                    # Kept in the variable dtype: under mixed precision an
                    # autocast variable's assign is lost on torch (it copies
                    # into the autocast copy).
                    autocast=False,
                    name=name,
                )
                for name in ("state_h", "state_c")
            ]

    @property
    def weights(self):
        states = {id(v) for v in self.states or ()}
        return [w for w in super().weights if id(w) not in states]

    def save_own_variables(self, store):
        # The stateful states are runtime state, not weights (see build).
        pass

    def load_own_variables(self, store):
        pass

    def reset_state(self):
        """Zeroes the kept states of a stateful layer."""
        for v in self.states or ():
            v.assign(ops.zeros(v.shape, v.dtype))

    def get_initial_state(self, batch_size):
        """Zero states `[h, c]`, each `(batch_size, units)`, as
        keras.layers.LSTM gives them."""
        return [
            ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
            for _ in range(2)
        ]

    def reset_states(self):
        """Alias of `reset_state`, as in keras.layers.LSTM."""
        self.reset_state()

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        batch, timesteps, _ = self._split_shape(tuple(inputs_shape))
        if not self.return_sequences:
            output = (batch, self.units)
        elif self.time_major:
            output = (timesteps, batch, self.units)
        else:
            output = (batch, timesteps, self.units)
        if self.return_state:
            return output, (batch, self.units), (batch, self.units)
        return output

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask, None, None]
        return output_mask

    # ------------------------------------------------------------------
    # The forward pass

    def _check_call(self, inputs, initial_state, mask):
        batch, timesteps, features = self._split_shape(tuple(inputs.shape))
        built_features = self.cell.kernel.shape[0]
        if features is not None and features != built_features:
            raise ValueError(
                f"Invalid `inputs` for LSTM '{self.name}': expected feature "
                f"size {built_features} (the layer was built for it), "
                f"received inputs of shape {tuple(inputs.shape)} with "
                f"feature size {features}."
            )
        if self.unroll and timesteps is None:
            raise ValueError(
                "`unroll=True` needs a static number of timesteps; received "
                f"inputs of shape {tuple(inputs.shape)}. Pass `shape=` with "
                "the timesteps to keras.Input, or use unroll=False."
            )
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or (
                len(initial_state) != 2
            ):
                raise ValueError(
                    "Invalid `initial_state`: expected a list of two tensors "
                    f"[h, c] of shape (batch, {self.units}). Received: "
                    f"{initial_state!r}"
                )
            shapes = [tuple(getattr(s, "shape", ())) for s in initial_state]
            for shape in shapes:
                if (
                    len(shape) != 2
                    or shape[1] != self.units
                    or None not in (batch, shape[0])
                    and shape[0] != batch
                ):
                    raise ValueError(
                        "Invalid `initial_state`: expected two tensors of "
                        f"shape ({batch}, {self.units}). Received shapes "
                        f"{shapes}."
                    )
        if mask is not None:
            expected = (
                (timesteps, batch) if self.time_major else (batch, timesteps)
            )
            shape = tuple(mask.shape)
            if len(shape) != 2 or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape, expected, strict=True)
            ):
                raise ValueError(
                    "Invalid `mask`: expected a tensor of shape "
                    f"{expected} ({self._layout}). "
                    f"Received a mask of shape {shape}."
                )
        if self.stateful and self.states is not None:
            expected = self.states[0].shape[0]
            if batch is not None and batch != expected:
                raise ValueError(
                    f"A stateful LSTM keeps states for batch size {expected}; "
                    f"received inputs with batch size {batch}. Feed batches "
                    "of the size the layer was built with."
                )

    def _initial_state(self, inputs, initial_state):
        if initial_state is not None:
            return [ops.cast(s, self.compute_dtype) for s in initial_state]
        if self.stateful:
            # A copy: torch autograd must not see the variable that is
            # assigned the final state below.
            return [
                ops.cast(ops.copy(v.value), self.compute_dtype)
                for v in self.states
            ]
        zeros = ops.zeros(
            (ops.shape(inputs)[0], self.units), dtype=self.compute_dtype
        )
        return [zeros, zeros]

    def _dropout_masks(self, inputs, training):
        """Input and recurrent dropout masks for this call, or None."""
        if not training:
            return None, None
        batch = ops.shape(inputs)[0]
        masks = []
        for rate, size in (
            (self.dropout, inputs.shape[-1]),
            (self.recurrent_dropout, self.units),
        ):
            if rate == 0:
                masks.append(None)
                continue
            ones = ops.ones((batch, size), dtype=self.compute_dtype)
            masks.append(
                keras.random.dropout(
                    ones, rate=rate, seed=self.cell.seed_generator
                )
            )
        return masks[0], masks[1]

    def call(self, inputs, initial_state=None, mask=None, training=None):
        x, mask, seen, sequence, h, c = self._prepare_and_loop(
            inputs, initial_state, mask, training
        )
        return self._finish(sequence, h, c, mask, seen, self._steps(x))

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """The loop of `call` alone, as keras.layers.LSTM has it: no
        stateful update, no time_major output.

        Args:
            sequences: the inputs, in the layer's layout.
            initial_state: `[h, c]`.
            mask: the mask, or None.
            training: whether dropout applies.

        Returns:
            `(last_output, outputs, [h, c])`, the outputs batch-major and in
            processing order (reversed for go_backwards); without
            return_sequences, the last output alone, `(batch, 1, units)`.
        """
        x, mask, seen, sequence, h, c = self._prepare_and_loop(
            sequences, initial_state, mask, training
        )
        last = self._last_output(h, mask, self._steps(x))
        if self.return_sequences:
            outputs = self._masked_outputs(sequence, mask, seen)
        else:
            outputs = ops.expand_dims(last, 1)
        return last, outputs, [h, c]

    def _prepare_and_loop(self, inputs, initial_state, mask, training):
        """`_prepare`, then `_loop`: the prepared inputs, mask and counts,
        and the loop's (sequence, h, c)."""
        x, mask, h0, c0, recurrent_mask, seen = self._prepare(
            inputs, initial_state, mask, training
        )
        sequence, h, c = self._loop(
            x,
            mask,
            h0,
            c0,
            recurrent_mask,
            seen,
            training,
            self.return_sequences,
        )
        return x, mask, seen, sequence, h, c

    def _loop(self, x, mask, h0, c0, recurrent_mask, seen, training, sequence):
        """Runs the chosen kernel: (sequence, h, c); with `sequence` False
        a loop kernel may give None for the sequence."""
        if x.shape[1] == 0 or x.shape[0] == 0:
            # No step to run, or no row (no kernel takes zero steps, and
            # cuDNN no empty batch): the states stay the initial ones, as
            # for a row whose steps are all masked.
            empty = ops.zeros(
                (ops.shape(x)[0], ops.shape(x)[1], self.units), x.dtype
            )
            return empty, h0, c0
        chosen = dispatch.plan(self, x, training)
        if chosen.reasons:
            refusal = getattr(kernels, "export_refusal", None)
            reason = refusal and refusal(dispatch.cell(self, training))
            if reason and getattr(self, "_any_length", False):
                raise ValueError(
                    f"{type(self).__name__} layer '{self.name}' cannot be "
                    f"exported with a dynamic time axis: {reason}. Give "
                    "keras.Input a fixed number of timesteps to export it "
                    "for that length."
                )
            return lstm_ops.lstm(
                x,
                h0,
                c0,
                mask,
                self.cell.kernel,
                self.cell.recurrent_kernel,
                self.cell.bias,
                activation=self.activation,
                recurrent_activation=self.recurrent_activation,
                recurrent_dropout_mask=recurrent_mask,
                unroll=self.unroll,
            )
        step = dispatch.cell(self, training)
        run = functools.partial(
            kernels.lstm,
            sequence=sequence,
            cell=step,
            recurrent_mask=recurrent_mask,
        )
        if mask is None or kernels.takes_mask(x, step):
            # A loop kernel selects per step: the mask as it is.
            return run(x, h0, c0, mask, *self._weights())
        # Lengths kernels (cuDNN, torch): valid steps to the front, unless
        # they are there already (right-padded masks).
        right = None
        if not kernels.syncs_to_branch(x):
            right = masking.right_padded(mask, seen)
        return self._uncompact(
            run(
                masking.compact(x, mask, seen, right),
                h0,
                c0,
                masking.kernel_lengths(seen),
                *self._weights(),
            ),
            h0,
            c0,
            mask,
            seen,
            right,
        )

    def _prepare(self, inputs, initial_state, mask, training):
        """The call's inputs in processing order (batch-major, reversed for
        go_backwards, masked steps zeroed, input dropout applied), its mask
        in the same order, the initial states, the recurrent dropout mask
        and `masking.counts(mask)` (None without a mask)."""
        self._check_call(inputs, initial_state, mask)
        x = ops.cast(inputs, self.compute_dtype)
        if self.time_major:
            x = ops.transpose(x, (1, 0, 2))
            if mask is not None:
                mask = ops.transpose(mask, (1, 0))
        if mask is not None:
            mask = ops.cast(mask, "bool")
            # Masked steps never matter: not their values (inf, NaN, padding
            # values) nor, through them, any gradient.
            x = ops.where(ops.expand_dims(mask, -1), x, 0)
        if self.go_backwards:
            x = ops.flip(x, axis=1)
            if mask is not None:
                mask = ops.flip(mask, axis=1)
        h0, c0 = self._initial_state(x, initial_state)

        input_mask, recurrent_mask = self._dropout_masks(x, training)
        if input_mask is not None:
            # One mask per sequence: the same features are dropped at
            # every step and for every gate.
            x = x * ops.expand_dims(input_mask, 1)
        seen = None if mask is None else masking.counts(mask)
        return x, mask, h0, c0, recurrent_mask, seen

    def _weights(self):
        """The weights as a fused kernel takes them: tensors (`.value`,
        autocast under mixed precision), zeros for a missing bias."""
        cell = self.cell
        weights = [cell.kernel.value, cell.recurrent_kernel.value]
        if cell.use_bias:
            weights.append(cell.bias.value)
        else:
            weights.append(ops.zeros((4 * self.units,), self.compute_dtype))
        # Cast too: called from keras_lstm.Bidirectional, the autocast scope
        # is the wrapper's, whose policy may differ from this layer's.
        return [ops.cast(w, self.compute_dtype) for w in weights]

    def _uncompact(self, results, h0, c0, mask, seen, right):
        """A fused kernel's results on compacted inputs, put back in place.

        Rows with no valid step ran with length 1 (kernels take lengths
        >= 1): they get their initial states back.
        """
        sequence, h, c = results
        empty = ops.expand_dims(seen[:, -1] == 0, -1)
        if sequence is not None:
            sequence = masking.expand(sequence, seen, right, mask, h)
        return (
            sequence,
            ops.where(empty, h0, h),
            ops.where(empty, c0, c),
        )

    def _masked_outputs(self, sequence, mask, seen):
        """The sequence of outputs: before a row's first valid step there
        is no previous output, so zeros, not the initial h (tf.keras
        semantics); with zero_output_for_mask, zeros at every masked
        step."""
        if mask is None:
            return sequence
        keep = mask if self.zero_output_for_mask else seen > 0
        return ops.where(ops.expand_dims(keep, -1), sequence, 0)

    @staticmethod
    def _steps(x):
        """The number of timesteps of batch-major `x`: static when known."""
        steps = x.shape[1]
        return ops.shape(x)[1] if steps is None else steps

    def _last_output(self, h, mask, timesteps):
        """The last output is the final h (masked steps carry it), or zeros
        for a row with no valid step (or a sequence with no step)."""
        if mask is not None:
            last = mask[:, -1:] if self.zero_output_for_mask else mask
            return ops.where(ops.any(last, axis=1, keepdims=True), h, 0)
        if not ops.is_tensor(timesteps):
            # An int, or one symbolic while tracing (torch.export's SymInt
            # for a dynamic time axis, which assumes at least 2 steps):
            # decided here, never a tensor of a Python object.
            return h if timesteps > 0 else ops.zeros_like(h)
        return ops.where(timesteps > 0, h, 0)

    def _finish(self, sequence, h, c, mask, seen, timesteps):
        """The layer's outputs from the loop's results in processing order:
        stateful states kept, sequence or last output, states.
        `timesteps` is the input's, an int when static."""
        if self.stateful:
            for v, s in zip(self.states, (h, c), strict=True):
                v.assign(ops.cast(s, v.dtype))
        if self.return_sequences:
            output = self._masked_outputs(sequence, mask, seen)
            if self.time_major:
                output = ops.transpose(output, (1, 0, 2))
        else:
            output = self._last_output(h, mask, timesteps)
        if self.return_state:
            return output, h, c
        return output

    # ------------------------------------------------------------------
    # Config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "recurrent_activation": activations.serialize(
                    self.recurrent_activation
                ),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer
                ),
                "recurrent_initializer": initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": initializers.serialize(
                    self.bias_initializer
                ),
                "unit_forget_bias": self.unit_forget_bias,
                "kernel_regularizer": regularizers.serialize(
                    self.kernel_regularizer
                ),
                "recurrent_regularizer": regularizers.serialize(
                    self.recurrent_regularizer
                ),
                "bias_regularizer": regularizers.serialize(
                    self.bias_regularizer
                ),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": constraints.serialize(
                    self.kernel_constraint
                ),
                "recurrent_constraint": constraints.serialize(
                    self.recurrent_constraint
                ),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "seed": self.seed,
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
                "stateful": self.stateful,
                "time_major": self.time_major,
                "unroll": self.unroll,
                "use_cudnn": self.use_cudnn,
                "zero_output_for_mask": self.zero_output_for_mask,
            }
        )
        return config
