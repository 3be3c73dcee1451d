"""keras_lstm.convert: torch.nn.LSTM and cuDNN weights, replace_keras_lstm.

Golden numbers for the torch conversions come from torch.nn.LSTM's own
forward pass; those tests skip where torch is not installed (the per-backend
tox envs other than torch). The replace_keras_lstm tests compare with the
keras.layers.LSTM model they were converted from.
"""

import keras
import numpy as np
import pytest

import keras_lstm
from keras_lstm import convert
from tests import helpers

B, T, F, U = helpers.BATCH, helpers.TIMESTEPS, helpers.FEATURES, helpers.UNITS


def _torch():
    return pytest.importorskip("torch")


def _torch_lstm(seed=0, **kwargs):
    """A torch.nn.LSTM with random weights of scale 0.5 (torch's default
    init is small enough that a swapped gate barely shows)."""
    torch = _torch()
    torch.manual_seed(seed)
    kwargs.setdefault("batch_first", True)
    module = torch.nn.LSTM(F, U, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module


def _torch_forward(module, x, batch_first=True):
    """(sequence, h_n, c_n) of a torch module as float64 NumPy."""
    torch = _torch()
    with torch.no_grad():
        seq, (h, c) = module(torch.from_numpy(x))
    seq = seq.numpy().astype("float64")
    if not batch_first:
        seq = np.transpose(seq, (1, 0, 2))
    return seq, h.numpy().astype("float64"), c.numpy().astype("float64")


def _data(seed=0):
    return helpers.random_inputs(np.random.default_rng(seed))


# from_torch ----------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_from_torch_unidirectional(bias):
    module = _torch_lstm(bias=bias)
    weights = convert.from_torch(module)
    assert [w.shape for w in weights] == [(F, 4 * U), (U, 4 * U), (4 * U,)]
    if not bias:
        np.testing.assert_array_equal(weights[2], 0.0)
    layer = helpers.built_layer(
        keras_lstm.LSTM, weights, return_sequences=True, return_state=True
    )
    x = _data(1)
    seq, h, c = _torch_forward(module, x)
    helpers.assert_close(helpers.call_layer(layer, x), [seq, h[0], c[0]])


def test_from_torch_not_batch_first_into_time_major_layer():
    # The weights do not depend on the module's layout.
    module = _torch_lstm(seed=1, batch_first=False)
    layer = helpers.built_layer(
        keras_lstm.LSTM,
        convert.from_torch(module),
        return_sequences=True,
        time_major=True,
    )
    x_tm = np.ascontiguousarray(np.transpose(_data(2), (1, 0, 2)))
    seq, _, _ = _torch_forward(module, x_tm, batch_first=False)
    helpers.assert_close(
        helpers.call_layer(layer, x_tm), np.transpose(seq, (1, 0, 2))
    )


def test_from_torch_bidirectional():
    module = _torch_lstm(seed=2, bidirectional=True)
    weights = convert.from_torch(module)
    assert len(weights) == 6
    bidi = keras.layers.Bidirectional(
        keras_lstm.LSTM(U, return_sequences=True, return_state=True)
    )
    bidi.build((None, None, F))
    bidi.set_weights(weights)
    x = _data(3)
    seq, h, c = _torch_forward(module, x)
    # torch's h_n / c_n: (direction, batch, units), forward first; Keras:
    # [sequence, h_fw, c_fw, h_bw, c_bw].
    helpers.assert_close(bidi(helpers.tensor(x)), [seq, h[0], c[0], h[1], c[1]])


def test_from_torch_two_layers():
    module = _torch_lstm(seed=3, num_layers=2)
    # Layer 1 reads layer 0's outputs: its input size is the units.
    first = helpers.built_layer(
        keras_lstm.LSTM,
        convert.from_torch(module, layer=0),
        return_sequences=True,
    )
    second = helpers.built_layer(
        keras_lstm.LSTM,
        convert.from_torch(module, layer=1),
        features=U,
        return_sequences=True,
        return_state=True,
    )
    x = _data(4)
    seq, h, c = _torch_forward(module, x)
    actual = second(first(helpers.tensor(x)))
    helpers.assert_close(actual, [seq, h[1], c[1]])


def test_from_torch_refusals():
    with pytest.raises(ValueError, match="proj_size"):
        convert.from_torch(_torch_lstm(proj_size=2))
    two = _torch_lstm(num_layers=2)
    with pytest.raises(ValueError, match="layer="):
        convert.from_torch(two)
    for layer in (2, -1):
        with pytest.raises(ValueError, match=f"received {layer}"):
            convert.from_torch(two, layer=layer)
    torch = _torch()
    with pytest.raises(TypeError, match="torch.nn.LSTM"):
        convert.from_torch(torch.nn.GRU(F, U))


# to_torch ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, use_bias",
    [
        (keras_lstm.LSTM, True),
        (keras_lstm.LSTM, False),
        (keras.layers.LSTM, True),
    ],
    ids=["ours", "ours_no_bias", "keras"],
)
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
def test_to_torch(cls, use_bias, batch_first):
    _torch()
    rng = np.random.default_rng(5)
    layer = helpers.built_layer(
        cls,
        helpers.random_weights(rng, use_bias=use_bias),
        use_bias=use_bias,
        return_sequences=True,
        return_state=True,
    )
    module = convert.to_torch(layer, batch_first=batch_first)
    assert module.batch_first is batch_first
    assert module.num_layers == 1 and not module.bidirectional
    x = helpers.random_inputs(rng)
    x_torch = x if batch_first else np.transpose(x, (1, 0, 2)).copy()
    seq, h, c = _torch_forward(module, x_torch, batch_first=batch_first)
    helpers.assert_close(helpers.call_layer(layer, x), [seq, h[0], c[0]])


