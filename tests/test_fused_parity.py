"""The fused kernel of the backend against the generic keras.ops path.

Each test builds two layers with the same weights: one with
`use_cudnn="auto"` (the fused kernel, which a spy confirms ran) and one with
`use_cudnn=False` (`keras_lstm.ops.lstm`, the reference path). Outputs, final
states and the gradients with respect to inputs, initial states and every
weight must agree. The generic path is itself checked against the NumPy
oracle by test_semantics.py, so it can serve as the golden side here.
"""

import contextlib
import itertools

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from keras_lstm.dispatch import GENERIC
from tests import helpers
from tests.oracle import lstm_reference

BACKEND = keras.backend.backend()
MASK_KINDS = ["none", "right", "left", "holes", "full_row"]

pytestmark = pytest.mark.skipif(
    keras_lstm.backend.kernels is None,
    reason=f"the {BACKEND} backend has no fused kernel",
)


def grad(fn, tensors):
    """Gradients of the scalar `fn(*tensors)` with respect to each tensor.

    Args:
        fn: a function of backend tensors returning a scalar tensor.
        tensors: NumPy arrays (or backend tensors), the arguments of `fn`.

    Returns:
        float64 NumPy arrays, one per tensor, in the order of `tensors`.
    """
    tensors = [keras.ops.convert_to_tensor(t) for t in tensors]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = fn(*tensors)
        grads = tape.gradient(loss, tensors)
        # tape.gradient gives None for an argument the loss does not use.
        assert all(g is not None for g in grads)
    elif BACKEND == "jax":
        import jax

        grads = jax.grad(fn, argnums=tuple(range(len(tensors))))(*tensors)
    elif BACKEND == "torch":
        import torch

        tensors = [t.detach().requires_grad_(True) for t in tensors]
        # Without allow_unused, torch raises for an argument the loss does
        # not use: a disconnected gradient is a failure, not a zero.
        grads = torch.autograd.grad(fn(*tensors), tensors)
    else:
        raise NotImplementedError(BACKEND)
    return [helpers.to_numpy(g) for g in grads]


def spy_on_kernel(monkeypatch):
    """Counts the calls of the backend's fused kernel.

    layer.py calls `kernels.lstm` through the module object
    `keras_lstm.backend.kernels`, so patching that attribute sees every call.

    Returns:
        A list that gets the positional arguments of each call.
    """
    kernels = keras_lstm.backend.kernels
    real = kernels.lstm
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "lstm", spy)
    return calls


def layer_pair(weights, **kwargs):
    """A fused layer and a generic layer with the same weights."""
    fused = helpers.built_layer(
        keras_lstm.LSTM, weights, use_cudnn="auto", **kwargs
    )
    generic = helpers.built_layer(
        keras_lstm.LSTM, weights, use_cudnn=False, **kwargs
    )
    return fused, generic


def reference_mode():
    """A context for computing golden numbers on the generic path.

    On JAX, every eager call of the generic path compiles a fresh lax.scan
    (its step is a new closure each call), which made this file take well
    over a minute; with jit disabled the scan runs as a Python loop of the
    same operations, several times faster at these sizes. The fused side
    never runs in this context, so what is tested is unchanged.
    """
    if BACKEND == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


