"""keras_lstm.Bidirectional: both directions in one fused kernel.

Golden numbers come from the NumPy oracle (outputs and states) and, for
gradients, from keras.layers.Bidirectional around generic keras_lstm.LSTM
layers (use_cudnn=False), whose outputs test_bidirectional.py checks against
the oracle and keras.layers.LSTM. On CPU the bidirectional kernel is
torch's; the JAX cuDNN one runs here on jax.experimental.rnn's reference
(see test_gpu.py).
"""

import itertools

import keras
import numpy as np
import pytest

import keras_lstm
import keras_lstm.backend
from tests import cudnn_emulation, helpers
from tests.oracle import lstm_reference
from tests.test_bidirectional import _oracle
from tests.test_fused_parity import grad, reference_mode

BACKEND = keras.backend.backend()
B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS
MASK_KINDS = ["none", "right", "left", "holes", "full_row"]
KERNELS = keras_lstm.backend.kernels


def _bidirectional_here(masked_with_states=False):
    """Whether a bidirectional kernel runs float32 calls on this machine's
    device (torch anywhere, JAX on a GPU), as the kernel module says."""
    if KERNELS is None:
        return False
    x = helpers.tensor(np.zeros((2, 3, F), "float32"))
    return not KERNELS.bidirectional_unsupported(x, masked_with_states)


FUSED_HERE = _bidirectional_here()


def _pair(seed, merge_mode="concat", **kwargs):
    """keras_lstm.Bidirectional and keras.layers.Bidirectional around
    generic layers, with the same random weights; and the weights."""
    fused = keras_lstm.Bidirectional(
        keras_lstm.LSTM(U, **kwargs), merge_mode=merge_mode
    )
    generic = keras.layers.Bidirectional(
        keras_lstm.LSTM(U, use_cudnn=False, **kwargs), merge_mode=merge_mode
    )
    rng = np.random.default_rng(seed)
    weights = helpers.random_weights(rng) + helpers.random_weights(rng)
    for bidi in (fused, generic):
        bidi.build((None, None, F))
        bidi.set_weights(weights)
    return fused, generic, weights


def _spy(monkeypatch):
    """Counts the calls of the bidirectional and unidirectional kernels."""
    calls = {"bidirectional": 0, "lstm": 0}
    for name, attr in (
        ("bidirectional", "lstm_bidirectional"),
        ("lstm", "lstm"),
    ):
        real = getattr(KERNELS, attr, None)
        if real is None:
            continue

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(KERNELS, attr, spy)
    return calls


def _flat(outputs):
    if isinstance(outputs, (list, tuple)):
        return [o for out in outputs for o in _flat(out)]
    return [outputs]


def _call(bidi, x, mask=None, initial_state=None):
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = helpers.tensor(mask)
    if initial_state is not None:
        kwargs["initial_state"] = [helpers.tensor(s) for s in initial_state]
    return helpers.to_numpy(_flat(bidi(helpers.tensor(x), **kwargs)))


def _expected(x, weights, mask, merge_mode, return_sequences, state=None):
    forward, backward = _oracle(x, weights, mask, return_sequences, state)
    merged = {
        "concat": [np.concatenate([forward, backward], -1)],
        "mul": [forward * backward],
        None: [forward, backward],
    }[merge_mode]
    return merged


def _states(x, weights, mask, state=None):
    states = [None, None] if state is None else [state[:2], state[2:]]
    out = []
    for w, go_backwards, s in zip(
        (weights[:3], weights[3:]), (False, True), states, strict=True
    ):
        _, h, c = lstm_reference(
            x,
            *w,
            initial_state=s,
            mask=mask,
            return_state=True,
            go_backwards=go_backwards,
        )
        out += [h, c]
    return out


