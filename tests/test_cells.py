"""Every step on a kernel: other activations, recurrent dropout, unroll.

The frameworks' fused LSTM ops compute tanh and sigmoid without recurrent
dropout; keras_lstm runs every other step on the kernels' own loops (the
JAX scan, the TensorFlow graph loop, the torch loop). Each test pins the
recurrent dropout mask (a spy on the layer's mask draw), checks that a
kernel ran (a spy on `kernels.lstm`), compares the outputs with the NumPy
float64 oracle and the gradients with the keras.ops path.
"""

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from keras_lstm import dispatch
from tests import helpers
from tests.oracle import lstm_reference
from tests.test_fused_parity import (
    check_gradients,
    layer_pair,
    reference_mode,
    spy_on_kernel,
)

BACKEND = keras.backend.backend()
KERNELS = keras_lstm.backend.kernels

pytestmark = pytest.mark.skipif(
    KERNELS is None, reason=f"the {BACKEND} backend has no fused kernel"
)

# (id, layer arguments): the steps no framework op computes.
STEPS = [
    ("hard_sigmoid", {"recurrent_activation": "hard_sigmoid"}),
    ("relu", {"activation": "relu"}),
    (
        "linear_hard_sigmoid",
        {"activation": "linear", "recurrent_activation": "hard_sigmoid"},
    ),
    ("recurrent_dropout", {"recurrent_dropout": 0.5}),
    (
        "recurrent_dropout_relu",
        {"recurrent_dropout": 0.5, "activation": "relu"},
    ),
    ("unroll", {"unroll": True}),
]


def pin_recurrent_mask(monkeypatch, rng, rate):
    """Replaces the layer's recurrent mask draw with a fixed mask (scaled
    by 1 / (1 - rate), as Keras draws it); returns it as NumPy."""
    mask = (rng.random((helpers.BATCH, helpers.UNITS)) >= rate) / (1 - rate)
    mask = mask.astype("float32")

    def masks(self, inputs, training):
        if not training:
            return None, None
        return None, keras.ops.convert_to_tensor(mask, self.compute_dtype)

    monkeypatch.setattr(keras_lstm.LSTM, "_dropout_masks", masks)
    return mask


@pytest.mark.parametrize(
    "mask_kind, with_state, go_backwards",
    [("none", False, False), ("right", True, True), ("holes", True, False)],
    ids=["plain", "right-state-bwd", "holes-state"],
)
@pytest.mark.parametrize(
    "kwargs", [s[1] for s in STEPS], ids=[s[0] for s in STEPS]
)
def test_every_step_runs_a_kernel_and_matches(
    monkeypatch, kwargs, mask_kind, with_state, go_backwards
):
    rng = np.random.default_rng(0)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng) if with_state else None
    mask = helpers.make_mask(mask_kind)
    rate = kwargs.get("recurrent_dropout", 0.0)
    recurrent_mask = (
        pin_recurrent_mask(monkeypatch, rng, rate) if rate else None
    )
    options = dict(
        kwargs, return_sequences=True, return_state=True, go_backwards=True
    )
    options["go_backwards"] = go_backwards
    fused, generic = layer_pair(weights, **options)

    plan = keras_lstm.explain(fused, x, mask=mask, training=True)
    assert plan.reasons == ()
    step = dispatch.cell(fused, True)
    assert plan.kernel == KERNELS.name(helpers.tensor(x), step)
    calls = spy_on_kernel(monkeypatch)
    outputs = helpers.call_layer(
        fused, x, initial_state=state, mask=mask, training=True
    )
    assert len(calls) == 1, "the call should run the backend's kernel"
    expected = lstm_reference(
        x,
        *weights,
        initial_state=state,
        mask=mask,
        activation=kwargs.get("activation", "tanh"),
        recurrent_activation=kwargs.get("recurrent_activation", "sigmoid"),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        recurrent_dropout_mask=recurrent_mask,
    )
    helpers.assert_close(list(outputs), expected)
    check_gradients(
        fused, generic, x, state, weights, mask, expected, rng, training=True
    )


def test_time_major_recurrent_dropout_matches_the_oracle(monkeypatch):
    rng = np.random.default_rng(1)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    recurrent_mask = pin_recurrent_mask(monkeypatch, rng, 0.25)
    mask = helpers.make_mask("left")
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        time_major=True,
        return_sequences=True,
        recurrent_activation="hard_sigmoid",
        recurrent_dropout=0.25,
    )
    calls = spy_on_kernel(monkeypatch)
    output = helpers.call_layer(
        layer, np.swapaxes(x, 0, 1), mask=mask.T, training=True
    )
    assert len(calls) == 1
    expected = lstm_reference(
        x,
        *weights,
        mask=mask,
        recurrent_activation="hard_sigmoid",
        return_sequences=True,
        recurrent_dropout_mask=recurrent_mask,
    )
    helpers.assert_close(output, np.swapaxes(expected, 0, 1))


def test_recurrent_dropout_draws_one_mask_per_call():
    # No pinned mask: the layer's own draw, as keras.layers.LSTM makes it
    # (one (batch, units) mask a call, from the layer's seed): two calls
    # differ from each other and from inference, and the same seed gives
    # the same numbers.
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    a = helpers.built_layer(
        keras_lstm.LSTM, weights, recurrent_dropout=0.5, seed=7
    )
    b = helpers.built_layer(
        keras_lstm.LSTM, weights, recurrent_dropout=0.5, seed=7
    )
    first = helpers.to_numpy(helpers.call_layer(a, x, training=True))
    second = helpers.to_numpy(helpers.call_layer(a, x, training=True))
    inference = helpers.to_numpy(helpers.call_layer(a, x))
    assert not np.allclose(first, second)
    assert not np.allclose(first, inference)
    np.testing.assert_array_equal(
        first, helpers.to_numpy(helpers.call_layer(b, x, training=True))
    )


