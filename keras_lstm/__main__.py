"""`python -m keras_lstm`: the command line, keras_lstm/tools/cli.py (also
the `keras-lstm` script)."""

from keras_lstm.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
