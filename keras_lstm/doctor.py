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
versions come from importlib.metadata). `check()` runs in-process, so a
test can break the kernel and see the check fail.
"""

import contextlib
import dataclasses
import importlib.metadata
import json
import platform
import sys

import keras
import numpy as np

import keras_lstm
import keras_lstm.backend
from keras_lstm import bench_util, cli
from keras_lstm.dispatch import GENERIC

BACKEND = keras.backend.backend()
MASK_KINDS = cli.MASK_KINDS
# Small shapes: the check is about agreement, not speed. Six rows leave
# room for every mask kind's patterns (a full row, a one-step row, ...).
BATCH, TIMESTEPS, FEATURES, UNITS = 6, 9, 5, 6
# Float32 against float32 in another summation order: cuDNN picks its own
# algorithms, hence more room on a GPU.
CPU_ATOL, GPU_ATOL = 1e-5, 1e-4

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


@dataclasses.dataclass(frozen=True)
class Case:
    """One call compared: its mask kind, direction, initial states, and
    whether the step is the standard one or takes other activations (the
    kernels' own loops, where cuDNN and torch's op cannot run it)."""

    mask: str
    go_backwards: bool = False
    initial_state: bool = False
    other_activations: bool = False

    @property
    def name(self) -> str:
        direction = "backwards" if self.go_backwards else "forwards"
        states = "initial state" if self.initial_state else "zero state"
        name = f"mask {self.mask}, {direction}, {states}"
        if self.other_activations:
            name += ", " + ", ".join(
                f"{k}={v}" for k, v in OTHER_ACTIVATIONS.items()
            )
        return name


# The step of `other_activations` cases.
OTHER_ACTIVATIONS = {
    "activation": "relu",
    "recurrent_activation": "hard_sigmoid",
}

CASES = tuple(
    Case(mask, go_backwards, initial_state)
    for mask in MASK_KINDS
    for go_backwards in (False, True)
    for initial_state in (False, True)
) + tuple(Case(mask, True, True, True) for mask in MASK_KINDS)


@dataclasses.dataclass(frozen=True)
class Check:
    """One row of the table.

    Attributes:
        name: what was compared.
        kernel: the kernel explain() names for the fused layer's call.
        max_abs_diff: the largest |fused - keras.ops| (nan when it did not
            run).
        ok: whether every element is within the tolerance and the fused
            kernel ran.
        detail: why a row failed (the worst tensor, or what went wrong).
    """

    name: str
    kernel: str
    max_abs_diff: float
    ok: bool
    detail: str = ""


# ---------------------------------------------------------------------------
# The report.


def _distribution_version(names) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def on_gpu() -> bool:
    """Whether the active backend runs on a GPU here."""
    return bench_util.device(BACKEND)[1]


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
    info["cpu"] = bench_util.cpu()
    info["device"] = bench_util.device(BACKEND)[0]
    return info


def _inputs(rng, batch=BATCH, timesteps=TIMESTEPS):
    return rng.normal(size=(batch, timesteps, FEATURES)).astype("float32")


def kernel_plans() -> list[tuple[str, keras_lstm.Plan]]:
    """What explain() says of the common calls, outside full_float32()."""
    rng = np.random.default_rng(0)
    x = _inputs(rng)
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
# The check.


def make_mask(kind, rng, batch=BATCH, timesteps=TIMESTEPS):
    """A boolean (batch, timesteps) mask of one kind, or None for "none".

    Kinds: "right" (right-padded, one row of one step), "left"
    (left-padded), "holes" (masked steps anywhere, first and last
    included), "full_row" (one row entirely masked).
    """
    steps = np.arange(timesteps)[None, :]
    if kind == "none":
        return None
    if kind in ("right", "full_row"):
        lengths = rng.integers(1, timesteps + 1, size=batch)
        lengths[:2] = timesteps, 1
        if kind == "full_row":
            lengths[2] = 0
        return steps < lengths[:, None]
    if kind == "left":
        starts = rng.integers(0, timesteps, size=batch)
        starts[:2] = 0, timesteps - 1
        return steps >= starts[:, None]
    if kind == "holes":
        mask = rng.random((batch, timesteps)) > 0.35
        mask[0, 0] = mask[1, -1] = False
        mask[:, timesteps // 2] = True  # no row entirely masked
        return mask
    raise ValueError(f"Unknown mask kind: {kind!r}")


def _layer(weights, use_cudnn, case):
    layer = keras_lstm.LSTM(
        UNITS,
        use_cudnn=use_cudnn,
        go_backwards=case.go_backwards,
        return_sequences=True,
        return_state=True,
        **(OTHER_ACTIVATIONS if case.other_activations else {}),
    )
    layer.build((None, None, FEATURES))
    layer.set_weights(weights)
    return layer


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _reference_mode():
    """The keras.ops path without jit on JAX: an eager call compiles a
    fresh lax.scan each time (its step is a new closure), several times
    slower at these sizes than running its operations one by one."""
    if BACKEND == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


def _loss(layer, mask, cotangents, with_state):
    """`fn(x, [h0, c0,] *weights)`: the outputs dotted with cotangents.

    The weights are arguments (stateless_call), so every backend
    differentiates them as it does the inputs (jax.grad sees no
    variables).
    """
    mask = None if mask is None else keras.ops.convert_to_tensor(mask)
    cotangents = [keras.ops.convert_to_tensor(c) for c in cotangents]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def fn(x, *rest):
        kwargs = {}
        if with_state:
            kwargs["initial_state"] = list(rest[:2])
            rest = rest[2:]
        if mask is not None:
            kwargs["mask"] = mask
        outputs, _ = layer.stateless_call(
            list(rest), non_trainable, x, **kwargs
        )
        terms = [
            keras.ops.sum(o * c)
            for o, c in zip(outputs, cotangents, strict=True)
        ]
        return sum(terms[1:], terms[0])

    return fn


def _grad(fn, arrays):
    """Gradients of the scalar `fn(*arrays)` w.r.t. each array, by the
    backend's own autodiff; None where the loss does not reach one."""
    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = fn(*tensors)
        grads = tape.gradient(loss, tensors)
    elif BACKEND == "jax":
        import jax

        grads = jax.grad(fn, argnums=tuple(range(len(tensors))))(*tensors)
    elif BACKEND == "torch":
        import torch

        tensors = [t.detach().requires_grad_(True) for t in tensors]
        grads = torch.autograd.grad(fn(*tensors), tensors, allow_unused=True)
    else:
        raise NotImplementedError(f"no gradients on the {BACKEND} backend")
    return [None if g is None else _numpy(g) for g in grads]


