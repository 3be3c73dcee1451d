"""`python -m keras_lstm doctor`: the report, and a check that fails when the
fused kernel is wrong or does not run."""

import io
import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

import keras_lstm.backend
from keras_lstm.tools import doctor

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    keras_lstm.backend.kernels is None,
    reason=f"the {keras.backend.backend()} backend has no fused kernel",
)


def test_doctor_reports_and_passes(tmp_path):
    # One mask kind (four cases) keeps the run short (compiling the
    # kernels dominates on JAX); the command is the one a user types.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_lstm",
            "doctor",
            "--masks",
            "none",
            "--json",
            str(tmp_path / "doctor.json"),
        ],
        env=dict(os.environ, KERAS_BACKEND=keras.backend.backend()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert keras.__version__ in out and "device" in out
    for call in (
        "float32, no mask",
        "right-padded mask",
        "mask with holes",
        "keras_lstm.Bidirectional",
        "mixed_float16 policy",
        "mixed_bfloat16 policy",
    ):
        assert call in out
    # Recurrent dropout in training runs a kernel: the row names it.
    (row,) = [
        line for line in out.splitlines() if "recurrent_dropout=0.2" in line
    ]
    assert "generic" not in row and "reason" not in row
    assert "max abs diff" in out
    assert "mask none, backwards, initial state: gradients" in out
    # Other activations, on the kernels' own loops, are checked too.
    assert "activation=relu, recurrent_activation=hard_sigmoid" in out
    assert "doctor: 10 checks passed, 0 failed" in out
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["ok"] is True and len(report["checks"]) == 10
    assert report["environment"]["backend"] == keras.backend.backend()


CASES = [doctor.Case("holes", go_backwards=True, initial_state=True)]


def test_a_wrong_kernel_fails_the_check(monkeypatch):
    kernels = keras_lstm.backend.kernels
    real = kernels.lstm

    def off_by_a_little(*args, **kwargs):
        # Scaled, not shifted, so that the gradients are wrong too.
        sequence, h, c = real(*args, **kwargs)
        return sequence, h * 1.001, c

    monkeypatch.setattr(kernels, "lstm", off_by_a_little)
    out = io.StringIO()
    assert doctor.run(cases=CASES, out=out) == 1
    text = out.getvalue()
    assert "FAIL (worst: h)" in text
    assert "doctor: 0 checks passed, 2 failed" in text


def test_a_kernel_that_does_not_run_fails_the_check(monkeypatch):
    kernels = keras_lstm.backend.kernels
    monkeypatch.setattr(
        kernels, "unsupported", lambda inputs, cell=None: ("broken",)
    )
    rows = doctor.check(cases=CASES)
    assert [r.ok for r in rows] == [False]
    assert rows[0].kernel == "generic"
    assert "does not run: broken" in rows[0].detail


def test_a_kernel_that_raises_is_a_failed_row(monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("cuDNN said no")

    monkeypatch.setattr(keras_lstm.backend.kernels, "lstm", crash)
    (row,) = doctor.check(cases=CASES)
    assert not row.ok and "cuDNN said no" in row.detail


def test_the_check_passes_here():
    rows = doctor.check(cases=CASES)
    assert len(rows) == 2 and all(r.ok for r in rows), rows
