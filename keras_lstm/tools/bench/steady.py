"""The benchmark's steady-state table ("steady"): keras.layers.LSTM,
keras_lstm.LSTM and torch.nn.LSTM at fixed shapes after a warm-up,
predict_on_batch and train_on_batch (torch.nn.LSTM: forward under no_grad,
and forward, backward and step) per mask kind; with `bidirectional`, the
Bidirectional layers. benchmark.py runs it and prints the table.
"""

import importlib
import importlib.util
import json
import sys

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.contenders import tensors, to_device, torch_forward
from keras_lstm.tools.bench.util import (
    ALL_SHAPES,
    GPU_SHAPES,
    MASKS,
    time_alternating,
)

MODES = ("predict", "train")


def _layer(contender, units, bidirectional):
    import keras

    import keras_lstm

    if not bidirectional:
        cls = keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM
        return cls(units, return_sequences=True)
    inner = keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM
    wrapper = keras_lstm.Bidirectional
    if contender in ("keras", "per direction"):
        wrapper = keras.layers.Bidirectional
    return wrapper(inner(units, return_sequences=True))


def _keras_model(contender, batch, timesteps, features, units, masked, bidi):
    import keras

    x = keras.Input(batch_shape=(batch, timesteps, features))
    inputs = [x]
    kwargs = {}
    if masked:
        mask = keras.Input(batch_shape=(batch, timesteps), dtype="bool")
        inputs.append(mask)
        kwargs["mask"] = mask
    y = _layer(contender, units, bidi)(x, **kwargs)
    model = keras.Model(inputs, y)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return model


def _torch_runners(lstm, x, y, mask_kind, mask):
    torch = importlib.import_module("torch")  # optional: the torch.nn column

    # On CUDA wherever torch sees it (util.torch_device).
    lstm = to_device(lstm)
    x, y = tensors(x, y)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=1e-3)
    lengths = None
    if mask_kind == "right":
        lengths = torch.from_numpy(mask.sum(1))  # on the CPU, as torch wants
    forward = torch_forward(lstm, lengths, x.shape[1])

    def predict():
        with torch.no_grad():
            return forward(x)

    def train():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return {"predict": predict, "train": train}


def run_backend(shapes, repeats, bidirectional=False):
    """Times every contender on the current backend; returns result rows.

    Keras models run on the backend's default device; predict_on_batch
    and train_on_batch return NumPy, so their timings include the device's
    work. Shapes in GPU_SHAPES are skipped on a CPU.
    """
    if importlib.util.find_spec("torch") is not None:
        # Before TensorFlow: the other order can crash.
        importlib.import_module("torch").manual_seed(0)
    has_torch = util.torch_module() is not None  # the torch.nn column
    import keras
    import numpy as np

    import keras_lstm
    from keras_lstm import convert

    contenders = ["keras", "keras_lstm"]
    if bidirectional:
        contenders.insert(1, "per direction")
    on_gpu = util.device(keras.backend.backend())[1]
    rows = []
    for shape_name in shapes:
        if shape_name in GPU_SHAPES and not on_gpu:
            print(f"steady: {shape_name} skipped (GPU only)", file=sys.stderr)
            continue
        batch, timesteps, features, units = ALL_SHAPES[shape_name]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch, timesteps, features)).astype("float32")
        outputs = units * (2 if bidirectional else 1)
        y = rng.normal(size=(batch, timesteps, outputs)).astype("float32")
        masks = util.masks(batch, timesteps, rng)
        for mask_kind in MASKS:
            mask = masks[mask_kind]
            masked = mask is not None
            models = {
                c: _keras_model(
                    c, batch, timesteps, features, units, masked, bidirectional
                )
                for c in contenders
            }
            for model in models.values():
                model.set_weights(models["keras"].get_weights())
            inputs = [x, mask] if masked else [x]
            runners = {}
            for label, model in models.items():
                runners[label] = {
                    "predict": lambda m=model, i=inputs: m.predict_on_batch(i),
                    "train": lambda m=model, i=inputs, t=y: m.train_on_batch(
                        i, t
                    ),
                }
            ours = models["keras_lstm"].layers[-1]
            if has_torch and mask_kind != "holes":
                if bidirectional:
                    torch = importlib.import_module("torch")
                    lstm = torch.nn.LSTM(
                        features, units, batch_first=True, bidirectional=True
                    )
                else:
                    lstm = convert.to_torch(ours)
                runners["torch.nn"] = _torch_runners(
                    lstm, x, y, mask_kind, mask
                )
            kernel = keras_lstm.explain(ours, x, mask).kernel
            for mode in MODES:
                medians = time_alternating(
                    {k: r[mode] for k, r in runners.items()}, repeats
                )
                rows.append(
                    {
                        "backend": keras.backend.backend(),
                        "shape": shape_name,
                        "mask": mask_kind,
                        "mode": mode,
                        "kernel": kernel,
                        **medians,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows
