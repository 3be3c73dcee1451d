"""The fused kernels on GPU, and the parts of the GPU paths a CPU can check.

Tests marked `gpu` run the cuDNN kernels and are skipped without a GPU (see
conftest.py). The others check, on any machine, what the GPU paths rest on:
the JAX cuDNN weight layout and argument plumbing (through the reference
implementation in jax.experimental.rnn), and torch's length handling, which
is the same code on CPU and CUDA.
"""

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from keras_lstm import ops as lstm_ops
from tests import cudnn_emulation, helpers
from tests.test_fused_parity import (
    check_gradients,
    forward,
    grad,
    layer_pair,
    spy_on_kernel,
)

BACKEND = keras.backend.backend()
GPU_KERNELS = {
    "tensorflow": "tensorflow-cudnn",
    "jax": "jax-cudnn",
    "torch": "torch-cudnn",
}
MASK_KINDS = ["none", "right", "left", "holes", "full_row"]
# cuDNN sums in its own order (and may pick other algorithms than the
# generic path's matmuls): a little more room than on CPU.
GPU_TOL = 1e-4

only_jax = pytest.mark.skipif(BACKEND != "jax", reason="JAX cuDNN layout")
only_torch = pytest.mark.skipif(BACKEND != "torch", reason="torch kernel")


# ---------------------------------------------------------------------------
# On a GPU.


@pytest.mark.gpu
def test_gpu_runs_the_cudnn_kernel(monkeypatch):
    rng = np.random.default_rng(0)
    x = helpers.random_inputs(rng)
    fused, _ = layer_pair(helpers.random_weights(rng))
    plan = keras_lstm.explain(fused, x, mask=helpers.make_mask("holes"))
    assert plan.kernel == GPU_KERNELS[BACKEND]
    assert plan.reasons == ()
    calls = spy_on_kernel(monkeypatch)
    helpers.call_layer(fused, x, mask=helpers.make_mask("holes"))
    assert len(calls) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_gpu_forward_and_gradients_match_generic(
    monkeypatch, mask_kind, go_backwards
):
    rng = np.random.default_rng(1)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights,
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
    )
    assert keras_lstm.explain(fused, x).kernel == GPU_KERNELS[BACKEND]
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected, rtol=GPU_TOL, atol=GPU_TOL)
    check_gradients(
        fused, generic, x, state, weights, mask, expected, rng, tol=GPU_TOL
    )


# The steps cuDNN does not compute run each backend's own loop there.
GPU_LOOPS = {
    "tensorflow": "tensorflow-loop",
    "jax": "jax-scan",
    "torch": "torch-loop",
}


@pytest.mark.gpu
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gpu_other_steps_run_the_loop_and_match_generic(monkeypatch, mask_kind):
    rng = np.random.default_rng(6)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    state = helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights,
        return_sequences=True,
        return_state=True,
        activation="relu",
        recurrent_activation="hard_sigmoid",
    )
    plan = keras_lstm.explain(fused, x, mask=mask)
    assert plan.kernel == GPU_LOOPS[BACKEND] and plan.reasons == ()
    assert any("cuDNN" in n or "torch's fused" in n for n in plan.notes)
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, state, mask)
    actual = forward(fused, x, state, mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected, rtol=GPU_TOL, atol=GPU_TOL)
    check_gradients(
        fused, generic, x, state, weights, mask, expected, rng, tol=GPU_TOL
    )


@pytest.mark.gpu
def test_gpu_stateful_matches_generic(monkeypatch):
    rng = np.random.default_rng(2)
    weights = helpers.random_weights(rng)
    fused, generic = layer_pair(weights, stateful=True, return_state=True)
    calls = spy_on_kernel(monkeypatch)
    for n, mask in enumerate((None, helpers.make_mask("left")), 1):
        x = helpers.random_inputs(rng)
        expected = forward(generic, x, mask=mask)
        actual = forward(fused, x, mask=mask)
        assert len(calls) == n
        helpers.assert_close(actual, expected, rtol=GPU_TOL, atol=GPU_TOL)


# ---------------------------------------------------------------------------
# JAX: the cuDNN weight layout and plumbing, through lstm_ref on any device.


