"""What the CPU can do, for the kernels' choice of math dtype (no framework
imported here)."""

import functools


@functools.cache
def _flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bfloat16_units() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX),
    where oneDNN's bfloat16 kernels beat float32 (torch and TensorFlow)."""
    return bool({"avx512_bf16", "amx_bf16"} & _flags())


def math_dtype(dtype: str, fast_bfloat16: bool) -> str:
    """The dtype a CPU kernel computes in for inputs of `dtype`: float32
    for 16-bit floats the CPU has no fast path for (float16 on every
    backend: slower than float32 on all three, 160x on torch, benchmarks/
    `--workloads mixed`; bfloat16 unless `fast_bfloat16`), else `dtype`."""
    if dtype == "float16" or (dtype == "bfloat16" and not fast_bfloat16):
        return "float32"
    return dtype


def notes(dtype: str, math: str, why: str) -> tuple[str, ...]:
    """explain()'s note when the kernel computes in another dtype."""
    if math == dtype:
        return ()
    return (f"computes in {math} and returns {dtype}: {why}",)
