"""The command line: `python -m keras_lstm demo` on the current backend."""

import os
import re
import subprocess
import sys

import keras


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
