"""The torch loop's backward pass (keras_lstm/backend/torch_loop.py) with
its step factors computed for chunks of steps of different sizes: why
`_CHUNK_BYTES` is what it is.

    python benchmarks/probe_torch_loop.py
    python benchmarks/probe_torch_loop.py --shape 128 100 512 --chunks 0 8 4 2

A recurrent-dropout step (the case torch's fused op cannot take), the
backward pass alone (`_backward`) on saved forward states, denormals
flushed as the kernel flushes them; the median of 9 rounds, the chunk
sizes called in turn in one process. Chunk 0: every step at once.
"""

import argparse
import time

import torch

from keras_lstm.backend import torch_loop
from keras_lstm.backend.cell import Cell


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(64, 100, 256),
        metavar=("BATCH", "STEPS", "UNITS"),
    )
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=(0, 32, 16, 8, 4)
    )
    args = parser.parse_args()
    batch, steps, units = args.shape
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    cell = Cell(None, None, 0.25, False)
    projected = torch.randn(steps, batch, 4 * units)
    recurrent = torch.randn(units, 4 * units) * 0.05
    h0, c0 = torch.zeros(batch, units), torch.zeros(batch, units)
    mask = (torch.rand(batch, units) > 0.25).float() / 0.75
    hs, cs, zs, _, _ = torch_loop._forward(
        projected, h0, c0, recurrent, None, mask, cell, saves=True
    )
    d_h, d_c = torch.randn(batch, units), torch.zeros(batch, units)
    original = torch_loop._chunk_steps

    def run(chunk):
        torch_loop._chunk_steps = lambda steps, *_: (
            steps if chunk == 0 else chunk
        )
        try:
            return torch_loop._backward(
                zs,
                h0,
                c0,
                recurrent,
                None,
                mask,
                cell,
                hs,
                cs,
                None,
                d_h,
                d_c,
            )
        finally:
            torch_loop._chunk_steps = original

    reference = run(0)
    for chunk in args.chunks:
        error = max(
            float((a - b).abs().max())
            for a, b in zip(run(chunk), reference, strict=True)
        )
        assert error < 1e-4, (chunk, error)
    times = {chunk: [] for chunk in args.chunks}
    for _ in range(9):
        for chunk in args.chunks:
            start = time.perf_counter()
            run(chunk)
            times[chunk].append(time.perf_counter() - start)
    chosen = original(steps, batch, units, torch.float32)
    print(
        f"batch {batch}, {steps} steps, {units} units; default chunk {chosen}"
    )
    for chunk, spent in times.items():
        spent.sort()
        print(f"chunk {chunk or 'all'}: {1e3 * spent[len(spent) // 2]:.2f} ms")


if __name__ == "__main__":
    main()