def _check_gradients(fused, generic, x, mask, state, expected, seed):
    """Gradients of both layers w.r.t. inputs, states and all six weights,
    for one random cotangent per output."""
    rng = np.random.default_rng(seed)
    cotangents = [
        keras.ops.convert_to_tensor(rng.normal(size=e.shape).astype("float32"))
        for e in expected
    ]
    mask_t = helpers.tensor(mask)
    n_states = 0 if state is None else 4

    def loss(layer):
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def fn(x, *rest):
            kwargs = {}
            if n_states:
                kwargs["initial_state"] = list(rest[:n_states])
            if mask_t is not None:
                kwargs["mask"] = mask_t
            outputs, _ = layer.stateless_call(
                list(rest[n_states:]), non_trainable, x, **kwargs
            )
            terms = [
                keras.ops.sum(o * c)
                for o, c in zip(_flat(outputs), cotangents, strict=True)
            ]
            return sum(terms[1:], terms[0])

        return fn

    arguments = [x] + (list(state) if state else []) + fused.get_weights()
    with reference_mode():
        want = grad(loss(generic), arguments)
    got = grad(loss(fused), arguments)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.any(w != 0), i
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=str(i))


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize(
    "return_sequences, return_state",
    list(itertools.product([False, True], repeat=2)),
    ids=["last", "last+state", "seq", "seq+state"],
)
@pytest.mark.parametrize("merge_mode", ["concat", "mul", None])
def test_matches_oracle_and_generic(
    monkeypatch, merge_mode, return_sequences, return_state, mask_kind
):
    fused, generic, weights = _pair(
        0,
        merge_mode,
        return_sequences=return_sequences,
        return_state=return_state,
    )
    x = helpers.random_inputs(np.random.default_rng(1))
    mask = helpers.make_mask(mask_kind)
    plan = keras_lstm.explain(fused, x, mask=mask)
    calls = _spy(monkeypatch)
    actual = _call(fused, x, mask)
    if FUSED_HERE:
        assert plan == keras_lstm.Plan(
            f"{KERNELS.name(helpers.tensor(x))}-bidirectional", ()
        )
        assert calls == {"bidirectional": 1, "lstm": 0}
    else:
        assert plan.reasons and calls["bidirectional"] == 0
    expected = _expected(x, weights, mask, merge_mode, return_sequences)
    if return_state:
        expected += _states(x, weights, mask)
    helpers.assert_close(actual, expected)
    helpers.assert_close(actual, _call(generic, x, mask))
    if merge_mode == "concat":  # the merge itself is not the kernel's
        _check_gradients(fused, generic, x, mask, None, expected, 2)


@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_initial_state(monkeypatch, mask_kind):
    fused, generic, weights = _pair(3, return_sequences=True, return_state=True)
    rng = np.random.default_rng(4)
    x = helpers.random_inputs(rng)
    state = helpers.random_state(rng) + helpers.random_state(rng)
    mask = helpers.make_mask(mask_kind)
    plan = keras_lstm.explain(fused, x, mask=mask, initial_state=state)
    calls = _spy(monkeypatch)
    actual = _call(fused, x, mask, state)
    expected = _expected(x, weights, mask, "concat", True, state)
    expected += _states(x, weights, mask, state)
    helpers.assert_close(actual, expected)
    if FUSED_HERE and (mask is None or _bidirectional_here(True)):
        assert calls["bidirectional"] == 1 and not plan.reasons
    elif FUSED_HERE:
        # torch's kernel crosses the padding first: only zero backward
        # states survive it, so each direction runs its own kernel.
        assert calls == {"bidirectional": 0, "lstm": 2}
        assert any("initial or stateful" in r for r in plan.reasons)
        assert plan.kernel == KERNELS.name(helpers.tensor(x))
    _check_gradients(fused, generic, x, mask, state, expected, 5)


@pytest.mark.parametrize("mask_kind", ["none", "right"])
def test_stateful_keeps_both_directions(monkeypatch, mask_kind):
    rng = np.random.default_rng(6)
    weights = helpers.random_weights(rng) + helpers.random_weights(rng)
    x1, x2 = helpers.random_inputs(rng), helpers.random_inputs(rng)
    mask = helpers.make_mask(mask_kind)
    layers = []
    for cls, kwargs in (
        (keras_lstm.Bidirectional, {}),
        (keras.layers.Bidirectional, {"use_cudnn": False}),
    ):
        bidi = cls(keras_lstm.LSTM(U, stateful=True, **kwargs))
        bidi.build((B, T, F))
        bidi.set_weights(weights)
        layers.append(bidi)
    calls = _spy(monkeypatch)
    outputs = [[_call(b, x, mask) for x in (x1, x2)] for b in layers]
    helpers.assert_close(outputs[0], outputs[1])
    if FUSED_HERE:
        runs = mask is None or _bidirectional_here(True)
        assert calls["bidirectional"] == (2 if runs else 0)
    # The second call started from the first one's final states.
    states = [helpers.to_numpy(v) for v in layers[0].forward_layer.states]
    _, h, c = lstm_reference(x1, *weights[:3], mask=mask, return_state=True)
    _, h, c = lstm_reference(
        x2, *weights[:3], initial_state=[h, c], mask=mask, return_state=True
    )
    helpers.assert_close(states, [h, c])


