"""keras_lstm: a drop-in keras.layers.LSTM, one semantics on every backend."""

from keras_lstm.layer import LSTM

__all__ = ["LSTM"]
__version__ = "0.1.0"