@contextlib.contextmanager
def _count_kernel_calls():
    """Counts calls of the backend's fused kernel while the block runs.

    layer.py calls `kernels.lstm` through the module object, so wrapping
    that attribute sees every call (and whatever it is at the time, such
    as a test's broken kernel).
    """
    kernels = keras_lstm.backend.kernels
    calls = []
    if kernels is None:
        yield calls
        return
    real = kernels.lstm

    def counted(*args, **kwargs):
        calls.append(None)
        return real(*args, **kwargs)

    kernels.lstm = counted
    try:
        yield calls
    finally:
        kernels.lstm = real


def _compare(names, got, want, atol):
    """The largest |got - want| over the tensors, whether it is within
    atol, and (when not) the worst tensor's name."""
    worst, worst_name = 0.0, ""
    for name, g, w in zip(names, got, want, strict=True):
        if g is None:
            return float("nan"), False, f"no gradient for {name}"
        if g.shape != w.shape:
            return float("nan"), False, f"{name}: shape {g.shape} != {w.shape}"
        diff = float(np.max(np.abs(g - w))) if g.size else 0.0
        # `not <=`: a NaN difference becomes the worst (and fails).
        if not diff <= worst:
            worst, worst_name = diff, name
    ok = worst <= atol
    return worst, ok, "" if ok else f"worst: {worst_name}"


