"""The torch kernel's contract with torch's fused op, checked on CPU.

What cuDNN needs, and what the CPU op does not care about, so a CPU suite
would never notice: weights as one contiguous buffer (transposed views made
cuDNN fail with "view size is not compatible"), and training mode whenever
autograd records (cuDNN's backward refuses otherwise). And denormal floats
flushed to zero in the fused op's forward and backward passes on CPU (the
10x slowdown of long sequences on Intel CPUs), with every thread's own
setting left as it was.
"""

import threading

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the torch kernel"
)

if keras.backend.backend() == "torch":
    import torch

    from keras_lstm.backend import torch as torch_kernels
    from keras_lstm.backend import torch_denormals as denormals

UNITS = 6


def _spy_on_op(monkeypatch):
    """Records what every call of torch._VF.lstm gets."""
    real = torch._VF.lstm
    calls = []

    def spy(inputs, states, weights, *args):
        calls.append({"weights": list(weights), "train": args[3]})
        return real(inputs, states, weights, *args)

    monkeypatch.setattr(torch._VF, "lstm", spy)
    return calls


def _layers(bidirectional, **kwargs):
    layer = keras_lstm.LSTM(UNITS, return_sequences=True, **kwargs)
    if bidirectional:
        layer = keras_lstm.Bidirectional(layer)
    return layer


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_weights_are_contiguous(monkeypatch, bidirectional, masked):
    rng = np.random.default_rng(0)
    x = helpers.tensor(helpers.random_inputs(rng))
    mask = helpers.tensor(helpers.make_mask("holes")) if masked else None
    layer = _layers(bidirectional)
    calls = _spy_on_op(monkeypatch)
    layer(x, mask=mask)
    assert len(calls) == 1
    weights = calls[0]["weights"]
    assert len(weights) == (8 if bidirectional else 4)
    assert all(w.is_contiguous() for w in weights)