def test_dispatch_reasons(monkeypatch):
    x = helpers.random_inputs(np.random.default_rng(7))
    plain = keras.layers.Bidirectional(keras_lstm.LSTM(U))
    plan = keras_lstm.explain(plain, x)
    assert any("keras_lstm.Bidirectional" in r for r in plan.reasons)
    assert plan.kernel == keras_lstm.explain(keras_lstm.LSTM(U), x).kernel

    generic = keras_lstm.Bidirectional(keras_lstm.LSTM(U, use_cudnn=False))
    plan = keras_lstm.explain(generic, x)
    assert plan.kernel == "generic"
    assert any(
        r.startswith("forward layer: use_cudnn=False") for r in plan.reasons
    )

    dropout = keras_lstm.Bidirectional(keras_lstm.LSTM(U, dropout=0.5))
    assert not any(
        "dropout" in r for r in keras_lstm.explain(dropout, x).reasons
    )
    plan = keras_lstm.explain(dropout, x, training=True)
    assert any("dropout > 0 in training" in r for r in plan.reasons)

    different = keras_lstm.Bidirectional(
        keras_lstm.LSTM(U),
        backward_layer=keras_lstm.LSTM(U + 1, go_backwards=True),
    )
    assert any("units" in r for r in keras_lstm.explain(different, x).reasons)


def test_non_keras_lstm_layers_run_as_keras_does():
    x = helpers.random_inputs(np.random.default_rng(8))
    ours = keras_lstm.Bidirectional(keras.layers.GRU(U, return_sequences=True))
    theirs = keras.layers.Bidirectional(
        keras.layers.GRU(U, return_sequences=True)
    )
    for bidi in (ours, theirs):
        bidi.build((None, None, F))
    theirs.set_weights(ours.get_weights())
    helpers.assert_close(_call(ours, x), _call(theirs, x))
    plan = keras_lstm.explain(ours, x)
    assert plan.kernel == "generic" and plan.reasons


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
def test_time_major_gives_the_right_numbers(return_sequences):
    # keras.layers.Bidirectional flips axis 1 (the batch axis of a
    # time_major layer); keras_lstm.Bidirectional flips time.
    rng = np.random.default_rng(9)
    x = helpers.random_inputs(rng)
    weights = helpers.random_weights(rng) + helpers.random_weights(rng)
    bidi = keras_lstm.Bidirectional(
        keras_lstm.LSTM(U, return_sequences=return_sequences, time_major=True)
    )
    bidi.build((T, None, F))
    bidi.set_weights(weights)
    actual = _call(bidi, np.ascontiguousarray(np.transpose(x, (1, 0, 2))))
    forward, backward = _oracle(x, weights, None, return_sequences)
    expected = np.concatenate([forward, backward], -1)
    if return_sequences:
        expected = np.transpose(expected, (1, 0, 2))
    helpers.assert_close(actual, [expected])


def _model(cls):
    inputs = keras.Input((T, F))
    masked = keras.layers.Masking(0.0)(inputs)
    seq = cls(keras_lstm.LSTM(U, return_sequences=True), name="bidi")(masked)
    return keras.Model(inputs, keras.layers.Dense(2)(seq))


