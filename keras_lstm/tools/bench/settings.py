"""The benchmark's workloads of the layer under other settings: `mixed`
(mixed_bfloat16 and mixed_float16 policies), `configs` (the
configurations no fused op of the frameworks takes, and the keras.ops
path) and `jit` (`jit_compile=True`). See workloads.py for the list.
"""

import time

import numpy as np

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.contenders import (
    lstm_class,
    median_rows,
    model_runners,
)
from keras_lstm.tools.bench.util import time_alternating

# -- mixed precision ----------------------------------------------------------


def mixed(backend, repeats, shape=(64, 100, 128, 256)):
    import keras

    batch, timesteps, features, units = shape
    rng = np.random.default_rng(3)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, timesteps, units)).astype("float32")

    def model(contender, policy):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            layer = lstm_class(contender)(units, return_sequences=True)
            m = keras.Sequential([keras.Input((timesteps, features)), layer])
        finally:
            keras.config.set_dtype_policy(previous)
        m.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
        return m

    rows = []
    own = model("keras_lstm", "float32")
    for policy in ("mixed_bfloat16", "mixed_float16"):
        models = {
            "keras": model("keras", policy),
            "keras_lstm": model("keras_lstm", policy),
            "keras_lstm float32": own,
        }
        for m in models.values():
            m.set_weights(own.get_weights())
        for mode in ("predict", "train"):
            medians = time_alternating(
                model_runners(models, mode, x, y), repeats
            )
            rows.append(
                {
                    "backend": backend,
                    "workload": f"{policy} {mode}, main shape",
                    "unit": "ms",
                    **medians,
                }
            )
    return rows


# -- configurations off the frameworks' fused ops -----------------------------

CONFIGS = {
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "recurrent_activation='hard_sigmoid'": {
        "recurrent_activation": "hard_sigmoid"
    },
    "activation='relu'": {"activation": "relu"},
    "unroll=True": {"unroll": True},
    "use_cudnn=False": {"use_cudnn": False},
}


def configs(backend, repeats, shapes=("small", "main")):
    import keras

    rows = []
    for shape_name in shapes:
        batch, timesteps, features, units = util.ALL_SHAPES[shape_name]
        rng = np.random.default_rng(7)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        y = rng.normal(size=(batch, 1)).astype("float32")

        def model(cls, shape=(timesteps, features), units=units, **kwargs):
            m = keras.Sequential(
                [
                    keras.Input(shape),
                    cls(units, **kwargs),
                    keras.layers.Dense(1),
                ]
            )
            m.compile(optimizer="adam", loss="mse")
            return m

        defaults = model(lstm_class("keras_lstm"))
        for config, kwargs in CONFIGS.items():
            models = {
                "keras": model(lstm_class("keras"), **kwargs),
                "keras_lstm": model(lstm_class("keras_lstm"), **kwargs),
                "keras_lstm defaults": defaults,
            }
            for m in models.values():
                m.set_weights(defaults.get_weights())
            for mode in ("predict", "train"):
                medians = time_alternating(
                    model_runners(models, mode, x, y), repeats
                )
                rows.append(
                    {
                        "backend": backend,
                        "workload": f"{config} {mode}, {shape_name}",
                        "unit": "ms",
                        **medians,
                    }
                )
    return rows


# -- jit_compile=True ---------------------------------------------------------


def jit(backend, repeats, shape=(32, 50, 32, 128)):
    import keras

    batch, timesteps, features, units = shape
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    first = {"keras": [], "keras_lstm": [], "keras_lstm generic": []}
    models = {}
    for contender in first:
        layer = lstm_class(contender)(units)
        if contender == "keras_lstm generic":
            layer = lstm_class("keras_lstm")(units, use_cudnn=False)
        model = keras.Sequential(
            [keras.Input((timesteps, features)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first[contender].append(time.perf_counter() - start)
        models[contender] = model
    steady = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            steady[name].append((time.perf_counter() - start) * 1e3)
    note = (
        f"batch {batch}, {timesteps} steps, {features} features, {units} units"
    )
    return [
        median_rows(
            backend, "jit_compile=True, first train step", first, "s", note
        ),
        median_rows(
            backend, "jit_compile=True, train step", steady, "ms", note
        ),
    ]