def _flat(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def forward(layer, x, state=None, mask=None, training=None):
    """Calls the layer; a generic layer runs in `reference_mode`."""
    generic = layer.use_cudnn is False
    with reference_mode() if generic else contextlib.nullcontext():
        outputs = helpers.call_layer(
            layer, x, initial_state=state, mask=mask, training=training
        )
    return helpers.to_numpy(_flat(outputs))


def loss_fn(layer, mask, cotangents, with_state, training=None):
    """`fn(x, [h0, c0,] *weights)`: the outputs dotted with cotangents.

    The weights are arguments, passed to the layer by stateless_call, so
    that every backend differentiates them like any other input (jax.grad
    cannot see variables).
    """
    mask = helpers.tensor(mask)
    cotangents = [
        keras.ops.convert_to_tensor(c.astype("float32")) for c in cotangents
    ]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fn(x, *rest):
        kwargs = {}
        if with_state:
            kwargs["initial_state"] = list(rest[:2])
            rest = rest[2:]
        if mask is not None:
            kwargs["mask"] = mask
        if training is not None:
            kwargs["training"] = training
        outputs, _ = layer.stateless_call(
            list(rest), non_trainable, x, **kwargs
        )
        terms = [
            keras.ops.sum(o * c)
            for o, c in zip(_flat(outputs), cotangents, strict=True)
        ]
        return sum(terms[1:], terms[0])

    return fn


def check_gradients(
    fused,
    generic,
    x,
    state,
    weights,
    mask,
    expected,
    rng,
    tol=helpers.ATOL,
    training=None,
):
    """Compares the gradients of both layers for one random cotangent."""
    # Random cotangents weight every output element differently, so a
    # gradient routed to the wrong step, row or unit changes the result.
    cotangents = [rng.normal(size=e.shape) for e in expected]
    with_state = state is not None
    arguments = [x] + (list(state) if with_state else []) + list(weights)
    names = ["inputs"] + (["h0", "c0"] if with_state else [])
    names += [w.path for w in fused.trainable_weights]
    assert len(names) == len(arguments)
    with reference_mode():
        want = grad(
            loss_fn(generic, mask, cotangents, with_state, training),
            arguments,
        )
    got = grad(
        loss_fn(fused, mask, cotangents, with_state, training), arguments
    )
    for name, g, w in zip(names, got, want, strict=True):
        # An all-zero reference would let a disconnected gradient pass.
        assert np.any(w != 0), name
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero", "state"])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize(
    "return_sequences, return_state",
    list(itertools.product([False, True], repeat=2)),
    ids=["last", "last+state", "seq", "seq+state"],
)
def test_forward_and_gradients_match_generic(
    monkeypatch,
    return_sequences,
    return_state,
    go_backwards,
    mask_kind,
    with_state,
):
    rng = np.random.default_rng(0)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng) if with_state else None
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights,
        return_sequences=return_sequences,
        return_state=return_state,
        go_backwards=go_backwards,
    )
    calls = spy_on_kernel(monkeypatch)

    expected = forward(generic, x, state, mask)
    assert not calls
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)

    check_gradients(fused, generic, x, state, weights, mask, expected, rng)
    # The gradient runs went through the kernel too (once more for fused).
    assert len(calls) == 2


@pytest.mark.parametrize("with_state", [False, True], ids=["zero", "state"])
@pytest.mark.parametrize("mask_kind", [k for k in MASK_KINDS if k != "none"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
def test_lengths_path_matches_generic(
    monkeypatch, go_backwards, mask_kind, with_state
):
    # Kernels that take lengths (cuDNN, torch) get each row's valid steps
    # moved to the front, and their outputs moved back. The loop kernels
    # of TensorFlow and JAX on CPU take the mask itself; made to take
    # lengths here, they run the path cuDNN runs on a GPU.
    kernels = keras_lstm.backend.kernels
    if kernels is None:
        pytest.skip(f"{BACKEND} has no fused kernel")
    monkeypatch.setattr(kernels, "takes_mask", lambda inputs, cell=None: False)
    rng = np.random.default_rng(8)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng) if with_state else None
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
    )
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    (call,) = calls
    assert tuple(call[3].shape) == (helpers.BATCH,)  # lengths, not a mask
    helpers.assert_close(actual, expected)
    check_gradients(fused, generic, x, state, weights, mask, expected, rng)


@pytest.mark.parametrize("mask_kind", ["none", "left"])
def test_without_bias_stays_fused_and_matches(monkeypatch, mask_kind):
    rng = np.random.default_rng(1)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng, use_bias=False)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights, use_bias=False, return_sequences=True, return_state=True
    )
    plan = keras_lstm.explain(fused, x, mask=mask)
    assert plan.kernel != GENERIC and plan.reasons == ()
    calls = spy_on_kernel(monkeypatch)

    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)
    # Only kernel and recurrent_kernel: no bias gradient to compare.
    assert len(fused.trainable_weights) == 2
    check_gradients(fused, generic, x, state, weights, mask, expected, rng)


