"""The command line: `python -m keras_lstm demo` on the current backend, its
help and its message when Keras's backend is missing, and `.ci/gpu`."""

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import pytest

from keras_lstm.tools import cli, preflight


def test_demo_trains_and_reports_accuracy():
    # A short run: the command must work end to end on this backend and
    # learn something (chance is 0.5 on the balanced majority task).
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_lstm",
            "demo",
            "--epochs",
            "4",
            "--samples",
            "1024",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    match = re.search(r"test accuracy ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) > 0.75
    assert "kernel" in result.stdout


def test_unknown_command_is_an_error():
    result = subprocess.run(
        [sys.executable, "-m", "keras_lstm", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_version_and_help():
    import keras_lstm

    run = [sys.executable, "-m", "keras_lstm"]
    version = subprocess.run(
        run + ["--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"keras_lstm {keras_lstm.__version__}"
    help_text = subprocess.run(
        run + ["--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in help_text and "parity" in help_text
    assert "_parity_worker" not in help_text  # internal


ROOT = pathlib.Path(__file__).resolve().parents[1]

_IMPORT_SCRIPT = """
import json, sys
import keras
import keras_lstm
assert keras.saving.get_registered_object("keras_lstm>LSTM") is keras_lstm.LSTM
print(json.dumps(sorted(m for m in sys.modules if m.startswith("keras_lstm"))))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["-c", _IMPORT_SCRIPT],
        # A program whose name or arguments mention keras_lstm.
        ["-", "keras_lstm", "-m", "keras_lstm"],
    ],
    ids=["-c", "stdin"],
)
def test_import_keras_lstm_imports_no_tool(command):
    # The library is imported, with its registered names; nothing of the
    # command line is (keras_lstm.tools, keras_lstm.__main__).
    result = subprocess.run(
        [sys.executable, *command],
        input=_IMPORT_SCRIPT if command[0] == "-" else None,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "keras_lstm.layer" in modules and "keras_lstm.backend" in modules
    tools = [
        m
        for m in modules
        if m.startswith("keras_lstm.tools") or m == "keras_lstm.__main__"
    ]
    assert not tools


def test_the_command_line_runs_its_check_first():
    # `python -m keras_lstm` imports the package first: the check runs
    # there, before keras, and the command's modules load after.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_lstm", "--help"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "keras_lstm.tools.preflight" in imported
    assert "keras" not in imported  # --help answered before keras


# Imported first by the interpreter (PYTHONPATH), it makes one package
# unimportable, as on a machine where it is not installed.
HIDE = """
import sys


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == {name!r} or name.startswith({name!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
"""


def _run_without(module, args, tmp_path, **env):
    (tmp_path / "sitecustomize.py").write_text(HIDE.format(name=module))
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KERAS_BACKEND", "KERAS_HOME")
    }
    environ.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        HOME=str(tmp_path),  # no ~/.keras/keras.json
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "keras_lstm", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("args", [["--help"], ["doctor"]])
def test_without_the_default_backend_says_how_to_pick_one(tmp_path, args):
    # No KERAS_BACKEND, no keras.json, no TensorFlow: Keras's default
    # backend is missing, and the command says so instead of a traceback.
    result = _run_without("tensorflow", args, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr
    assert "Traceback" not in message
    assert "tensorflow is not installed" in message
    installed = [b for b in ("jax", "torch") if importlib.util.find_spec(b)]
    if installed:
        assert f"Installed backends: {', '.join(installed)}." in message
        assert f"KERAS_BACKEND={installed[0]} python -m keras_lstm" in message
    else:
        assert "No backend is installed" in message


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--help"], "doctor"),
        (["--version"], "keras_lstm "),
        (["doctor", "--help"], "--no-check"),
        (["parity", "--help"], "--backends"),
    ],
)
def test_help_and_version_do_not_import_keras(tmp_path, args, expected):
    result = _run_without(
        "keras", args, tmp_path, KERAS_BACKEND=keras.backend.backend()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout


def _actions(parser):
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action, argparse._SubParsersAction):
            yield from ((parser.prog, a) for a in action._choices_actions)
            for sub in action.choices.values():
                yield from _actions(sub)


def test_every_option_has_help():
    parser = cli.build_parser()
    missing = [
        f"{prog}: {action.dest}"
        for prog, action in _actions(parser)
        if not isinstance(action, argparse._HelpAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert not missing
    commands = {a.dest for _, a in _actions(parser) if a.dest}
    assert {"demo", "bench", "parity", "doctor"} <= commands


@pytest.mark.parametrize(
    "orig_argv, module",
    [
        (["python", "-m", "keras_lstm", "--help"], "keras_lstm"),
        (["python", "-u", "-W", "ignore", "-m", "keras_lstm"], "keras_lstm"),
        (["python", "-Xfrozen_modules=off", "-um", "keras_lstm"], "keras_lstm"),
        (["python", "-mkeras_lstm.__main__"], "keras_lstm.__main__"),
        (["python", "-m", "pytest", "-m", "keras_lstm"], "pytest"),
        (["python", "script.py", "-m", "keras_lstm"], None),
        (["python", "-c", "import keras_lstm"], None),
    ],
)
def test_the_module_run_with_dash_m(orig_argv, module):
    assert preflight._module_of(orig_argv) == module


def test_ci_gpu_script_parses_and_has_help():
    script = ROOT / ".ci" / "gpu"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    result = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for option in ("--wheels", "--logs", "--allow-cpu", "--pytest-args"):
        assert option in result.stdout
    wrong = subprocess.run(
        [str(script), "--frobnicate"], capture_output=True, timeout=30
    )
    assert wrong.returncode == 2
