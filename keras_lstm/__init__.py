"""keras_lstm: a drop-in keras.layers.LSTM, one semantics on every backend."""

import sys as _sys

# Before keras: `python -m keras_lstm` and `keras-lstm` import this package
# before their own code, and keras without its backend would end them in a
# traceback. When sys.argv says this process may be one of them (runpy sets
# argv[0] to "-m" while it imports the package; the script is named
# keras-lstm), the command line's checks run first
# (keras_lstm/tools/preflight.py, standard library only); a library import
# reads sys.argv and imports nothing from keras_lstm.tools.
_argv0 = _sys.argv[0] if _sys.argv else ""
if (
    _argv0 == "-m" and "keras_lstm" in " ".join(getattr(_sys, "orig_argv", []))
) or _argv0.replace("\\", "/").rpartition("/")[2].startswith("keras-lstm"):
    from keras_lstm.tools import preflight as _preflight

    _preflight.preflight()
    del _preflight
del _argv0, _sys

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
