"""Train steps of the configurations the fused ops do not take, at issue
25's shape: a Sequential of LSTM(64) and Dense(1), batch 64, 100 steps,
32 features, Adam and MSE, `train_on_batch`; keras.layers.LSTM against
keras_lstm.LSTM, each model called in turn, the median of 7 rounds.

    KERAS_BACKEND=tensorflow python benchmarks/configs_train_step.py

(`python -m keras_lstm bench --workloads configs` times the small and
main shapes, predict too.)
"""

import time

import keras
import numpy as np

import keras_lstm

CONFIGS = {
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "recurrent_activation='hard_sigmoid'": {
        "recurrent_activation": "hard_sigmoid"
    },
    "activation='relu'": {"activation": "relu"},
    "defaults": {},
}


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 100, 32)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    models = {}
    for name, kwargs in CONFIGS.items():
        for layer in (keras.layers.LSTM, keras_lstm.LSTM):
            model = keras.Sequential(
                [
                    keras.Input((100, 32)),
                    layer(64, **kwargs),
                    keras.layers.Dense(1),
                ]
            )
            model.compile("adam", "mse")
            for _ in range(2):
                model.train_on_batch(x, y)
            models[name, layer] = model
    times = {key: [] for key in models}
    for _ in range(7):
        for key, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[key].append(time.perf_counter() - start)
    median = {key: 1e3 * sorted(t)[len(t) // 2] for key, t in times.items()}
    print(f"backend {keras.backend.backend()}, train step ms")
    for name in CONFIGS:
        ours = median[name, keras_lstm.LSTM]
        theirs = median[name, keras.layers.LSTM]
        print(
            f"{name}: keras.layers.LSTM {theirs:.1f}, keras_lstm {ours:.1f}, "
            f"keras / keras_lstm {theirs / ours:.2f}x"
        )


if __name__ == "__main__":
    main()
