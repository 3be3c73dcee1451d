"""keras_lstm's command line and its tools: `python -m keras_lstm` (cli.py,
with preflight.py, demo.py, parity.py, doctor.py and doctor_check.py) and
the benchmark (bench/). None of it is part of the library: `import
keras_lstm` imports nothing from here, and nothing here is public API.
"""
