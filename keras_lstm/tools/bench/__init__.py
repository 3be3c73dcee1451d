"""The benchmark, `python -m keras_lstm bench` (benchmark.py): the
steady-state table (steady.py) and the workloads (workloads.py, one
module a theme), with what they share (util.py, contenders.py).
"""
