"""The command line: `python -m keras_lstm demo|bench|parity|doctor` (also
the `keras-lstm` script). Its parser, and `main`, which runs one command
from the module that holds it: demo.py, parity.py, doctor.py and
bench/benchmark.py (bench parses its own options).

This module imports the standard library only: `--help` and `--version`
are answered before keras is imported (preflight.py).
"""

import sys

from keras_lstm.tools import preflight

BACKENDS = preflight.BACKENDS
# The masks `doctor` checks (doctor_check.py).
MASK_KINDS = ("none", "right", "left", "holes", "full_row")


def build_parser():
    """The argparse parser of every command (bench parses its own)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="keras-lstm",
        description="keras_lstm command line. Needs a Keras backend: "
        "KERAS_BACKEND=jax|torch|tensorflow.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"keras_lstm {preflight.version()}",
        help="print keras_lstm's version and exit",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of:"
    )
    p = commands.add_parser(
        "demo",
        help="train a small masked LSTM on a synthetic task",
        description="Trains a small masked LSTM classifier (is there a "
        "majority of ones in a variable-length bit sequence?) on the "
        "current backend; prints the kernel, accuracy and time per epoch.",
    )
    p.add_argument(
        "--epochs", type=int, default=8, help="training epochs (default 8)"
    )
    p.add_argument(
        "--samples",
        type=int,
        default=2048,
        help="training sequences; the test set has a quarter (default 2048)",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=21,
        help="longest sequence; lengths are 5 to this (default 21)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data and the weights (default 0)",
    )
    commands.add_parser(
        "bench",
        add_help=False,
        help="side-by-side timings: keras.layers.LSTM, keras_lstm.LSTM, "
        "torch.nn.LSTM (see `bench --help`)",
    )
    p = commands.add_parser(
        "parity",
        help="run a .keras model on several backends and compare outputs",
        description="Runs a saved model on each backend in a subprocess and "
        "prints the largest difference of every pair; exits 1 above --atol.",
    )
    p.add_argument("model", help="a .keras file (any Keras model)")
    p.add_argument(
        "--backends",
        nargs="+",
        default=list(BACKENDS),
        choices=BACKENDS,
        help="the backends to run it on, each installed (default: all three)",
    )
    p.add_argument(
        "--inputs",
        help=".npz with input_0, input_1, ... "
        "(default: random inputs of the model's shapes)",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=1e-5,
        help="largest absolute difference allowed between two backends "
        "(default 1e-5)",
    )
    p.add_argument(
        "--batch", type=int, default=4, help="batch size of random inputs"
    )
    p.add_argument(
        "--timesteps",
        type=int,
        default=8,
        help="unknown non-batch axes of random inputs",
    )
    p = commands.add_parser(
        "doctor",
        help="versions, device, the kernel of common calls, and the fused "
        "kernel checked against the keras.ops path on this device",
        description="Prints the versions, CPU and device, which kernel each "
        "common call takes and why, then compares the fused kernel with "
        "the keras.ops path (outputs, states and gradients, every mask "
        "kind, TF32 off). Exits 1 when a check fails or the fused kernel "
        "did not run.",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help="largest absolute difference allowed between the fused kernel "
        "and the keras.ops path (default 1e-5 on CPU, 1e-4 on a GPU)",
    )
    p.add_argument(
        "--masks",
        nargs="+",
        choices=MASK_KINDS,
        default=list(MASK_KINDS),
        metavar="KIND",
        help="the mask kinds to check: none, right (right-padded), left "
        "(left-padded), holes (masked steps anywhere), full_row (a row "
        "entirely masked); default: all",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="only print the report (versions, device, kernels)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write the report and the results to this JSON file",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random weights and inputs (default 0)",
    )
    return parser


def main(argv=None) -> int:
    """Runs one command; returns its exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from keras_lstm.tools.bench import benchmark

        return benchmark.main(argv[1:])
    if argv[:1] == ["_parity_worker"]:
        # Internal (run by `parity` in a subprocess), so not in --help.
        model, inputs, out, batch, timesteps = argv[1:]
        from keras_lstm.tools import parity

        parity.worker(model, inputs, out, int(batch), int(timesteps))
        return 0
    args = parser.parse_args(argv)
    if args.command == "demo":
        from keras_lstm.tools import demo

        demo.demo(args.epochs, args.samples, args.max_len, args.seed)
    elif args.command == "parity":
        from keras_lstm.tools import parity

        return parity.parity(
            args.model,
            args.backends,
            args.inputs,
            args.atol,
            args.batch,
            args.timesteps,
        )
    elif args.command == "doctor":
        from keras_lstm.tools import doctor

        return doctor.run(
            atol=args.atol,
            run_check=not args.no_check,
            json_path=args.json,
            seed=args.seed,
            cases=[c for c in doctor.CASES if c.mask in args.masks],
        )
    return 0
