"""Denormal floats flushed to zero around torch's fused LSTM op on CPU.

Denormal floats (below 1.2e-38 in float32) appear as a long recurrence
decays, mostly in the backward pass. Intel CPUs take a microcode assist for
each: oneDNN's LSTM backward at 1,000 steps ran 12x slower than with them
flushed to zero (issue 19, a Cascade Lake Xeon). XLA flushes them in its
own threads; torch leaves the setting to the user (a per-thread CPU flag
with no getter), so `run_flushed` sets it around the op's forward pass and,
later, its backward pass, in the calling thread and in the OpenMP threads
torch computes on, and puts back each thread's own setting after.

Imported by keras_lstm/backend/torch.py only.
"""

import contextlib
import ctypes
import functools
import os
import threading

import torch

_TINY, _ONE = 5e-324, 1.0  # the smallest double: zero once flushed


def _flushes() -> bool:
    """Whether the calling thread flushes denormals (a Python float
    product runs under the thread's floating-point flags)."""
    return _TINY * _ONE == 0.0


@functools.cache
def supported() -> bool:
    """Whether torch can flush denormals on this CPU (x86 with DAZ) in
    every thread it computes on (its OpenMP threads: flushing the calling
    thread alone leaves the others' share slow)."""
    if _openmp() is None:
        return False
    caller = _flushes()
    works = torch.set_flush_denormal(True)
    torch.set_flush_denormal(caller)
    return works


@functools.cache
def _openmp():
    """(GOMP_parallel, omp_get_thread_num) of the OpenMP runtime torch
    computes with, or None where torch does not use libgomp: through
    GOMP_parallel a function runs once on every thread of the calling
    thread's team, the threads torch's next parallel op runs on."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    library = None
    torch_dir = os.path.dirname(torch.__file__)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path)
                if path.startswith(torch_dir) and name.startswith("libgomp"):
                    library = path
                    break
    except OSError:
        pass
    try:
        runtime = ctypes.CDLL(library)  # None: the process's global symbols
        parallel, thread_num = runtime.GOMP_parallel, runtime.omp_get_thread_num
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_uint] * 2
    parallel.restype = None
    thread_num.restype = ctypes.c_int
    return parallel, thread_num


_saved_flush = {}  # an OpenMP thread's own setting, by thread


def _set_on_worker(flush):
    """Runs on every thread of the team but the caller: flushes (and
    remembers the thread's setting), or puts the setting back."""
    if _openmp()[1]() == 0:
        return
    ident = threading.get_ident()
    if flush:
        _saved_flush[ident] = _flushes()
        torch.set_flush_denormal(True)
    else:
        torch.set_flush_denormal(_saved_flush.pop(ident, False))


_ON_WORKERS = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_set_on_worker)
_depth = threading.local()


def _on_workers(flush: bool):
    runtime, threads = _openmp(), torch.get_num_threads()
    if runtime is not None and threads > 1:
        runtime[0](_ON_WORKERS, 1 if flush else None, threads, 0)


@contextlib.contextmanager
def flushed():
    """Denormals flushed to zero in the calling thread and its OpenMP
    threads; each thread's own setting back after. Nested uses are
    free."""
    if getattr(_depth, "value", 0):
        yield
        return
    caller = _flushes()
    torch.set_flush_denormal(True)
    _on_workers(True)
    _depth.value = 1
    try:
        yield
    finally:
        _depth.value = 0
        _on_workers(False)
        torch.set_flush_denormal(caller)


class _FlushedBackward(torch.autograd.Function):
    """`op(*tensors)` with denormals flushed in its forward pass and in its
    backward pass, which autograd runs later: the op records its own graph
    here, and the backward differentiates it inside the flushed scope."""

    @staticmethod
    def forward(ctx, op, *tensors):
        with torch.enable_grad(), flushed():
            leaves = [
                t.detach().requires_grad_(t.requires_grad) for t in tensors
            ]
            outputs = op(*leaves)
        ctx.op, ctx.leaves, ctx.outputs = op, leaves, outputs
        ctx.save_for_backward(*tensors)
        # An output the loss does not use gets no gradient (None), not a
        # tensor of zeros: the sequence of a long input is large.
        ctx.set_materialize_grads(False)
        return tuple(o.detach() for o in outputs)

    @staticmethod
    def backward(ctx, *grads):
        if not any(g is not None for g in grads):
            return (None,) * (len(ctx.leaves) + 1)
        with flushed():
            if torch.is_grad_enabled():
                # create_graph=True (a gradient penalty, a Hessian): the
                # gradients must be differentiable functions of the
                # caller's tensors, so the op runs again on those.
                inputs = ctx.saved_tensors
                outputs = ctx.op(*inputs)
            else:
                inputs, outputs = ctx.leaves, ctx.outputs
            pairs = [
                (o, g)
                for o, g in zip(outputs, grads, strict=True)
                if g is not None
            ]
            found = iter(
                torch.autograd.grad(
                    [o for o, _ in pairs],
                    [t for t in inputs if t.requires_grad],
                    [g for _, g in pairs],
                    # Kept as long as the caller's graph (which holds this
                    # node): a backward with retain_graph=True may come
                    # again.
                    retain_graph=True,
                    create_graph=torch.is_grad_enabled(),
                    allow_unused=True,
                )
            )
        return (None,) + tuple(
            next(found) if t.requires_grad else None for t in inputs
        )


def run_flushed(op, tensors, train):
    """`op(*tensors)` with denormals flushed, in its backward pass too when
    `train` (autograd records)."""
    if train:
        return _FlushedBackward.apply(op, *tensors)
    with flushed():
        return op(*tensors)
