"""The check of `python -m keras_lstm doctor` (doctor.py): the fused kernel
against the keras.ops path on this device, TF32 off, for every mask kind,
both directions, with and without initial states, and with other
activations: outputs, final states and the gradients of a scalar loss with
respect to the inputs, the states and every weight. `check()` runs
in-process, so a test can break the kernel and see the check fail.
"""

import contextlib
import dataclasses

import keras
import numpy as np

import keras_lstm
import keras_lstm.backend
from keras_lstm.dispatch import GENERIC
from keras_lstm.tools.bench import util
from keras_lstm.tools.cli import MASK_KINDS

BACKEND = keras.backend.backend()
# Small shapes: the check is about agreement, not speed. Six rows leave
# room for every mask kind's patterns (a full row, a one-step row, ...).
BATCH, TIMESTEPS, FEATURES, UNITS = 6, 9, 5, 6
# Float32 against float32 in another summation order: cuDNN picks its own
# algorithms, hence more room on a GPU.
CPU_ATOL, GPU_ATOL = 1e-5, 1e-4


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


def on_gpu() -> bool:
    """Whether the active backend runs on a GPU here."""
    return util.device(BACKEND)[1]


def _inputs(rng, batch=BATCH, timesteps=TIMESTEPS):
    return rng.normal(size=(batch, timesteps, FEATURES)).astype("float32")


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