def test_to_torch_and_back_is_identity():
    _torch()
    rng = np.random.default_rng(6)
    weights = helpers.random_weights(rng)
    module = convert.to_torch(helpers.built_layer(keras_lstm.LSTM, weights))
    for got, want in zip(convert.from_torch(module), weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_to_torch_refusals():
    _torch()
    relu = helpers.built_layer(
        keras_lstm.LSTM,
        helpers.random_weights(np.random.default_rng(7)),
        activation="relu",
    )
    with pytest.raises(ValueError, match="activation"):
        convert.to_torch(relu)
    with pytest.raises(ValueError, match="built"):
        convert.to_torch(keras_lstm.LSTM(U))


# cuDNN parameter vectors ---------------------------------------------------


def test_to_cudnn_layout_and_round_trip():
    weights = helpers.random_weights(np.random.default_rng(8))
    kernel, recurrent_kernel, bias = weights
    params = convert.to_cudnn(weights)
    # The canonical layout, written out: W_ih (4u, F), W_hh (4u, u), b_ih,
    # b_hh, each row-major, concatenated.
    sizes = np.cumsum([4 * U * F, 4 * U * U, 4 * U, 4 * U])
    w_ih, w_hh, b_ih, b_hh, rest = np.split(params, sizes)
    assert rest.size == 0
    np.testing.assert_array_equal(w_ih.reshape(4 * U, F), kernel.T)
    np.testing.assert_array_equal(w_hh.reshape(4 * U, U), recurrent_kernel.T)
    np.testing.assert_array_equal(b_ih, bias)
    np.testing.assert_array_equal(b_hh, 0.0)
    back = convert.from_cudnn(params, input_size=F, units=U)
    for got, want in zip(back, weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_from_cudnn_sums_the_two_biases():
    weights = helpers.random_weights(np.random.default_rng(9))
    params = convert.to_cudnn(weights)
    params[-4 * U :] = 0.25  # b_hh
    _, _, bias = convert.from_cudnn(params, input_size=F, units=U)
    np.testing.assert_allclose(bias, weights[2] + 0.25, rtol=1e-6)


def test_from_cudnn_matches_torch_flat_weights():
    # torch keeps one layer's parameters in the cuDNN order.
    torch = _torch()
    module = _torch_lstm(seed=10)
    flat = torch.cat([p.detach().reshape(-1) for p in module._flat_weights])
    got = convert.from_cudnn(flat, input_size=F, units=U)
    for a, b in zip(got, convert.from_torch(module), strict=True):
        np.testing.assert_array_equal(a, b)


def test_from_cudnn_size_error():
    params = convert.to_cudnn(helpers.random_weights(np.random.default_rng(11)))
    with pytest.raises(ValueError, match=f"received {params.size - 1}"):
        convert.from_cudnn(params[:-1], input_size=F, units=U)
    with pytest.raises(ValueError, match="units=5"):
        convert.from_cudnn(params, input_size=F, units=U + 1)


# replace_keras_lstm ----------------------------------------------------------


def _random_weights(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.normal(0.0, 0.5, w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )


def test_replace_in_sequential():
    model = keras.Sequential(
        [
            keras.Input((None, F)),
            keras.layers.LSTM(U, return_sequences=True, go_backwards=True),
            keras.layers.LSTM(U + 1),
            keras.layers.Dense(2),
        ]
    )
    _random_weights(model, 12)
    replaced = convert.replace_keras_lstm(model)
    assert [type(layer) for layer in replaced.layers] == [
        keras_lstm.LSTM,
        keras_lstm.LSTM,
        keras.layers.Dense,
    ]
    # The arguments came along, and the original model is untouched.
    assert replaced.layers[0].go_backwards
    assert replaced.layers[0].return_sequences
    assert replaced.layers[1].units == U + 1
    assert type(model.layers[0]) is keras.layers.LSTM
    x = _data(13)
    helpers.assert_close(
        replaced.predict(x, verbose=0),
        helpers.to_numpy(model.predict(x, verbose=0)),
    )


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_replace_in_functional_with_bidirectional_and_masking(merge_mode):
    x_in = keras.Input((T, F))
    y = keras.layers.Masking(0.0)(x_in)
    y = keras.layers.Bidirectional(
        keras.layers.LSTM(U, return_sequences=True),
        merge_mode=merge_mode,
        name="bidi",
    )(y)
    y = keras.layers.LSTM(U, name="last")(y)
    model = keras.Model(x_in, keras.layers.Dense(2)(y))
    _random_weights(model, 14)
    replaced = convert.replace_keras_lstm(model)

    bidi = replaced.get_layer("bidi")
    assert type(bidi) is keras_lstm.Bidirectional
    assert bidi.merge_mode == merge_mode
    assert type(bidi.forward_layer) is keras_lstm.LSTM
    assert type(bidi.backward_layer) is keras_lstm.LSTM
    assert bidi.backward_layer.go_backwards
    assert not bidi.forward_layer.go_backwards
    assert type(replaced.get_layer("last")) is keras_lstm.LSTM
    assert type(replaced.layers[1]) is keras.layers.Masking
    for a, b in zip(model.get_weights(), replaced.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    # Right padding and a hole: the mask reaches both LSTMs. Zero initial
    # states, where keras.layers.LSTM agrees on every backend.
    x = _data(15)
    x[0, 3:] = 0.0
    x[1, 2] = 0.0
    helpers.assert_close(
        replaced.predict(x, verbose=0),
        helpers.to_numpy(model.predict(x, verbose=0)),
    )


def test_replace_refuses_subclassed_model():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.lstm = keras.layers.LSTM(U)

        def call(self, x):
            return self.lstm(x)

    model = Subclassed()
    model(helpers.tensor(_data(16)))
    with pytest.raises(ValueError, match="subclassed Subclassed"):
        convert.replace_keras_lstm(model)


def test_replace_in_nested_model():
    inner = keras.Sequential(
        [keras.Input((None, F)), keras.layers.LSTM(U, return_sequences=True)],
        name="inner",
    )
    x_in = keras.Input((None, F))
    model = keras.Model(x_in, keras.layers.LSTM(U, name="outer")(inner(x_in)))
    _random_weights(model, 17)
    replaced = convert.replace_keras_lstm(model)
    assert type(replaced.get_layer("outer")) is keras_lstm.LSTM
    assert type(replaced.get_layer("inner").layers[0]) is keras_lstm.LSTM
    x = np.random.default_rng(3).normal(size=(2, 5, F)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(replaced(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-6,
    )
