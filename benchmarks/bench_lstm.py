"""Side-by-side LSTM timings; see keras_lstm/tools/bench/benchmark.py.

python benchmarks/bench_lstm.py [--backends ...] [--shapes ...]
"""

from keras_lstm.tools.bench.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