def _jax_problem(seed, batch=3, timesteps=5):
    rng = np.random.default_rng(seed)
    x = helpers.random_inputs(rng, batch=batch, timesteps=timesteps)
    kernel, recurrent_kernel, bias = helpers.random_weights(rng)
    h0, c0 = helpers.random_state(rng, batch=batch)
    return x, kernel, recurrent_kernel, bias, h0, c0


@only_jax
def test_pack_cudnn_weights_is_the_cudnn_layout():
    from jax.experimental import rnn

    from keras_lstm.backend import jax as jax_kernels

    _, kernel, recurrent_kernel, bias, _, _ = _jax_problem(3)
    features, units = helpers.FEATURES, helpers.UNITS
    packed = jax_kernels.pack_cudnn_weights((kernel, recurrent_kernel, bias))
    assert packed.shape == (
        rnn.get_num_params_in_lstm(features, units, 1, False),
    )
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(
        packed, features, units, 1, False
    )
    # Gates i, f, g, o in both layouts: only a transpose in between.
    np.testing.assert_array_equal(np.asarray(w_ih[0]), kernel.T)
    np.testing.assert_array_equal(np.asarray(w_hh[0]), recurrent_kernel.T)
    np.testing.assert_array_equal(np.asarray(b_ih[0]), bias)
    np.testing.assert_array_equal(np.asarray(b_hh[0]), np.zeros_like(bias))


@only_jax
def test_lstm_ref_on_packed_weights_matches_generic():
    from jax.experimental import rnn

    from keras_lstm.backend import jax as jax_kernels

    x, kernel, recurrent_kernel, bias, h0, c0 = _jax_problem(4)
    features, units = helpers.FEATURES, helpers.UNITS
    # Right-padded rows of different lengths, 1 and full length included.
    lengths = np.array([5, 1, 3], dtype="int32")
    valid = np.arange(5)[None, :] < lengths[:, None]
    generic = helpers.built_layer(
        keras_lstm.LSTM,
        [kernel, recurrent_kernel, bias],
        use_cudnn=False,
        return_sequences=True,
        return_state=True,
    )
    want_seq, want_h, want_c = forward(generic, x, [h0, c0], valid)

    weights = rnn.unpack_lstm_weights(
        jax_kernels.pack_cudnn_weights((kernel, recurrent_kernel, bias)),
        features,
        units,
        1,
        False,
    )
    sequence, h, c = rnn.lstm_ref(
        x,
        h0[None],
        c0[None],
        *weights,
        lengths,
        features,
        units,
        1,
        0.0,
        False,
    )
    helpers.assert_close(h[0], want_h)
    helpers.assert_close(c[0], want_c)
    np.testing.assert_allclose(
        helpers.to_numpy(sequence)[valid],
        want_seq[valid],
        rtol=helpers.RTOL,
        atol=helpers.ATOL,
    )


@only_jax
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_jax_cudnn_path_on_reference_rnn_matches_generic(
    monkeypatch, mask_kind
):
    # The layer's cuDNN branch (packing, lengths, state shapes) runs end to
    # end on CPU with the cuDNN call replaced by JAX's own reference of it.

    cudnn_emulation.install(monkeypatch.setattr)
    x, kernel, recurrent_kernel, bias, h0, c0 = _jax_problem(5)
    weights = [kernel, recurrent_kernel, bias]
    mask = helpers.make_mask(mask_kind)
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True
    )
    assert keras_lstm.explain(fused, x).kernel == "jax-cudnn"
    calls = spy_on_kernel(monkeypatch)
    expected = forward(generic, x, [h0, c0], mask)
    actual = forward(fused, x, [h0, c0], mask)
    assert len(calls) == 1
    helpers.assert_close(actual, expected)
    rng = np.random.default_rng(6)
    check_gradients(fused, generic, x, [h0, c0], weights, mask, expected, rng)