def test_saving_and_weights_files_interchange(tmp_path):
    model = _model(keras_lstm.Bidirectional)
    x = helpers.random_inputs(np.random.default_rng(10))
    x[~helpers.make_mask("holes")] = 0.0
    expected = helpers.to_numpy(model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bidi")) is keras_lstm.Bidirectional
    helpers.assert_close(
        helpers.to_numpy(loaded.predict(x, verbose=0)), expected
    )
    # The same weights file layout as keras.layers.Bidirectional.
    model.save_weights(tmp_path / "m.weights.h5")
    plain = _model(keras.layers.Bidirectional)
    plain.load_weights(tmp_path / "m.weights.h5")
    helpers.assert_close(
        helpers.to_numpy(plain.predict(x, verbose=0)), expected
    )


def test_training_matches_keras_bidirectional():
    rng = np.random.default_rng(11)
    x = helpers.random_inputs(rng)
    x[~helpers.make_mask("holes")] = 0.0
    y = rng.normal(size=(B, T, 2)).astype("float32")
    weights = None
    trained = []
    for cls in (keras_lstm.Bidirectional, keras.layers.Bidirectional):
        model = _model(cls)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    for got, want, before in zip(*trained, weights, strict=True):
        assert np.any(np.abs(want - before) > 1e-4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX cuDNN layout")
def test_jax_cudnn_bidirectional_on_reference_rnn(monkeypatch):
    # The GPU branch (packing of both directions, stacked states, the
    # backward sequence put in its own order) end to end on CPU, with the
    # cuDNN call replaced by jax.experimental.rnn's reference of it.
    cudnn_emulation.install(monkeypatch.setattr)
    fused, generic, weights = _pair(
        12, return_sequences=True, return_state=True
    )
    rng = np.random.default_rng(13)
    x = helpers.random_inputs(rng)
    state = helpers.random_state(rng) + helpers.random_state(rng)
    assert keras_lstm.explain(fused, x).kernel == "jax-cudnn-bidirectional"
    for mask_kind in ("none", "right", "holes", "full_row"):
        mask = helpers.make_mask(mask_kind)
        calls = _spy(monkeypatch)
        actual = _call(fused, x, mask, state)
        assert calls == {"bidirectional": 1, "lstm": 0}, mask_kind
        expected = _expected(x, weights, mask, "concat", True, state)
        expected += _states(x, weights, mask, state)
        helpers.assert_close(actual, expected)
        _check_gradients(fused, generic, x, mask, state, expected, 14)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX cuDNN layout")
def test_jax_bidirectional_packing_is_the_cudnn_layout():
    from jax.experimental import rnn

    from keras_lstm.backend import jax as jax_kernels

    rng = np.random.default_rng(15)
    forward, backward = helpers.random_weights(rng), helpers.random_weights(rng)
    packed = jax_kernels.pack_cudnn_weights(forward, backward)
    assert packed.shape == (rnn.get_num_params_in_lstm(F, U, 1, True),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(packed, F, U, 1, True)
    for d, (kernel, recurrent, bias) in enumerate((forward, backward)):
        np.testing.assert_array_equal(np.asarray(w_ih[d]), kernel.T)
        np.testing.assert_array_equal(np.asarray(w_hh[d]), recurrent.T)
        np.testing.assert_array_equal(np.asarray(b_ih[d]), bias)
        np.testing.assert_array_equal(np.asarray(b_hh[d]), 0 * bias)


@pytest.mark.gpu
def test_gpu_runs_the_bidirectional_kernel(monkeypatch):
    fused, generic, weights = _pair(
        16, return_sequences=True, return_state=True
    )
    x = helpers.random_inputs(np.random.default_rng(17))
    mask = helpers.make_mask("holes")
    plan = keras_lstm.explain(fused, x, mask=mask)
    if BACKEND == "tensorflow":
        assert plan.reasons  # no bidirectional TensorFlow kernel
        return
    assert plan.kernel.endswith("cudnn-bidirectional") and not plan.reasons
    calls = _spy(monkeypatch)
    actual = _call(fused, x, mask)
    assert calls["bidirectional"] == 1
    expected = _expected(x, weights, mask, "concat", True)
    expected += _states(x, weights, mask)
    helpers.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("inner", [False, True], ids=["wrapper", "both"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(monkeypatch, policy, inner):
    # As in keras.layers.Bidirectional, a policy on the wrapper alone leaves
    # the directions in float32 and casts the merged output.
    fused, _, weights = _pair(18, return_sequences=True)
    mixed = keras_lstm.Bidirectional(
        keras_lstm.LSTM(
            U, return_sequences=True, dtype=policy if inner else None
        ),
        dtype=policy,
    )
    mixed.build((None, None, F))
    mixed.set_weights(weights)
    assert all(w.dtype == "float32" for w in mixed.weights)
    x = helpers.random_inputs(np.random.default_rng(19))
    mask = helpers.make_mask("holes")
    calls = _spy(monkeypatch)
    out = mixed(helpers.tensor(x), mask=helpers.tensor(mask))
    assert keras.backend.standardize_dtype(out.dtype) == policy[6:]
    if FUSED_HERE:
        assert calls["bidirectional"] == 1
    np.testing.assert_allclose(
        helpers.to_numpy(out), _call(fused, x, mask)[0], atol=3e-2
    )
