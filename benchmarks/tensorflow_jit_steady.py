"""TensorFlow's steady state with and without jit_compile=True, against
torch.nn.LSTM, in one process.

keras_lstm's default TensorFlow CPU kernel is a graph while_loop: no shape
is ever compiled, and its matmuls run at TensorFlow's graph rate. With
`model.compile(jit_compile=True)` the same loop is compiled by XLA with the
rest of the model: one compilation per input shape, then XLA's matmul rate.
This times keras.layers.LSTM and keras_lstm.LSTM both ways, and
torch.nn.LSTM with the same weights, in alternating runs:

    KERAS_BACKEND=tensorflow python benchmarks/tensorflow_jit_steady.py
    KERAS_BACKEND=tensorflow python benchmarks/tensorflow_jit_steady.py \
        --shape large --repeats 5

Predict is `predict_on_batch` (torch.nn.LSTM under no_grad), the train
step `train_on_batch` with SGD and MSE on the sequence of outputs
(torch.nn.LSTM forward, backward, step). Needs torch and tensorflow.
"""

import argparse
import importlib.util
import os

if importlib.util.find_spec("torch"):
    import torch  # noqa: F401  (before TensorFlow: the other order can crash)


def main():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm import convert
    from keras_lstm.tools.bench.contenders import model_runners
    from keras_lstm.tools.bench.steady import _torch_runners
    from keras_lstm.tools.bench.util import SHAPES, cpu, time_alternating

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="main")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        parser.error("run with KERAS_BACKEND=tensorflow")
    batch, steps, features, units = SHAPES[args.shape]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, steps, units)).astype("float32")

    def model(cls, jit_compile):
        inputs = keras.Input(batch_shape=(batch, steps, features))
        m = keras.Model(inputs, cls(units, return_sequences=True)(inputs))
        m.compile(
            optimizer=keras.optimizers.SGD(1e-3),
            loss="mse",
            jit_compile=jit_compile,
        )
        return m

    models = {
        "keras": model(keras.layers.LSTM, False),
        "keras_lstm": model(keras_lstm.LSTM, False),
        "keras, jit_compile": model(keras.layers.LSTM, True),
        "keras_lstm, jit_compile": model(keras_lstm.LSTM, True),
    }
    for m in models.values():
        m.set_weights(models["keras"].get_weights())
    lstm = convert.to_torch(models["keras_lstm"].layers[-1])
    torch_runners = _torch_runners(lstm, x, y, "none", None)
    print(
        f"CPU: {cpu()}; shape (batch, steps, features, units) "
        f"{(batch, steps, features, units)}\n"
    )
    print("| mode | " + " | ".join(models) + " | torch.nn.LSTM |")
    print("|---|" + "---|" * (len(models) + 1))
    for mode in ("predict", "train"):
        runners = model_runners(models, mode, x, y)
        runners["torch.nn.LSTM"] = torch_runners[mode]
        ms = time_alternating(runners, args.repeats)
        torch_ms = ms["torch.nn.LSTM"]
        cells = [
            f"{ms[name]:.1f} ms ({ms[name] / torch_ms:.2f}x)" for name in models
        ]
        print(f"| {mode} | " + " | ".join(cells) + f" | {torch_ms:.1f} ms |")
    print("\n(x: time / torch.nn.LSTM's time)")


if __name__ == "__main__":
    main()
