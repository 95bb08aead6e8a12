"""One Muon step on eight 384x1536 matrices (a 6-layer, width-384 model's hidden matrices):
torch.optim.Muon, whose Newton-Schulz iteration runs in bfloat16, against tinygpt's fp32 one
(`tinygpt.train.muon.Fp32Muon`). On a CPU without bf16 instructions the bf16 matmuls are
emulated; this measures what that costs, and why `optimizer=muon` picks fp32 there.

    .venv/bin/python benchmarks/muon_step.py
"""

from __future__ import annotations

import time

import torch
from bench_common import machine_line

from tinygpt.train.muon import Fp32Muon

SHAPES = [(384, 1536)] * 8


def best_step_seconds(optimizer_class: type[torch.optim.Optimizer], rounds: int = 3) -> float:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape)) for shape in SHAPES]
    for param in params:
        param.grad = torch.randn_like(param)
    optimizer = optimizer_class(params, lr=0.02, momentum=0.95)
    optimizer.step()  # the momentum buffers are made here; not timed
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        optimizer.step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print(machine_line(torch.get_num_threads()))
    torch_muon, fp32_muon = best_step_seconds(torch.optim.Muon), best_step_seconds(Fp32Muon)
    print(
        f"one step, 8 x 384x1536, best of 3: torch.optim.Muon {torch_muon:.2f} s, "
        f"tinygpt Fp32Muon {fp32_muon:.3f} s ({torch_muon / fp32_muon:.0f}x faster)"
    )


if __name__ == "__main__":
    main()
