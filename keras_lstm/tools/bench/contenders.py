"""What every workload of the benchmark times, and how: the contenders'
LSTM classes, torch.nn.LSTM on the device, runners of Keras models, and
the rows of medians.
"""

import numpy as np

from keras_lstm.tools.bench import util
from keras_lstm.tools.bench.util import torch_module


def lstm_class(contender):
    """keras.layers.LSTM for "keras", keras_lstm.LSTM otherwise."""
    import keras

    import keras_lstm

    return keras.layers.LSTM if contender == "keras" else keras_lstm.LSTM


def median_rows(backend, workload, samples, unit, note=""):
    """One row: the median of each contender's samples."""
    row = {"backend": backend, "workload": workload, "unit": unit}
    row.update({k: float(np.median(v)) for k, v in samples.items()})
    if note:
        row["note"] = note
    return row


def model_runners(models, mode, x, y):
    """`{name: run}`: one `predict_on_batch(x)` (mode "predict") or
    `train_on_batch(x, y)` (mode "train") of each Keras model."""
    if mode == "predict":
        return {
            name: (lambda m=m: m.predict_on_batch(x))
            for name, m in models.items()
        }
    return {
        name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()
    }


# -- torch.nn.LSTM on the device ----------------------------------------------


def to_device(module):
    """`module` on `util.torch_device()` (CUDA where torch sees it)."""
    module = module.to(util.torch_device())
    if hasattr(module, "flatten_parameters"):
        # One contiguous weight buffer, as cuDNN wants (a no-op on a CPU).
        module.flatten_parameters()
    return module


def tensors(*arrays):
    """torch tensors of NumPy `arrays` on `util.torch_device()`."""
    device = util.torch_device()
    return tuple(torch_module().from_numpy(a).to(device) for a in arrays)


def torch_forward(lstm, lengths, total_length):
    """`forward(x)`: the outputs of torch.nn.LSTM `lstm` (batch first).

    With `lengths` (a CPU tensor: pack_padded_sequence takes them there),
    the right-padded rows run packed and come back padded to
    `total_length` steps, as with a Keras right-padded mask.
    """
    rnn = torch_module().nn.utils.rnn

    def forward(x):
        if lengths is None:
            return lstm(x)[0]
        packed = rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out = lstm(packed)[0]
        return rnn.pad_packed_sequence(
            out, batch_first=True, total_length=total_length
        )[0]

    return forward
