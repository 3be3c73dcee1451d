"""keras_lstm.BucketedSequences: a few padded shapes for variable lengths."""

import keras
import numpy as np
import pytest

import keras_lstm
from tests import helpers


def _sequences(rng, count=50, low=1, high=40, features=3):
    lengths = rng.integers(low, high + 1, size=count)
    return [rng.normal(size=(n, features)).astype("float32") for n in lengths]


def _epoch(data):
    return [data[i] for i in range(len(data))]


def test_an_epoch_holds_every_sequence_once_in_few_shapes():
    rng = np.random.default_rng(0)
    sequences = _sequences(rng)
    targets = rng.normal(size=(len(sequences), 2)).astype("float32")
    data = keras_lstm.BucketedSequences(
        sequences, targets, batch_size=8, seed=1, padding_value=-7.0
    )
    assert len(data.bucket_lengths) <= 4
    assert data.bucket_lengths[-1] >= max(len(s) for s in sequences)
    assert all(b % 8 == 0 for b in data.bucket_lengths)
    for _ in range(2):  # two epochs: reshuffled, same guarantees
        seen, shapes = [], set()
        for x, y in _epoch(data):
            shapes.add(x.shape)
            assert x.shape[1] in data.bucket_lengths
            assert x.shape[0] == y.shape[0]
            for row, target in zip(x, y, strict=True):
                # Find the sequence by its target: values and padding.
                (index,) = np.flatnonzero((targets == target).all(axis=1))
                n = len(sequences[index])
                np.testing.assert_array_equal(row[:n], sequences[index])
                assert (row[n:] == -7.0).all()
                seen.append(index)
        assert sorted(seen) == list(range(len(sequences)))
        # One shape per bucket, and at most one partial batch.
        assert len(shapes) <= len(data.bucket_lengths) + 1
        assert sum(s[0] != 8 for s in shapes) <= 1
        data.on_epoch_end()


def test_shuffling_is_seeded_and_changes_between_epochs():
    rng = np.random.default_rng(1)
    sequences = _sequences(rng)
    ids = np.arange(len(sequences), dtype="float32")[:, None]

    def order(data):
        return [tuple(y[:, 0]) for _, y in _epoch(data)]

    first = keras_lstm.BucketedSequences(sequences, ids, batch_size=4, seed=3)
    again = keras_lstm.BucketedSequences(sequences, ids, batch_size=4, seed=3)
    assert order(first) == order(again)
    epoch_one = order(first)
    first.on_epoch_end()
    assert order(first) != epoch_one
    fixed = keras_lstm.BucketedSequences(
        sequences, ids, batch_size=4, shuffle=False
    )
    lengths = [fixed[i][0].shape[1] for i in range(len(fixed))]
    # Ascending, but for the second batch: the first of another length
    # (see test_the_first_two_batches_differ_in_length).
    assert lengths[1] > lengths[0]
    assert lengths[:1] + lengths[2:] == sorted(lengths[:1] + lengths[2:])


def test_mask_sample_weights_and_token_ids():
    rng = np.random.default_rng(2)
    tokens = [rng.integers(1, 9, size=n) for n in (3, 5, 9, 2, 7)]
    weights = [0.5, 1.0, 2.0, 3.0, 4.0]
    data = keras_lstm.BucketedSequences(
        tokens,
        targets=np.arange(5),
        sample_weights=weights,
        batch_size=2,
        bucket_lengths=[4, 10],
        return_mask=True,
        shuffle=False,
    )
    for (x, mask), y, w in _epoch(data):
        assert x.dtype == tokens[0].dtype and x.ndim == 2
        for row, row_mask, target, weight in zip(x, mask, y, w, strict=True):
            n = len(tokens[target])
            assert row_mask.tolist() == [True] * n + [False] * (len(row) - n)
            np.testing.assert_array_equal(row[:n], tokens[target])
            assert (row[n:] == 0).all()
            assert weight == weights[target]


def test_padded_targets_for_sequence_outputs():
    rng = np.random.default_rng(3)
    sequences = _sequences(rng, count=6, high=9)
    targets = [rng.normal(size=(len(s), 1)) for s in sequences]
    data = keras_lstm.BucketedSequences(
        sequences,
        targets,
        batch_size=3,
        pad_targets=True,
        target_padding_value=5.0,
        shuffle=False,
    )
    for x, y in _epoch(data):
        assert y.shape[:2] == x.shape[:2]
    with pytest.raises(ValueError, match="each target is a sequence"):
        keras_lstm.BucketedSequences(
            sequences, np.zeros((6, 1)), pad_targets=True
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sequences": []}, "at least one sequence"),
        ({"batch_size": 0}, "batch_size"),
        ({"bucket_lengths": [8, 4, 40]}, "ascending"),
        ({"bucket_lengths": [8, 16]}, "longest sequence has 40 steps"),
        ({"targets": np.zeros(3)}, "one per sequence"),
        ({"num_buckets": -1}, "num_buckets"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    sequences = [np.zeros((n, 2), "float32") for n in (1, 40, 7, 12)]
    kwargs = {"sequences": sequences, **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_lstm.BucketedSequences(**kwargs)


def test_sequences_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match=r"sequences\[1\] of shape \(3, 4\)"):
        keras_lstm.BucketedSequences([np.zeros((2, 3)), np.zeros((3, 4))])
    with pytest.raises(ValueError, match=r"sequences\[0\] of shape \(0, 3\)"):
        keras_lstm.BucketedSequences([np.zeros((0, 3))])


def test_a_masked_model_gives_each_sequence_its_own_outputs():
    # Padding to a bucket changes nothing a masked LSTM computes: every row
    # of a padded batch equals the sequence run alone, on every backend.
    rng = np.random.default_rng(4)
    sequences = _sequences(rng, count=20, high=17)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Masking(mask_value=0.0),
            keras_lstm.LSTM(4),
        ]
    )
    data = keras_lstm.BucketedSequences(sequences, batch_size=6, seed=0)
    order = np.concatenate([members for _, members in data._batches])
    predicted = model.predict(data, verbose=0)
    assert predicted.shape == (20, 4)
    for row, index in zip(predicted, order, strict=True):
        alone = model.predict_on_batch(sequences[index][None])
        helpers.assert_close(row, helpers.to_numpy(alone)[0])


def test_the_first_two_batches_differ_in_length():
    # Keras on TensorFlow takes the dataset's shapes from the first two
    # batches: equal lengths there would fix the timesteps for the whole
    # fit (it failed on about one shuffle in four).
    rng = np.random.default_rng(6)
    sequences = _sequences(rng, count=48, high=30)
    for seed in range(40):
        data = keras_lstm.BucketedSequences(sequences, batch_size=8, seed=seed)
        for _ in range(3):
            assert data[0][0].shape[1] != data[1][0].shape[1], seed
            data.on_epoch_end()
    one = keras_lstm.BucketedSequences(sequences, batch_size=8, num_buckets=1)
    assert {one[i][0].shape[1] for i in range(len(one))} == {32}  # 30 -> x8


@pytest.mark.parametrize("seed", [0, 10, 13])  # 10, 13: equal first two
def test_fit_with_bucketed_batches_trains(seed):
    rng = np.random.default_rng(5)
    sequences = _sequences(rng, count=48, high=30)
    targets = np.array([[s[:, 0].mean()] for s in sequences], "float32")
    data = keras_lstm.BucketedSequences(
        sequences, targets, batch_size=8, seed=seed
    )
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Masking(),
            keras_lstm.LSTM(8),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(data, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
