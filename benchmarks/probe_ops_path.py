"""The keras.ops path's loop forms against keras.layers.LSTM's own loop.

Why `keras_lstm/ops.py` writes the loop out over `ops.unstack` on torch
(the projection hoisted) and on TensorFlow (static lengths up to 128
steps, each step projecting its own input), projects each step's input
inside the scan under XLA (JAX), and passes `unroll=32`
(parallel_iterations) to the scan on TensorFlow for longer or unknown
lengths. Each form below is a copy of the path with
one choice changed; all are timed against `keras.layers.LSTM(
use_cudnn=False)` in one process, predict and train step of an LSTM +
Dense(1) model, at the small and main benchmark shapes. Prints
keras.layers.LSTM time / form time (above 1: the form is faster).

    KERAS_BACKEND=jax python benchmarks/probe_ops_path.py
"""

import argparse

import keras
import numpy as np
from keras import ops

import keras_lstm
import keras_lstm.ops
from keras_lstm.tools.bench.util import SHAPES, time_alternating


def _form(hoist, loop, parallel):
    """keras_lstm.ops.lstm with the projection hoisted or not, a Python
    loop over ops.unstack or one ops.scan (with `unroll=parallel`)."""

    def lstm(
        inputs,
        h0,
        c0,
        mask,
        kernel,
        recurrent_kernel,
        bias,
        activation,
        recurrent_activation,
        recurrent_dropout_mask=None,
        unroll=False,
    ):
        assert mask is None and recurrent_dropout_mask is None
        x = ops.transpose(inputs, (1, 0, 2))
        if hoist:
            x = ops.matmul(x, kernel) + bias

        def step(h, c, x_t):
            z_x = x_t if hoist else ops.matmul(x_t, kernel) + bias
            z = z_x + ops.matmul(h, recurrent_kernel)
            i, f, g, o = ops.split(z, 4, axis=-1)
            c = recurrent_activation(f) * c + recurrent_activation(
                i
            ) * activation(g)
            return recurrent_activation(o) * activation(c), c

        if loop:
            h, c, outputs = h0, c0, []
            for x_t in ops.unstack(x):
                h, c = step(h, c, x_t)
                outputs.append(h)
            sequence = ops.stack(outputs)
        else:

            def scan_step(carry, x_t):
                h, c = step(*carry, x_t)
                return (h, c), (h, c)

            (h, c), (sequence, _) = ops.scan(
                scan_step, (h0, c0), x, unroll=parallel
            )
        return ops.transpose(sequence, (1, 0, 2)), h, c

    return lstm


FORMS = {
    "keras_lstm": keras_lstm.ops.lstm,
    "hoisted scan (0.2.0)": _form(True, False, 1),
    "per-step scan": _form(False, False, 1),
    "hoisted loop": _form(True, True, 1),
}
if keras.backend.backend() == "tensorflow":
    FORMS["per-step scan, unroll=32"] = _form(False, False, 32)
    FORMS["hoisted scan, unroll=32"] = _form(True, False, 32)
    FORMS["per-step loop"] = _form(False, True, 1)


def _time_shape(shape_name, repeats):
    batch, steps, features, units = SHAPES[shape_name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")

    def model(cls):
        m = keras.Sequential(
            [
                keras.Input((steps, features)),
                cls(units, use_cudnn=False),
                keras.layers.Dense(1),
            ]
        )
        m.compile(optimizer="adam", loss="mse")
        return m

    real = keras_lstm.ops.lstm
    keras_model = model(keras.layers.LSTM)
    models = {"keras": (keras_model, real)}
    for name, form in FORMS.items():
        models[name] = (model(keras_lstm.LSTM), form)
        models[name][0].set_weights(keras_model.get_weights())
    for mode in ("predict", "train"):

        def runner(m, form, mode=mode):
            def run():
                keras_lstm.ops.lstm = form
                if mode == "predict":
                    return m.predict_on_batch(x)
                return m.train_on_batch(x, y)

            return run

        medians = time_alternating(
            {name: runner(*v) for name, v in models.items()}, repeats
        )
        keras_lstm.ops.lstm = real
        ratios = ", ".join(
            f"{name} {medians['keras'] / ms:.2f}x"
            for name, ms in medians.items()
            if name != "keras"
        )
        print(f"{keras.backend.backend()} {shape_name} {mode}: {ratios}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for shape_name in ("small", "main"):
        _time_shape(shape_name, args.repeats)


if __name__ == "__main__":
    main()