@only_jax
@pytest.mark.parametrize(
    "policy", ["mixed_float16", "mixed_bfloat16", "float64"]
)
def test_jax_cudnn_takes_16_bit_as_float32_and_float64_on_the_scan(
    monkeypatch, policy
):
    # On a GPU, 16-bit inputs run cuDNN in float32 (not the keras.ops
    # scan) and give the compute dtype back; float64 runs the jax-scan
    # kernel there. explain() says so.
    import jax

    if policy == "float64" and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64")
    cudnn_emulation.install(monkeypatch.setattr)
    x, kernel, recurrent_kernel, bias, h0, c0 = _jax_problem(9)
    weights = [kernel, recurrent_kernel, bias]
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True, dtype=policy
    )
    compute = fused.compute_dtype
    plan = keras_lstm.explain(fused, x)
    if compute == "float64":
        assert plan.kernel == "jax-scan" and plan.notes == ()
    else:
        assert plan.kernel == "jax-cudnn"
        assert plan.notes[0].startswith(
            f"computes in float32 and returns {compute}"
        )
    calls = spy_on_kernel(monkeypatch)
    mask = helpers.make_mask("holes")
    outputs = helpers.call_layer(fused, x, [h0, c0], mask=mask)
    assert len(calls) == 1
    assert {str(o.dtype) for o in outputs} == {compute}
    tol = 1e-5 if compute == "float64" else 2e-2
    helpers.assert_close(
        helpers.to_numpy(outputs),
        forward(generic, x, [h0, c0], mask),
        rtol=tol,
        atol=tol,
    )


@only_jax
def test_jax_cudnn_precision_follows_jax_and_never_bfloat16(monkeypatch):
    import jax

    cudnn_emulation.install(monkeypatch.setattr)
    x, kernel, recurrent_kernel, bias, _, _ = _jax_problem(10)
    layer = helpers.built_layer(
        keras_lstm.LSTM, [kernel, recurrent_kernel, bias]
    )
    cudnn_emulation.PRECISIONS.clear()
    # The suite runs at "highest" (conftest.py): no TF32.
    assert not any("TF32" in n for n in keras_lstm.explain(layer, x).notes)
    layer(x)
    for precision in ("bfloat16", "default", "tensorfloat32"):
        with jax.default_matmul_precision(precision):
            assert any("TF32" in n for n in keras_lstm.explain(layer, x).notes)
            layer(x)
    assert (
        cudnn_emulation.PRECISIONS
        == [jax.lax.Precision.HIGHEST] + [jax.lax.Precision.HIGH] * 3
    )


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_gpu_mixed_precision_runs_the_cudnn_kernel(monkeypatch, policy):
    rng = np.random.default_rng(11)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng)
    fused, generic = layer_pair(
        weights, return_sequences=True, return_state=True, dtype=policy
    )
    assert keras_lstm.explain(fused, x).kernel == GPU_KERNELS[BACKEND]
    calls = spy_on_kernel(monkeypatch)
    mask = helpers.make_mask("right")
    actual = forward(fused, x, mask=mask)
    assert len(calls) == 1
    helpers.assert_close(
        actual, forward(generic, x, mask=mask), rtol=3e-2, atol=3e-2
    )


@pytest.mark.gpu
def test_gpu_bidirectional_matches_per_direction_generic(monkeypatch):
    rng = np.random.default_rng(12)
    x = helpers.random_inputs(rng)
    mask = helpers.make_mask("holes")
    fused = keras_lstm.Bidirectional(
        keras_lstm.LSTM(helpers.UNITS, return_sequences=True)
    )
    generic = keras_lstm.Bidirectional(
        keras_lstm.LSTM(helpers.UNITS, return_sequences=True, use_cudnn=False)
    )
    fused.build(x.shape)
    generic.build(x.shape)
    generic.set_weights(fused.get_weights())
    plan = keras_lstm.explain(fused, x, mask=mask)
    if BACKEND != "tensorflow":
        assert plan.kernel == GPU_KERNELS[BACKEND] + "-bidirectional"
    helpers.assert_close(
        helpers.call_layer(fused, x, mask=mask),
        helpers.call_layer(generic, x, mask=mask),
        rtol=GPU_TOL,
        atol=GPU_TOL,
    )


@pytest.mark.gpu
def test_gpu_fit_save_and_load(tmp_path):
    rng = np.random.default_rng(13)
    x = helpers.random_inputs(rng, batch=32)
    y = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Masking(),
            keras_lstm.LSTM(8, return_sequences=True),
            keras_lstm.LSTM(4),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


