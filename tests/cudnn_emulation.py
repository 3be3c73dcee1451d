"""JAX's cuDNN LSTM emulated on CPU, for the suite and the tests of the
jax-cudnn branch.

`jax.experimental.rnn.lstm` runs only on a GPU; its reference, `lstm_ref`,
computes the same contract anywhere. `reference_lstm` is `rnn.lstm` with
the cuDNN call replaced by `lstm_ref`, asserting what cuDNN itself refuses
(jaxlib's lowering, and jax#17966): inputs other than float32, a precision
other than HIGH or HIGHEST, lengths other than int32 in [1, timesteps].

`pytest --emulate-cudnn` (conftest.py) installs it for the whole run on
JAX: the layer then takes the jax-cudnn branch on CPU, and the tests
marked `gpu` run (`tox -e jax` runs those, the fused-parity, Bidirectional
and edge-shape tests this way).
"""

import numpy as np

PRECISIONS = []  # the precision of every emulated call, in order


def reference_lstm(
    x,
    h_0,
    c_0,
    weights,
    seq_lengths,
    input_size,
    hidden_size,
    num_layers,
    dropout,
    bidirectional,
    precision=None,
):
    """`jax.experimental.rnn.lstm`, computed by its `lstm_ref`."""
    import jax
    from jax.experimental import rnn

    floats = (x, h_0, c_0, weights)
    assert all(str(a.dtype) == "float32" for a in floats), [
        a.dtype for a in floats
    ]
    highest, high = jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGH
    assert precision in (high, highest), precision
    assert str(seq_lengths.dtype) == "int32", seq_lengths.dtype
    if not isinstance(seq_lengths, jax.core.Tracer):
        lengths = np.asarray(seq_lengths)
        assert ((lengths >= 1) & (lengths <= x.shape[1])).all(), lengths
    PRECISIONS.append(precision)
    unpacked = rnn.unpack_lstm_weights(
        weights, input_size, hidden_size, num_layers, bidirectional
    )
    return rnn.lstm_ref(
        x,
        h_0,
        c_0,
        *unpacked,
        seq_lengths,
        input_size,
        hidden_size,
        num_layers,
        dropout,
        bidirectional,
    )


def install(patch):
    """Routes the jax-cudnn kernel through `reference_lstm` on CPU.

    Args:
        patch: `setattr`-like, e.g. pytest's `monkeypatch.setattr`.
    """
    from jax.experimental import rnn

    from keras_lstm.backend import jax as jax_kernels

    patch(jax_kernels, "_on_gpu", lambda: True)
    patch(rnn, "lstm", reference_lstm)