def test_a_custom_activation_runs_a_kernel(monkeypatch):
    # A callable that is not a Keras activation: the kernels call it as the
    # keras.ops path does (on torch the loop records it with autograd).
    def scaled_tanh(x):
        return 0.5 * keras.ops.tanh(2.0 * x)

    rng = np.random.default_rng(3)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    fused, generic = layer_pair(
        weights, activation=scaled_tanh, return_sequences=True
    )
    calls = spy_on_kernel(monkeypatch)
    got = helpers.to_numpy(helpers.call_layer(fused, x))
    assert len(calls) == 1
    with reference_mode():
        want = helpers.to_numpy(helpers.call_layer(generic, x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    check_gradients(fused, generic, x, None, weights, None, [want], rng)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_other_activations(monkeypatch, policy):
    rng = np.random.default_rng(4)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        dtype=policy,
        return_sequences=True,
        recurrent_activation="hard_sigmoid",
        recurrent_initializer="glorot_uniform",
    )
    calls = spy_on_kernel(monkeypatch)
    output = helpers.call_layer(layer, x)
    assert len(calls) == 1
    assert keras.backend.standardize_dtype(output.dtype) == policy[6:]
    expected = lstm_reference(
        x, *weights, recurrent_activation="hard_sigmoid", return_sequences=True
    )
    helpers.assert_close(output, expected, rtol=2e-2, atol=2e-2)


def test_bidirectional_with_recurrent_dropout_runs_a_kernel_per_direction(
    monkeypatch,
):
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    recurrent_mask = pin_recurrent_mask(monkeypatch, rng, 0.5)
    bidi = keras_lstm.Bidirectional(
        keras_lstm.LSTM(
            helpers.UNITS, return_sequences=True, recurrent_dropout=0.5
        )
    )
    bidi.build((None, None, helpers.FEATURES))
    bidi.set_weights(weights + weights)
    plan = keras_lstm.explain(bidi, x, training=True)
    assert any("recurrent dropout" in r for r in plan.reasons), plan
    calls = spy_on_kernel(monkeypatch)
    output = helpers.call_layer(bidi, x, training=True)
    assert len(calls) == 2
    forward = lstm_reference(
        x,
        *weights,
        return_sequences=True,
        recurrent_dropout_mask=recurrent_mask,
    )
    backward = lstm_reference(
        x,
        *weights,
        return_sequences=True,
        go_backwards=True,
        recurrent_dropout_mask=recurrent_mask,
    )
    helpers.assert_close(
        output, np.concatenate([forward, backward[:, ::-1]], axis=-1)
    )


@pytest.mark.parametrize(
    "kwargs", [s[1] for s in STEPS[:4]], ids=[s[0] for s in STEPS[:4]]
)
def test_last_output_only_gradients_match(monkeypatch, kwargs):
    # return_sequences=False: the kernels keep no sequence of outputs, and
    # no gradient flows into one.
    rng = np.random.default_rng(6)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    rate = kwargs.get("recurrent_dropout", 0.0)
    if rate:
        pin_recurrent_mask(monkeypatch, rng, rate)
    fused, generic = layer_pair(weights, **kwargs)
    with reference_mode():
        want = helpers.to_numpy(helpers.call_layer(generic, x, training=True))
    got = helpers.to_numpy(helpers.call_layer(fused, x, training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    check_gradients(
        fused, generic, x, None, weights, None, [want], rng, training=True
    )


@pytest.mark.skipif(BACKEND != "torch", reason="torch-loop's own backward")
def test_torch_loop_second_order_gradients(monkeypatch):
    # A gradient penalty differentiates the gradient: torch-loop's written
    # backward records the loop again under create_graph=True.
    import torch

    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    pin_recurrent_mask(monkeypatch, rng, 0.5)

    def penalty_gradient(use_cudnn):
        layer = helpers.built_layer(
            keras_lstm.LSTM,
            weights,
            use_cudnn=use_cudnn,
            # (torch has no second derivative of hardsigmoid)
            activation="softsign",
            recurrent_dropout=0.5,
        )
        inputs = helpers.tensor(x).requires_grad_(True)
        output = layer(inputs, training=True)
        (grad,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
        (grad.square().sum()).backward()
        return inputs.grad, layer.cell.kernel.value.grad

    calls = spy_on_kernel(monkeypatch)
    got = penalty_gradient("auto")
    assert len(calls) == 1
    for g, w in zip(got, penalty_gradient(False), strict=True):
        assert torch.any(w != 0)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch loop")
@pytest.mark.parametrize(
    "kwargs, mask_kind, with_state, go_backwards",
    [
        ({"recurrent_dropout": 0.5}, "holes", True, False),
        ({"recurrent_activation": "hard_sigmoid"}, "right", True, True),
    ],
    ids=["recurrent_dropout-holes-state", "hard_sigmoid-right-state-bwd"],
)
def test_torch_loop_backward_in_chunks_matches(
    monkeypatch, kwargs, mask_kind, with_state, go_backwards
):
    """The torch loop's backward pass in chunks of steps (as it runs a
    long sequence): the same numbers as in one chunk and the oracle."""
    import torch

    from keras_lstm.backend import torch_loop

    monkeypatch.setattr(torch_loop, "_CHUNK_BYTES", 1)
    assert torch_loop._chunk_steps(helpers.TIMESTEPS, 1, 1, torch.float32) == 4
    assert helpers.TIMESTEPS % 4 != 0  # a short last chunk too
    test_every_step_runs_a_kernel_and_matches(
        monkeypatch, kwargs, mask_kind, with_state, go_backwards
    )
