"""The command line's parser, and the checks it makes before keras is imported.

`python -m keras_lstm` and the `keras-lstm` script import the package
before any of their own code runs, and the package imports keras, which
imports its backend: TensorFlow unless KERAS_BACKEND or keras.json names
another. Without that framework the command would end in Keras's
ModuleNotFoundError traceback. So keras_lstm/__init__.py runs `preflight()`
first (through keras_lstm/_preflight.py): when this process is the command
line, it says which backends are installed and how to pick one (exit 2),
and answers `--help` and `--version` without importing keras, which takes
seconds. Imported as a library, nothing happens.

This module imports the standard library only.
"""

import importlib.util
import json
import os
import pathlib
import re
import shlex
import sys

BACKENDS = ("tensorflow", "jax", "torch")
# The masks `doctor` checks (keras_lstm/doctor.py).
MASK_KINDS = ("none", "right", "left", "holes", "full_row")
# Keras's own backends and the module each one imports; keras_lstm has
# fused kernels for the first three.
_MODULES = {
    "tensorflow": "tensorflow",
    "jax": "jax",
    "torch": "torch",
    "numpy": "numpy",
    "openvino": "openvino",
}
# Keras's default when neither KERAS_BACKEND nor keras.json names one.
_KERAS_DEFAULT = "tensorflow"
_SCRIPT = "keras-lstm"


def version() -> str:
    """keras_lstm's version, read from keras_lstm/__init__.py as setuptools
    reads it (importing the package would import keras)."""
    text = (pathlib.Path(__file__).parent / "__init__.py").read_text()
    match = re.search(r"^__version__ = [\"']([^\"']+)[\"']", text, re.M)
    return match.group(1) if match else "unknown"


def installed(module: str) -> bool:
    """Whether `module` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A finder that refuses the module, or a module in sys.modules
        # without a spec: either way it cannot be imported as a backend.
        return False


def installed_backends() -> list[str]:
    """The backends keras_lstm has kernels for that are installed."""
    return [b for b in BACKENDS if installed(_MODULES[b])]


def _keras_config_path() -> str:
    # As keras/src/backend/config.py finds it.
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        home = os.path.join(base, ".keras")
    return os.path.expanduser(os.path.join(home, "keras.json"))


def configured_backend() -> tuple[str, str]:
    """The backend Keras will import, and what chose it.

    Returns:
        `(backend, source)`: source is "KERAS_BACKEND", the keras.json path,
        or "Keras's default".
    """
    # An empty KERAS_BACKEND is ignored by Keras too.
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env, "KERAS_BACKEND"
    path = _keras_config_path()
    try:
        with open(path) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    if isinstance(backend, str) and backend:
        return backend, path
    return _KERAS_DEFAULT, "Keras's default"


def _command(argv) -> str:
    """This command line as the user would type it again."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program.startswith(_SCRIPT):
        return shlex.join([_SCRIPT, *argv])
    return shlex.join(["python", "-m", "keras_lstm", *argv])


def backend_problem(argv=()) -> str | None:
    """Why keras cannot import its backend here, with what to do; None when
    it can.

    Args:
        argv: the command's arguments, for the example command line.
    """
    backend, source = configured_backend()
    module = _MODULES.get(backend)
    if module is not None and installed(module):
        return None
    if source == "KERAS_BACKEND":
        chosen = f"KERAS_BACKEND={backend}"
    elif source == "Keras's default":
        chosen = (
            f"Keras's default backend is {backend} (KERAS_BACKEND is not set "
            f"and {_keras_config_path()} names no backend)"
        )
    else:
        chosen = f'{source} names the backend "{backend}"'
    if module is None:
        problem = f"{chosen}, which is not a Keras backend"
    else:
        problem = f"{chosen}, but {module} is not installed"
    lines = [f"keras_lstm: {problem}."]
    found = installed_backends()
    if found:
        lines += [
            f"Installed backends: {', '.join(found)}. Pick one for this "
            "command:",
            "",
            f"    KERAS_BACKEND={found[0]} {_command(argv)}",
            "",
            f"or for every command: export KERAS_BACKEND={found[0]}, or set "
            f'"backend" in {_keras_config_path()}.',
        ]
    else:
        lines += [
            "No backend is installed. Install one, then pick it:",
            "",
            '    pip install "keras_lstm[jax]"    # or [tensorflow] / [torch]',
            f"    KERAS_BACKEND=jax {_command(argv)}",
        ]
    return "\n".join(lines)


def invoked_as_command() -> bool:
    """Whether this process is `python -m keras_lstm` or `keras-lstm`, and
    the package is being imported on the way to the command's code.

    While runpy imports the package of a `-m` module, sys.argv[0] is "-m";
    sys.orig_argv (Python 3.10+) then says which module: a package that
    imports keras_lstm while being run with -m is not the command line.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 == "-m":
        return _module_of(getattr(sys, "orig_argv", [])) in (
            "keras_lstm",
            "keras_lstm.__main__",
        )
    return os.path.basename(argv0) in (_SCRIPT, f"{_SCRIPT}.exe")


def _module_of(orig_argv) -> str | None:
    """The module of `python [options] -m MODULE ...`, if any."""
    skip = False
    for i, arg in enumerate(orig_argv[1:], start=1):
        if skip:
            skip = False
        elif arg in ("-W", "-X", "--check-hash-based-pycs"):
            skip = True  # their value follows
        elif arg[:2] in ("-W", "-X") or (arg[:2] == "--" and arg != "--"):
            continue  # a joined value (which may hold an "m"); a long option
        elif arg in ("-", "--") or arg[:1] != "-" or arg[:2] == "-c":
            return None  # stdin, a script or -c: not -m
        else:
            # -m ends the interpreter's options; it may follow other flags
            # (-um) or have the module joined to it (-mkeras_lstm).
            _, m, rest = arg[1:].partition("m")
            if m:
                if rest:
                    return rest
                return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
    return None


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
        version=f"keras_lstm {version()}",
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


def preflight(argv=None) -> None:
    """The command line's checks before keras is imported.

    Does nothing unless this process is the command line. Exits 2 with a
    message when Keras's backend is not installed; answers a `--help` or
    `--version` (not bench's, which parses its own) and exits.
    """
    if not invoked_as_command():
        return
    argv = sys.argv[1:] if argv is None else list(argv)
    problem = backend_problem(argv)
    if problem is not None:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    asks = {"-h", "--help", "--version"}
    if argv[:1] != ["bench"] and asks.intersection(argv):
        # argparse prints the help or the version and exits; if it does
        # not (the word was an option's value), the command runs as usual.
        build_parser().parse_args(argv)
