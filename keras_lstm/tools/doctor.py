"""`python -m keras_lstm doctor`: what runs here, and whether it is right.

Prints the versions (keras, the backend's framework, the other frameworks
where installed, Python), the CPU and the device; the kernel each common
call takes, with explain()'s reasons and notes; then compares the fused
kernel with the keras.ops path on this device, for every mask kind, both
directions, with and without initial states: outputs, final states and the
gradients of a scalar loss with respect to the inputs, the states and every
weight, with TF32 off (`keras_lstm.full_float32()`). Exits 1 when a
comparison fails or the fused kernel did not run.

Frameworks other than the active backend's are never imported (their
versions come from importlib.metadata). This module prints the report
and runs the command; the check is doctor_check.py.
"""

import dataclasses
import importlib.metadata
import json
import platform
import sys

import keras
import numpy as np

import keras_lstm
from keras_lstm.tools.bench import util
from keras_lstm.tools.doctor_check import (
    BACKEND,
    BATCH,
    CASES,
    CPU_ATOL,
    FEATURES,
    GPU_ATOL,
    TIMESTEPS,
    UNITS,
    Case,  # noqa: F401  (doctor.Case picks cases, as before)
    Check,  # noqa: F401
    check,
    make_mask,
    on_gpu,
)

# Where a framework ships under several distribution names.
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "jax CUDA plugin": ("jax-cuda13-plugin", "jax-cuda12-plugin"),
    "tensorflow": (
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow-gpu",
        "tf-nightly",
    ),
}


# ---------------------------------------------------------------------------
# The report.


def _distribution_version(names) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _framework() -> dict[str, str]:
    """What the active backend's framework says of itself."""
    info = {}
    if BACKEND == "torch":
        import torch

        info["torch (imported)"] = torch.__version__
        if torch.version.cuda:
            info["torch CUDA"] = torch.version.cuda
        if torch.backends.cudnn.is_available():
            info["torch cuDNN"] = str(torch.backends.cudnn.version())
    elif BACKEND == "jax":
        import jax

        info["jax (imported)"] = jax.__version__
        info["jax default backend"] = jax.default_backend()
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        info["tensorflow (imported)"] = tf.__version__
        build = tf.sysconfig.get_build_info()
        for key in ("cuda_version", "cudnn_version"):
            if build.get(key):
                info[f"tensorflow {key.replace('_', ' ')}"] = build[key]
    return info


def environment() -> dict[str, str]:
    """Versions, CPU and device, in the order printed."""
    info = {
        "keras_lstm": keras_lstm.__version__,
        "keras": keras.__version__,
        "backend": BACKEND,
        "python": f"{platform.python_version()} ({sys.executable})",
    }
    for label, names in _DISTRIBUTIONS.items():
        found = _distribution_version(names)
        if found is not None:
            info[label] = found
    info.update(_framework())
    info["cpu"] = util.cpu()
    info["device"] = util.device(BACKEND)[0]
    return info


def kernel_plans() -> list[tuple[str, keras_lstm.Plan]]:
    """What explain() says of the common calls, outside full_float32()."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TIMESTEPS, FEATURES)).astype("float32")
    plans = []

    def add(call, layer, **kwargs):
        plans.append((call, keras_lstm.explain(layer, x, **kwargs)))

    add("float32, no mask", keras_lstm.LSTM(UNITS))
    add(
        "right-padded mask",
        keras_lstm.LSTM(UNITS),
        mask=make_mask("right", rng),
    )
    add("mask with holes", keras_lstm.LSTM(UNITS), mask=make_mask("holes", rng))
    add(
        "keras_lstm.Bidirectional",
        keras_lstm.Bidirectional(keras_lstm.LSTM(UNITS, return_sequences=True)),
    )
    for policy in ("mixed_float16", "mixed_bfloat16"):
        add(f"{policy} policy", keras_lstm.LSTM(UNITS, dtype=policy))
    add(
        "training, recurrent_dropout=0.2",
        keras_lstm.LSTM(UNITS, recurrent_dropout=0.2),
        training=True,
    )
    return plans


# ---------------------------------------------------------------------------
# The command.


def _print_plans(plans, out):
    width = max(len(call) for call, _ in plans)
    for call, plan in plans:
        print(f"  {call:<{width}}  {plan.kernel}", file=out)
        for reason in plan.reasons:
            print(f"  {'':<{width}}    reason: {reason}", file=out)
        for note in plan.notes:
            print(f"  {'':<{width}}    note: {note}", file=out)


def _print_checks(rows, atol, out):
    width = max(len(r.name) for r in rows)
    kernel_width = max(len("kernel"), *(len(r.kernel) for r in rows))
    print(
        f"  {'check':<{width}}  {'kernel':<{kernel_width}}  max abs diff  "
        "result",
        file=out,
    )
    for r in rows:
        result = "OK" if r.ok else "FAIL"
        if r.detail:
            result += f" ({r.detail})"
        print(
            f"  {r.name:<{width}}  {r.kernel:<{kernel_width}}  "
            f"{r.max_abs_diff:<12.3g}  {result}",
            file=out,
        )


def run(
    atol=None, run_check=True, json_path=None, seed=0, cases=CASES, out=None
):
    """The doctor command: prints the report, runs the check.

    Args:
        atol: the check's tolerance (see `check`); default by device.
        run_check: run the check (False: the report only).
        json_path: also write everything to this JSON file.
        seed: seed of the check's random data.
        cases: the check's cases.
        out: where to print (default sys.stdout).

    Returns:
        The exit status: 0, or 1 when a check failed.
    """
    out = sys.stdout if out is None else out
    env = environment()
    width = max(len(k) for k in env)
    print("keras_lstm doctor\n", file=out)
    for key, value in env.items():
        print(f"  {key:<{width}}  {value}", file=out)
    plans = kernel_plans()
    print("\nkernels (keras_lstm.explain), TF32 as configured:", file=out)
    _print_plans(plans, out)
    result = {
        "environment": env,
        "kernels": [
            {
                "call": call,
                "kernel": plan.kernel,
                "reasons": list(plan.reasons),
                "notes": list(plan.notes),
            }
            for call, plan in plans
        ],
    }
    status = 0
    if run_check:
        if atol is None:
            atol = GPU_ATOL if on_gpu() else CPU_ATOL
        print(
            f"\nfused kernel against the keras.ops path on this device, "
            f"TF32 off (keras_lstm.full_float32()), atol {atol:g}:",
            file=out,
        )
        rows = check(atol=atol, seed=seed, cases=cases)
        _print_checks(rows, atol, out)
        failed = sum(not r.ok for r in rows)
        print(
            f"\ndoctor: {len(rows) - failed} checks passed, {failed} failed",
            file=out,
        )
        status = 1 if failed else 0
        result["atol"] = atol
        result["checks"] = [dataclasses.asdict(r) for r in rows]
        result["ok"] = not failed
    if json_path:
        with open(json_path, "w") as f:
            # NaN is not JSON: a row that did not run has no difference.
            json.dump(_json_safe(result), f, indent=2)
    return status


def _json_safe(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