def _check_case(case, rng, atol) -> list[Check]:
    x = _inputs(rng)
    weights = [
        rng.normal(0.0, 0.3, (FEATURES, 4 * UNITS)).astype("float32"),
        rng.normal(0.0, 0.3, (UNITS, 4 * UNITS)).astype("float32"),
        rng.normal(0.0, 0.3, (4 * UNITS,)).astype("float32"),
    ]
    state = None
    if case.initial_state:
        state = [
            rng.normal(0.0, 0.5, (BATCH, UNITS)).astype("float32")
            for _ in range(2)
        ]
    mask = make_mask(case.mask, rng)
    fused = _layer(weights, "auto", case)
    generic = _layer(weights, False, case)
    plan = keras_lstm.explain(fused, x, mask=mask, initial_state=state)
    if plan.kernel == GENERIC:
        reason = "; ".join(plan.reasons)
        return [
            Check(
                case.name,
                GENERIC,
                float("nan"),
                False,
                f"the fused kernel does not run: {reason}",
            )
        ]

    def call(layer):
        kwargs = {}
        if state is not None:
            kwargs["initial_state"] = [
                keras.ops.convert_to_tensor(s) for s in state
            ]
        if mask is not None:
            kwargs["mask"] = keras.ops.convert_to_tensor(mask)
        return [
            _numpy(o) for o in layer(keras.ops.convert_to_tensor(x), **kwargs)
        ]

    with _reference_mode():
        want = call(generic)
    with _count_kernel_calls() as calls:
        got = call(fused)
    if not calls:
        return [_not_run(case.name, plan.kernel)]
    diff, ok, detail = _compare(["output", "h", "c"], got, want, atol)
    rows = [Check(f"{case.name}: forward", plan.kernel, diff, ok, detail)]

    # Random cotangents weigh every output element differently: a gradient
    # sent to the wrong step, row or unit changes the result.
    cotangents = [rng.normal(size=w.shape).astype("float32") for w in want]
    arguments = [x] + (state or []) + weights
    names = ["inputs"] + (["h0", "c0"] if state else [])
    names += ["kernel", "recurrent_kernel", "bias"]
    with_state = state is not None
    with _reference_mode():
        want = _grad(_loss(generic, mask, cotangents, with_state), arguments)
    with _count_kernel_calls() as calls:
        got = _grad(_loss(fused, mask, cotangents, with_state), arguments)
    if not calls:
        return rows + [_not_run(f"{case.name}: gradients", plan.kernel)]
    diff, ok, detail = _compare(names, got, want, atol)
    rows.append(Check(f"{case.name}: gradients", plan.kernel, diff, ok, detail))
    return rows


def _not_run(name, kernel) -> Check:
    return Check(
        name,
        kernel,
        float("nan"),
        False,
        "explain() names a fused kernel, but the call did not run it",
    )


def check(atol=None, seed=0, cases=CASES) -> list[Check]:
    """Compares the fused kernel with the keras.ops path, TF32 off.

    Each case builds a `keras_lstm.LSTM(use_cudnn="auto",
    return_sequences=True, return_state=True)` and the same layer with
    `use_cudnn=False` and the same weights, and compares outputs, h and c,
    and the gradients of a scalar loss with respect to the inputs, the
    initial states and every weight.

    Args:
        atol: the largest absolute difference allowed (float32: weights
            of scale 0.3, normal inputs). Default 1e-5 on CPU, 1e-4 on a
            GPU.
        seed: seed of the random inputs, weights, masks and cotangents.
        cases: the `Case`s to run (default: every mask kind, both
            directions, with and without initial states; and every mask
            kind with other activations).

    Returns:
        One `Check` per comparison; a case that raised, or whose fused
        kernel did not run, gives one failed row.
    """
    if atol is None:
        atol = GPU_ATOL if on_gpu() else CPU_ATOL
    rng = np.random.default_rng(seed)
    rows = []
    with keras_lstm.full_float32():
        for case in cases:
            try:
                rows.extend(_check_case(case, rng, atol))
            except Exception as error:  # a crash is a failed check
                rows.append(
                    Check(
                        case.name,
                        "?",
                        float("nan"),
                        False,
                        f"{type(error).__name__}: {error}",
                    )
                )
    return rows


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