@pytest.mark.parametrize("padded", [False, True], ids=["plain", "padded"])
def test_cudnn_weights_are_one_buffer_in_torchs_order(padded):
    # What cuDNN takes as its weight buffer without a copy of its own:
    # views of one buffer, one after the other, in torch's order, equal to
    # the weights (on CUDA the kernel passes these; checked here on CPU).
    rng = np.random.default_rng(0)
    directions = [
        [torch.tensor(w) for w in helpers.random_weights(rng)] for _ in range(2)
    ]
    views = torch_kernels._flat_weights(directions, padded, True)
    separate = torch_kernels._flat_weights(directions, padded, False)
    assert len(views) == 8
    start = views[0].data_ptr()
    storage = views[0].untyped_storage().data_ptr()
    for view, weight in zip(views, separate, strict=True):
        assert view.is_contiguous()
        assert view.untyped_storage().data_ptr() == storage
        assert view.data_ptr() == start
        start += view.numel() * view.element_size()
        torch.testing.assert_close(view, weight, rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
def test_training_mode_exactly_when_autograd_records(
    monkeypatch, bidirectional
):
    rng = np.random.default_rng(1)
    x = helpers.random_inputs(rng)
    layer = _layers(bidirectional)
    layer.build(x.shape)
    calls = _spy_on_op(monkeypatch)

    # Inference: predict runs under no_grad, so does a call in no_grad.
    with torch.no_grad():
        layer(helpers.tensor(x))
    assert calls[-1]["train"] is False

    # A forward whose result autograd records (weights are parameters).
    out = layer(helpers.tensor(x))
    assert out.requires_grad
    assert calls[-1]["train"] is True
    out.sum().backward()

    # Gradients wanted for the inputs only (frozen layer).
    layer.trainable = False
    inputs = helpers.tensor(x).requires_grad_(True)
    layer(inputs).sum().backward()
    assert calls[-1]["train"] is True
    assert inputs.grad is not None

    # Nothing to differentiate: no training mode.
    layer(helpers.tensor(x))
    assert calls[-1]["train"] is False


def test_a_train_step_runs_the_op_in_training_mode(monkeypatch):
    rng = np.random.default_rng(2)
    x = helpers.random_inputs(rng)
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras_lstm.LSTM(UNITS),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    calls = _spy_on_op(monkeypatch)
    model.train_on_batch(x, np.zeros((len(x), 1)))
    model.predict_on_batch(x)
    assert [c["train"] for c in calls] == [True, False]


# ---------------------------------------------------------------------------
# Denormal floats.

DENORMAL = 1e-39  # float32's normal range ends at 1.18e-38
LONG = (
    torch_kernels.FLUSH_FROM_STEPS if keras.backend.backend() == "torch" else 0
)


needs_flush = pytest.mark.skipif(
    keras.backend.backend() != "torch" or not denormals.supported(),
    reason="torch cannot flush denormals on this CPU",
)


if keras.backend.backend() == "torch":
    # Made here, once, where nothing flushes: made inside a flushed scope
    # the fill value itself would read as zero.
    _DENORMALS = torch.full((1 << 22,), DENORMAL)


def _zeros_in_parallel_op():
    """How many of a large product of denormals torch's threads flush: the
    op is split over every thread of the caller's OpenMP team."""
    return int((_DENORMALS * 1.0 == 0).sum()), _DENORMALS.numel()


def _caller_flushes():
    # The check the issue gives: torch has no getter for the setting.
    return bool(torch.tensor([1e-323], dtype=torch.float64) * 1 == 0)


@pytest.fixture
def _threads(monkeypatch):
    """Two intra-op threads (as on the CI machine) so that the workers'
    setting is tested too, the caller's count restored after; and
    flushing for any amount of work, so that small tests see it."""
    monkeypatch.setattr(torch_kernels, "FLUSH_FROM_WORK", 0)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@needs_flush
def test_flushed_denormals_covers_every_thread_and_restores(_threads):
    assert not _caller_flushes()
    assert _zeros_in_parallel_op()[0] == 0
    # The op runs on both threads: flushing the caller's alone leaves the
    # other thread's share.
    torch.set_flush_denormal(True)
    try:
        assert 0 < _zeros_in_parallel_op()[0] < _DENORMALS.numel()
    finally:
        torch.set_flush_denormal(False)
    with denormals.flushed():
        zeros, total = _zeros_in_parallel_op()
        assert zeros == total  # the caller's thread and its workers
        assert _caller_flushes()
    assert not _caller_flushes()
    assert _zeros_in_parallel_op()[0] == 0


@needs_flush
def test_a_caller_that_flushes_keeps_flushing(_threads):
    torch.set_flush_denormal(True)
    try:
        with denormals.flushed():
            pass
        assert _caller_flushes()
    finally:
        torch.set_flush_denormal(False)
    assert not _caller_flushes()


def _denormal_layer(use_cudnn):
    """An LSTM whose cell state is denormal unless denormals are flushed:
    the candidate gate's only weight is a denormal, so g = tanh(1e-39 x)
    and c = i g are denormals, or exactly zero when flushed (the weight
    reads as zero)."""
    features = 3
    kernel = np.zeros((features, 4 * UNITS), "float32")
    kernel[:, 2 * UNITS : 3 * UNITS] = DENORMAL
    recurrent = np.zeros((UNITS, 4 * UNITS), "float32")
    bias = np.zeros((4 * UNITS,), "float32")
    return helpers.built_layer(
        keras_lstm.LSTM,
        [kernel, recurrent, bias],
        features=features,
        units=UNITS,
        use_cudnn=use_cudnn,
        return_sequences=True,
        return_state=True,
    )


@needs_flush
def test_the_fused_forward_flushes_denormals(_threads):
    x = helpers.tensor(np.ones((256, LONG, 3), "float32"))
    with torch.no_grad():
        *_, c_generic = _denormal_layer(False)(x)
        *_, c_fused = _denormal_layer("auto")(x)
        *_, c_short = _denormal_layer("auto")(x[:, : LONG - 1])
    # The keras.ops path leaves the process's setting alone: denormals.
    assert bool((c_generic != 0).all())
    assert float(c_generic.abs().max()) < 1.2e-38
    # The fused op flushes them, in every row (rows run on both threads).
    assert bool((c_fused == 0).all())
    assert not _caller_flushes()
    # Below FLUSH_FROM_STEPS it leaves the setting alone.
    assert bool((c_short != 0).all())


@needs_flush
def test_the_fused_backward_flushes_denormals(_threads):
    rng = np.random.default_rng(3)
    x = helpers.random_inputs(rng, batch=64, timesteps=LONG)
    weights = helpers.random_weights(rng)

    def input_gradient(use_cudnn):
        layer = helpers.built_layer(
            keras_lstm.LSTM, weights, use_cudnn=use_cudnn
        )
        inputs = helpers.tensor(x).requires_grad_(True)
        # The gradient reaching the layer is a denormal everywhere.
        (layer(inputs).sum() * DENORMAL).backward()
        return inputs.grad, layer.cell.kernel.value.grad

    grad_x, grad_kernel = input_gradient(False)
    assert bool((grad_x != 0).any()) and bool((grad_kernel != 0).any())
    grad_x, grad_kernel = input_gradient("auto")
    assert bool((grad_x == 0).all()) and bool((grad_kernel == 0).all())
    assert not _caller_flushes()
    assert _zeros_in_parallel_op()[0] == 0


@needs_flush
def test_no_thread_changes_its_setting(_threads):
    # A thread started before, and one started after, a forward and
    # backward pass of the fused op (a new thread inherits its creator's
    # floating-point setting).
    before = []
    started = threading.Event()
    go = threading.Event()

    def worker():
        started.set()
        go.wait(30)
        before.append(_caller_flushes())

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait(30)

    rng = np.random.default_rng(4)
    layer = helpers.built_layer(
        keras_lstm.LSTM, helpers.random_weights(rng), return_sequences=True
    )
    x = helpers.random_inputs(rng, timesteps=LONG)
    inputs = helpers.tensor(x).requires_grad_(True)
    layer(inputs).sum().backward()

    go.set()
    thread.join(30)
    after = []
    late = threading.Thread(target=lambda: after.append(_caller_flushes()))
    late.start()
    late.join(30)
    assert before == [False] and after == [False]
    assert not _caller_flushes()
    assert _zeros_in_parallel_op()[0] == 0


def test_explain_says_denormals_are_flushed(monkeypatch):
    def flushed(steps, units=4):
        x = np.zeros((2, steps, 3))
        plan = keras_lstm.explain(keras_lstm.LSTM(units), x)
        return any("denormal" in n for n in plan.notes)

    # Not for a small amount of work (rows x steps x units): the cost of
    # setting it would show.
    assert not flushed(LONG)
    big = torch_kernels.FLUSH_FROM_WORK // (2 * LONG)
    assert flushed(LONG, units=big) == denormals.supported()
    monkeypatch.setattr(torch_kernels, "FLUSH_FROM_WORK", 0)
    assert flushed(LONG) == denormals.supported()
    # Nor for short sequences.
    assert not flushed(LONG - 1)


@needs_flush
def test_a_retained_graph_backpropagates_twice(_threads):
    rng = np.random.default_rng(5)
    x = helpers.random_inputs(rng, timesteps=LONG)
    layer = helpers.built_layer(keras_lstm.LSTM, helpers.random_weights(rng))
    inputs = helpers.tensor(x).requires_grad_(True)
    loss = layer(inputs).sum()
    loss.backward(retain_graph=True)
    first = inputs.grad.clone()
    loss.backward()
    torch.testing.assert_close(inputs.grad, 2 * first)


@pytest.mark.parametrize(
    "mask_kind, cuda, gathers",
    [
        ("right", False, False),
        ("full_row", False, False),
        ("holes", False, True),
        # On CUDA, asking would make the host wait for the GPU.
        ("right", True, True),
    ],
)
def test_right_padded_masks_reach_the_kernel_without_a_gather(
    monkeypatch, mask_kind, cuda, gathers
):
    # Padded batches (the common case) have their valid steps in front
    # already: no sort and no gather, in or out, only a select.
    from keras_lstm import masking

    monkeypatch.setattr(torch_kernels, "syncs_to_branch", lambda x: cuda)

    calls = []
    real = masking._gather_steps

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(masking, "_gather_steps", spy)
    rng = np.random.default_rng(6)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    mask = helpers.make_mask(mask_kind)
    fused = helpers.built_layer(
        keras_lstm.LSTM, weights, return_sequences=True, return_state=True
    )
    with torch.no_grad():
        got = helpers.call_layer(fused, x, mask=mask)
    assert bool(calls) == gathers
    generic = helpers.built_layer(
        keras_lstm.LSTM,
        weights,
        use_cudnn=False,
        return_sequences=True,
        return_state=True,
    )
    with torch.no_grad():
        helpers.assert_close(got, helpers.call_layer(generic, x, mask=mask))


@needs_flush
def test_second_order_gradients_through_the_flushed_op(_threads):
    # A gradient penalty differentiates the gradient: the flushed op's
    # backward must be differentiable, as torch's own op's is.
    rng = np.random.default_rng(7)
    x = helpers.random_inputs(rng, timesteps=LONG)
    weights = helpers.random_weights(rng)

    def penalty_gradient(use_cudnn):
        layer = helpers.built_layer(
            keras_lstm.LSTM, weights, use_cudnn=use_cudnn
        )
        inputs = helpers.tensor(x).requires_grad_(True)
        (grad,) = torch.autograd.grad(
            layer(inputs).sum(), inputs, create_graph=True
        )
        (grad.square().sum()).backward()
        return inputs.grad, layer.cell.kernel.value.grad

    for got, want in zip(
        penalty_gradient("auto"), penalty_gradient(False), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
