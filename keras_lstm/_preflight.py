"""Imported first by keras_lstm/__init__.py, before keras: the command
line's checks (`keras_lstm.cli.preflight`), which do nothing unless this
process is `python -m keras_lstm` or `keras-lstm`."""

from keras_lstm import cli

cli.preflight()