@pytest.mark.parametrize("mask_kind", ["left", "holes", "full_row"])
def test_zero_output_for_mask_matches_generic(monkeypatch, mask_kind):
    # keras.layers.Bidirectional sets zero_output_for_mask: masked steps
    # output zeros, which the fused path must reproduce after expand().
    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights,
        zero_output_for_mask=True,
        return_sequences=True,
        return_state=True,
    )
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    assert np.all(actual[0][~mask] == 0)
    helpers.assert_close(actual, expected)
    check_gradients(fused, generic, x, state, weights, mask, expected, rng)


@pytest.mark.parametrize("mask_kind", ["right", "left", "holes", "full_row"])
def test_masked_step_values_never_matter(monkeypatch, mask_kind):
    # A masked step keeps h and c whatever its input holds: padding
    # sentinels such as -1e9 or NaN are common in real data.
    rng = np.random.default_rng(8)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True
    )
    expected = forward(generic, x, state, mask)
    for fill in (1e5, -1e9, np.nan, np.inf):
        padded = x.copy()
        padded[~mask] = fill
        helpers.assert_close(forward(generic, padded, state, mask), expected)
        helpers.assert_close(forward(fused, padded, state, mask), expected)


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_time_major_matches_generic(monkeypatch, mask_kind):
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    x_tm = np.ascontiguousarray(np.transpose(x, (1, 0, 2)))
    mask_tm = None if mask is None else np.ascontiguousarray(mask.T)
    fused, generic = layer_pair(
        weights, time_major=True, return_sequences=True, return_state=True
    )
    assert keras_lstm.explain(fused, x_tm).reasons == ()
    calls = spy_on_kernel(monkeypatch)

    expected = forward(generic, x_tm, state, mask_tm)
    actual = forward(fused, x_tm, state, mask_tm)
    assert len(calls) == 1
    # The sequence comes back time-major.
    assert actual[0].shape == (helpers.TIMESTEPS, helpers.BATCH, helpers.UNITS)
    helpers.assert_close(actual, expected)


def test_stateful_two_batches_match_generic(monkeypatch):
    rng = np.random.default_rng(3)
    weights = helpers.random_weights(rng)
    batches = [helpers.random_inputs(rng), helpers.random_inputs(rng)]
    # The second batch is masked: kept states must pass through compaction.
    masks = [None, helpers.make_mask("holes")]
    fused, generic = layer_pair(
        weights, stateful=True, return_sequences=True, return_state=True
    )
    calls = spy_on_kernel(monkeypatch)
    for n, (x, mask) in enumerate(zip(batches, masks, strict=True), 1):
        expected = forward(generic, x, mask=mask)
        actual = forward(fused, x, mask=mask)
        assert len(calls) == n
        helpers.assert_close(actual, expected)
        helpers.assert_close(fused.states, helpers.to_numpy(generic.states))
    # The kept states changed the second batch: it differs from a fresh run.
    fresh = lstm_reference(
        batches[1], *weights, mask=masks[1], return_sequences=True
    )
    assert not np.allclose(actual[0], fresh, atol=1e-3)


def test_input_dropout_in_training_stays_fused(monkeypatch):
    rng = np.random.default_rng(4)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    mask = helpers.make_mask("right")
    # The same seed gives both layers the same dropout mask on their first
    # call, so the two paths stay comparable in training.
    fused, generic = layer_pair(
        weights,
        dropout=0.5,
        seed=7,
        return_sequences=True,
        return_state=True,
    )
    plan = keras_lstm.explain(fused, x, mask=mask, training=True)
    assert plan.kernel != GENERIC and plan.reasons == ()
    calls = spy_on_kernel(monkeypatch)

    expected = forward(generic, x, mask=mask, training=True)
    actual = forward(fused, x, mask=mask, training=True)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)
    # Dropout really applied: inference gives other numbers.
    inference = forward(fused, x, mask=mask, training=False)
    assert len(calls) == 2
    assert not np.allclose(actual[0], inference[0], atol=1e-3)
    helpers.assert_close(
        inference,
        lstm_reference(
            x, *weights, mask=mask, return_sequences=True, return_state=True
        ),
    )


