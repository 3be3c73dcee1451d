"""keras_lstm: a drop-in keras.layers.LSTM, one semantics on every backend."""

# Before keras: `python -m keras_lstm` and `keras-lstm` import this package
# first, and keras without its backend would end them in a traceback; the
# command line's checks (keras_lstm/cli.py) run here, a no-op on import.
from keras_lstm import _preflight  # noqa: F401

# isort: split
from keras_lstm import data
from keras_lstm.backend import full_float32
from keras_lstm.bidirectional import Bidirectional
from keras_lstm.data import BucketedSequences
from keras_lstm.dispatch import Plan
from keras_lstm.explain import explain
from keras_lstm.layer import LSTM

__all__ = [
    "LSTM",
    "Bidirectional",
    "BucketedSequences",
    "Plan",
    "data",
    "explain",
    "full_float32",
]
__version__ = "0.2.0"