@pytest.mark.gpu
def test_gpu_empty_batch_and_short_sequences():
    layer = keras_lstm.LSTM(
        helpers.UNITS, return_sequences=True, return_state=True
    )
    for shape in [(0, 5), (4, 0), (4, 1), (1, 1)]:
        x = np.zeros(shape + (helpers.FEATURES,), "float32")
        outputs = helpers.call_layer(layer, x)
        assert tuple(outputs[0].shape) == shape + (helpers.UNITS,)
    mask = np.zeros((4, 5), bool)  # every row fully masked
    x = np.ones((4, 5, helpers.FEATURES), "float32")
    out, h, c = helpers.call_layer(layer, x, mask=mask)
    assert not helpers.to_numpy(out).any() and not helpers.to_numpy(h).any()


@pytest.mark.gpu
def test_gpu_float32_runs_as_tf32_only_where_the_framework_says():
    # Outside keras_lstm.full_float32() each framework's own default
    # holds; explain() says when float32 runs as TF32.
    layer = keras_lstm.LSTM(4)
    x = np.zeros((2, 5, 3), "float32")
    with keras_lstm.full_float32():
        assert not any("TF32" in n for n in keras_lstm.explain(layer, x).notes)


@pytest.mark.gpu
@only_torch
def test_gpu_torch_warns_nothing_and_trains(recwarn):
    import torch

    rng = np.random.default_rng(14)
    x = helpers.random_inputs(rng)
    layer = keras_lstm.LSTM(helpers.UNITS, return_sequences=True)
    out = layer(x)
    out.sum().backward()
    assert layer.cell.kernel.value.grad is not None
    messages = [str(w.message) for w in recwarn]
    assert not any("contiguous chunk" in m for m in messages), messages
    with torch.no_grad():
        layer(x)


@pytest.mark.gpu
@only_torch
def test_gpu_torch_compile_train_step():
    rng = np.random.default_rng(15)
    x = helpers.random_inputs(rng, batch=16)
    y = rng.normal(size=(16, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), keras_lstm.LSTM(8), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse", jit_compile=True)
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert np.isfinite(losses).all()


# ---------------------------------------------------------------------------
# torch: lengths in the kernel shared by CPU and CUDA.


@only_torch
def test_torch_kernel_lengths_gradients_match_generic_ops():
    # The saturated padded steps must pass c's gradient through unchanged
    # and add none of their own: compared with keras_lstm.ops.lstm, which
    # keeps the states with a where at masked steps.
    from keras_lstm.backend import torch as torch_kernels

    rng = np.random.default_rng(8)
    batch, timesteps = 3, 5
    x = helpers.random_inputs(rng, batch=batch, timesteps=timesteps)
    weights = helpers.random_weights(rng)
    h0, c0 = helpers.random_state(rng, batch=batch)
    lengths = np.array([3, 5, 1], dtype="int32")
    valid = np.arange(timesteps)[None, :] < lengths[:, None]
    cot_h, cot_c = (
        keras.ops.convert_to_tensor(c, dtype="float32")
        for c in rng.normal(size=(2, batch, helpers.UNITS))
    )

    def loss(h, c):
        return keras.ops.sum(h * cot_h) + keras.ops.sum(c * cot_c)

    def fused(*args):
        _, h, c = torch_kernels.lstm(
            *args[:3], keras.ops.convert_to_tensor(lengths), *args[3:]
        )
        return loss(h, c)

    def generic(*args):
        _, h, c = lstm_ops.lstm(
            *args[:3],
            keras.ops.convert_to_tensor(valid),
            *args[3:],
            activation=keras.activations.tanh,
            recurrent_activation=keras.activations.sigmoid,
        )
        return loss(h, c)

    arguments = [x, h0, c0, *weights]
    want = grad(generic, arguments)
    got = grad(fused, arguments)
    names = ["inputs", "h0", "c0", "kernel", "recurrent_kernel", "bias"]
    for name, g, w in zip(names, got, want, strict=True):
        assert np.any(w != 0), name
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
    # No gradient reaches the padded inputs.
    assert np.all(got[0][~valid] == 0)
