"""Command line: `python -m keras_lstm demo` (also the `keras-lstm` script)."""

import argparse
import time

import numpy as np


def _majority_task(samples: int, max_len: int, rng: np.random.Generator):
    """Variable-length bit sequences; label: more ones than zeros.

    Sequences are right-padded with -1 and masked by a Masking layer, so the
    demo exercises the mask path. The answer depends on every valid step.
    """
    lengths = rng.integers(5, max_len + 1, size=samples)
    lengths -= (lengths % 2) == 0  # odd lengths: no ties
    bits = rng.integers(0, 2, size=(samples, max_len)).astype("float32")
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    x = np.where(valid, bits, -1.0)[..., None].astype("float32")
    y = ((bits * valid).sum(1) * 2 > lengths).astype("float32")
    return x, y


def demo(epochs: int, samples: int, max_len: int, seed: int) -> float:
    """Trains a small masked LSTM classifier; returns the test accuracy."""
    import keras

    import keras_lstm

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = _majority_task(samples, max_len, rng)
    x_test, y_test = _majority_task(max(samples // 4, 64), max_len, rng)

    model = keras.Sequential(
        [
            keras.Input(shape=(None, 1)),
            keras.layers.Masking(mask_value=-1.0),
            keras_lstm.LSTM(32),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    print(
        f"backend {keras.backend.backend()}: majority of {samples} bit "
        f"sequences of length 5-{max_len} (right-padded, masked)"
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    per_epoch = (time.perf_counter() - start) / epochs
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.3f}, {per_epoch:.2f} s per epoch")
    return accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-lstm", description="keras_lstm command line."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "demo", help="train a small masked LSTM on a synthetic task"
    )
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--max-len", type=int, default=21)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.epochs, args.samples, args.max_len, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
