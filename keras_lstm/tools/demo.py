"""`python -m keras_lstm demo`: a small masked LSTM classifier trained on a
synthetic task (is there a majority of ones in a variable-length bit
sequence?), with the kernel it takes, its accuracy and time per epoch.
"""

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
    plan = keras_lstm.explain(model.layers[1], x[:64], training=True)
    print(
        f"kernel: {plan.kernel}" + "".join(f"\n  - {r}" for r in plan.reasons)
    )
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    per_epoch = (time.perf_counter() - start) / epochs
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.3f}, {per_epoch:.2f} s per epoch")
    return accuracy