def test_recurrent_dropout_outside_training_stays_fused(monkeypatch):
    # recurrent_dropout only exists in training; inference may use the
    # fused kernel and must give the plain LSTM.
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    fused, generic = layer_pair(weights, recurrent_dropout=0.5, seed=3)
    assert keras_lstm.explain(fused, x, training=False).reasons == ()
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, training=False)
    actual = forward(fused, x, training=False)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)
    helpers.assert_close(actual, [lstm_reference(x, *weights)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_contract_with_lengths(dtype):
    """The backend kernel itself: right-padded rows of different lengths.

    h and c must be the states after each row's last valid step, and the
    sequence exact at valid steps (it is unspecified after them).
    """
    kernels = keras_lstm.backend.kernels
    rng = np.random.default_rng(6)
    batch, timesteps = 4, 6
    x = helpers.random_inputs(rng, batch=batch, timesteps=timesteps)
    kernel, recurrent_kernel, bias = helpers.random_weights(rng)
    h0, c0 = helpers.random_state(rng, batch=batch)
    # 1 and timesteps are the edges of the allowed range.
    lengths = np.array([timesteps, 1, 3, 5], dtype="int32")
    valid = np.arange(timesteps)[None, :] < lengths[:, None]

    def t(a):
        return keras.ops.convert_to_tensor(np.asarray(a, dtype=dtype))

    # JAX without x64 turns float64 into float32; the tolerance below
    # needs the dtype asked for.
    if keras.backend.standardize_dtype(t(x).dtype) != dtype:
        pytest.skip(f"{BACKEND} does not make {dtype} tensors here")
    if kernels.unsupported(t(x)):
        pytest.skip(f"{kernels.name(t(x))} does not take {dtype}")
    sequence, h, c = kernels.lstm(
        t(x),
        t(h0),
        t(c0),
        keras.ops.convert_to_tensor(lengths),
        t(kernel),
        t(recurrent_kernel),
        t(bias),
    )
    want_seq, want_h, want_c = lstm_reference(
        x,
        kernel,
        recurrent_kernel,
        bias,
        initial_state=[h0, c0],
        mask=valid,
        return_sequences=True,
        return_state=True,
    )
    tol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(helpers.to_numpy(h), want_h, rtol=tol, atol=tol)
    np.testing.assert_allclose(helpers.to_numpy(c), want_c, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        helpers.to_numpy(sequence)[valid],
        want_seq[valid],
        rtol=tol,
        atol=tol,
    )


def test_kernel_contract_with_a_mask():
    """Kernels that take a mask: a masked step keeps h and c, and the
    sequence there is the carried h."""
    kernels = keras_lstm.backend.kernels
    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng)
    if kernels is None or not kernels.takes_mask(helpers.tensor(x)):
        pytest.skip(f"the {BACKEND} kernel here takes lengths")
    kernel, recurrent_kernel, bias = helpers.random_weights(rng)
    h0, c0 = helpers.random_state(rng)
    mask = helpers.make_mask("holes")
    sequence, h, c = kernels.lstm(
        *helpers.tensor([x, h0, c0, mask, kernel, recurrent_kernel, bias])
    )
    want = lstm_reference(
        x,
        kernel,
        recurrent_kernel,
        bias,
        initial_state=[h0, c0],
        mask=mask,
        return_sequences=True,
        return_state=True,
    )
    # The reference repeats the previous output at masked steps, and before
    # a row's first valid step gives zeros where the kernel carries h0.
    seen = np.cumsum(mask, axis=1) > 0
    want_seq = np.where(seen[..., None], want[0], h0[:, None])
    helpers.assert_close([sequence, h, c], [want_seq, want[1], want[2]])


@pytest.mark.parametrize("mask_kind", ["none", "valid", "masked"])
def test_single_steps_match_generic(monkeypatch, mask_kind):
    # Greedy decoding calls one step at a time with the last states (the
    # torch kernel runs those as plain ops on CPU).
    rng = np.random.default_rng(9)
    x = helpers.random_inputs(rng, timesteps=1)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = None
    if mask_kind != "none":
        mask = np.array([[True], [mask_kind == "valid"], [True]])
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True
    )
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)
    check_gradients(fused, generic, x, state, weights, mask, expected, rng)
