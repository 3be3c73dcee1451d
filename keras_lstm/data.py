"""Length bucketing: variable-length sequences in a few padded shapes.

Padding every batch to its own longest sequence gives one input shape per
length, and a compiled train step (JAX always; TensorFlow and torch with
`jit_compile=True`) compiles once per shape. `BucketedSequences` groups
sequences of similar length and pads each batch to one of a few bucket
lengths, so that a model sees a handful of shapes however many lengths the
data has. NumPy only: it works on every backend.
"""

import numbers

import keras
import numpy as np


def _bucket_lengths(lengths, num_buckets, multiple):
    """`num_buckets` lengths at the quantiles of `lengths`, rounded up to a
    multiple of `multiple`; the last one holds the longest sequence."""
    quantiles = np.quantile(
        lengths, np.arange(1, num_buckets + 1) / num_buckets
    )
    rounded = -(-np.ceil(quantiles).astype(int) // multiple) * multiple
    return sorted({int(max(r, multiple)) for r in rounded})


def _check_positive_int(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value <= 0
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a positive "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


class BucketedSequences(keras.utils.PyDataset):
    """Batches of variable-length sequences, padded to a few bucket lengths.

    Sequences are grouped by length into buckets; each batch holds
    sequences of one bucket and is padded (at the end) to that bucket's
    length. Each epoch shuffles the sequences within their buckets and the
    order of the batches. A bucket's last, partial batch is not padded with
    filler rows: its sequences move on to the next longer bucket (they fit,
    padded further), so an epoch has at most one partial batch, in the
    longest bucket. The model then sees at most `len(bucket_lengths) + 1`
    input shapes. The first two batches always differ in length when the
    epoch has several (Keras on TensorFlow takes the dataset's shapes from
    them); without shuffling, the batches come by ascending length apart
    from that.

    Padded steps hold `padding_value`: put a `keras.layers.Masking(
    mask_value=padding_value)` first (or an `Embedding(mask_zero=True)` for
    token ids padded with 0), or pass `return_mask=True` to get the mask as
    a second input.

    Args:
        sequences: a list of arrays, each `(length, ...)` (length >= 1;
            the trailing axes equal across sequences), e.g. `(length,
            features)` or `(length,)` token ids.
        targets: optional, one per sequence: an array `(num_sequences,
            ...)` or a list. With `pad_targets=True`, each target is a
            sequence of its input's length, padded like the inputs (for
            `return_sequences=True` models; Keras masks the padded steps'
            loss when the model's output carries the mask).
        sample_weights: optional, one weight per sequence.
        batch_size: sequences per batch. Default 32.
        bucket_lengths: the padded lengths, ascending; the last must hold
            the longest sequence. Default: `num_buckets` lengths at the
            quantiles of the data's lengths, rounded up to a multiple of
            `pad_to_multiple_of`.
        num_buckets: how many bucket lengths to derive when
            `bucket_lengths` is None. Default 4.
        pad_to_multiple_of: rounding of the derived bucket lengths.
            Default 8.
        padding_value: the value at padded steps. Default 0.0.
        target_padding_value: the value at padded target steps (with
            `pad_targets`). Default 0.
        pad_targets: pad the targets as sequences. Default False.
        return_mask: give the inputs as `(x, mask)`, mask boolean
            `(batch, length)`. Default False.
        shuffle: reshuffle at every epoch. Default True.
        seed: seed of the shuffling. Default None.
        dtype: dtype of the padded inputs. Default: the sequences' own.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> sequences = [rng.normal(size=(n, 8)) for n in rng.integers(5, 60, 200)]
    >>> data = keras_lstm.data.BucketedSequences(
    ...     sequences, targets=rng.normal(size=(200, 1)), batch_size=16)
    >>> model = keras.Sequential([
    ...     keras.Input((None, 8)),
    ...     keras.layers.Masking(),
    ...     keras_lstm.LSTM(16),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile("adam", "mse")
    >>> history = model.fit(data, epochs=2, verbose=0)  # a few shapes
    >>> len(data.bucket_lengths)
    4
    """

    def __init__(
        self,
        sequences,
        targets=None,
        sample_weights=None,
        batch_size=32,
        bucket_lengths=None,
        num_buckets=4,
        pad_to_multiple_of=8,
        padding_value=0.0,
        target_padding_value=0,
        pad_targets=False,
        return_mask=False,
        shuffle=True,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sequences = [np.asarray(s) for s in sequences]
        if not self.sequences:
            raise ValueError(
                "Invalid value for argument `sequences`: expected at least "
                "one sequence. Received an empty list."
            )
        trailing = self.sequences[0].shape[1:]
        for i, s in enumerate(self.sequences):
            if s.ndim == 0 or len(s) == 0 or s.shape[1:] != trailing:
                raise ValueError(
                    "Invalid value for argument `sequences`: expected "
                    f"arrays of shape (length >= 1, *{trailing}). Received "
                    f"sequences[{i}] of shape {s.shape}."
                )
        self.lengths = np.array([len(s) for s in self.sequences])
        count = len(self.sequences)
        self.targets = self._per_sequence("targets", targets, count)
        self.sample_weights = self._per_sequence(
            "sample_weights", sample_weights, count
        )
        self.pad_targets = bool(pad_targets)
        if self.pad_targets:
            if self.targets is None:
                raise ValueError(
                    "`pad_targets=True` needs `targets`. Received: targets=None"
                )
            for i, (t, n) in enumerate(
                zip(self.targets, self.lengths, strict=True)
            ):
                if np.ndim(t) == 0 or len(t) != n:
                    raise ValueError(
                        "With `pad_targets=True`, each target is a sequence "
                        f"of its input's length. Received targets[{i}] of "
                        f"shape {np.shape(t)} for a sequence of length {n}."
                    )
        self.batch_size = _check_positive_int("batch_size", batch_size)
        longest = int(self.lengths.max())
        if bucket_lengths is None:
            bucket_lengths = _bucket_lengths(
                self.lengths,
                _check_positive_int("num_buckets", num_buckets),
                _check_positive_int("pad_to_multiple_of", pad_to_multiple_of),
            )
        bucket_lengths = [
            _check_positive_int("bucket_lengths", b) for b in bucket_lengths
        ]
        if not bucket_lengths or bucket_lengths != sorted(set(bucket_lengths)):
            raise ValueError(
                "Invalid value for argument `bucket_lengths`: expected "
                "distinct lengths in ascending order. Received: "
                f"bucket_lengths={bucket_lengths}"
            )
        if bucket_lengths[-1] < longest:
            raise ValueError(
                "Invalid value for argument `bucket_lengths`: the longest "
                f"sequence has {longest} steps, more than the largest bucket "
                f"length. Received: bucket_lengths={bucket_lengths}"
            )
        self.bucket_lengths = bucket_lengths
        self.padding_value = padding_value
        self.target_padding_value = target_padding_value
        self.return_mask = bool(return_mask)
        self.shuffle = bool(shuffle)
        self.dtype = dtype or self.sequences[0].dtype
        self._rng = np.random.default_rng(seed)
        # Each sequence's bucket: the shortest that holds it.
        self._bucket = np.searchsorted(bucket_lengths, self.lengths)
        self._batches = self._make_batches()

    @staticmethod
    def _per_sequence(name, values, count):
        if values is None:
            return None
        if isinstance(values, np.ndarray):
            items = list(values)
        else:
            items = [np.asarray(v) for v in values]
        if len(items) != count:
            raise ValueError(
                f"Invalid value for argument `{name}`: expected one per "
                f"sequence ({count}). Received {len(items)}."
            )
        return items

    def _make_batches(self):
        """Splits the sequences into (bucket length, indices) batches."""
        batches = []
        carried = np.array([], dtype=int)
        for b, length in enumerate(self.bucket_lengths):
            members = np.flatnonzero(self._bucket == b)
            if self.shuffle:
                members = self._rng.permutation(members)
            members = np.concatenate([carried, members])
            full = len(members) // self.batch_size * self.batch_size
            batches += [
                (length, members[i : i + self.batch_size])
                for i in range(0, full, self.batch_size)
            ]
            carried = members[full:]
        if len(carried):
            batches.append((self.bucket_lengths[-1], carried))
        if self.shuffle:
            order = self._rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        # Keras on TensorFlow fixes the dataset's shapes from the first two
        # batches (keras' NUM_BATCHES_FOR_TENSOR_SPEC): two of the same
        # length would fix the timesteps, and a batch of another length
        # would then fail. So the second batch has another length
        # whenever there are several (moved there; the rest keep order).
        other = [i for i, b in enumerate(batches) if b[0] != batches[0][0]]
        if other and other[0] != 1:
            batches.insert(1, batches.pop(other[0]))
        return batches

    @property
    def num_batches(self):
        return len(self._batches)

    def __len__(self):
        return len(self._batches)

    def on_epoch_end(self):
        if self.shuffle:
            self._batches = self._make_batches()

    def _pad(self, items, length, value, dtype):
        first = items[0]
        out = np.full(
            (len(items), length) + first.shape[1:], value, dtype=dtype
        )
        for row, item in enumerate(items):
            out[row, : len(item)] = item
        return out

    def __getitem__(self, index):
        length, members = self._batches[index]
        x = self._pad(
            [self.sequences[i] for i in members],
            length,
            self.padding_value,
            self.dtype,
        )
        if self.return_mask:
            mask = np.arange(length)[None, :] < self.lengths[members][:, None]
            x = (x, mask)
        if self.targets is None:
            return (x,)
        targets = [self.targets[i] for i in members]
        if self.pad_targets:
            y = self._pad(
                targets,
                length,
                self.target_padding_value,
                np.asarray(targets[0]).dtype,
            )
        else:
            y = np.stack(targets)
        if self.sample_weights is None:
            return x, y
        return x, y, np.stack([self.sample_weights[i] for i in members])
