"""One LSTM step on torch: torch's fused op against four torch ops.

Why keras_lstm's torch kernel runs a single timestep as plain ops
(`keras_lstm/backend/torch.py`, `_one_step`): on CPU the fused op reorders
the weights for oneDNN on every call, which costs more than one step.

    python benchmarks/probe_torch_step.py
"""

import time

import torch


def _runners(batch, units, features):
    x = torch.randn(batch, 1, features)
    h, c = torch.randn(1, batch, units), torch.randn(1, batch, units)
    w_ih, w_hh = torch.randn(4 * units, features), torch.randn(4 * units, units)
    bias, zeros = torch.randn(4 * units), torch.zeros(4 * units)

    def fused():
        weights = [w_ih, w_hh, bias, zeros]
        return torch._VF.lstm(
            x, (h, c), weights, True, 1, 0.0, False, False, True
        )

    def four_ops():
        z = torch.addmm(torch.addmm(bias, x[:, 0], w_ih.T), h[0], w_hh.T)
        i, f, g, o = z.chunk(4, 1)
        c_new = torch.sigmoid(f) * c[0] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    return fused, four_ops


def _microseconds(fn, calls=2000):
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    torch.set_grad_enabled(False)
    print("| batch | units | features | fused op us | four ops us | ratio |")
    print("|---|---|---|---|---|---|")
    for shape in ((1, 128, 32), (16, 128, 32), (64, 256, 128), (1, 512, 256)):
        fused, four_ops = (_microseconds(f) for f in _runners(*shape))
        cells = " | ".join(str(n) for n in shape)
        print(
            f"| {cells} | {fused:.1f} | {four_ops:.1f} | "
            f"{fused / four_ops:.2f}x |"
        )


if __name__ == "__main__":
    main()
