"""The command line's checks before keras is imported.

`python -m keras_lstm` and the `keras-lstm` script import the package
before any of their own code runs, and the package imports keras, which
imports its backend: TensorFlow unless KERAS_BACKEND or keras.json names
another. Without that framework the command would end in Keras's
ModuleNotFoundError traceback. So keras_lstm/__init__.py, when sys.argv
says this process may be the command line (and only then: `import
keras_lstm` imports nothing from keras_lstm.tools otherwise), calls
`preflight()` before keras: it makes sure (`invoked_as_command`), says
which backends are installed and how to pick one (exit 2), and answers
`--help` and `--version` without importing keras, which takes seconds.

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
    text = (pathlib.Path(__file__).parents[1] / "__init__.py").read_text()
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
        from keras_lstm.tools import cli

        cli.build_parser().parse_args(argv)
