"""Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/, the optimizer of the
modded-nanogpt speedrun): SGD with Nesterov momentum whose update, a 2-D matrix, is replaced by
the nearest semi-orthogonal matrix, computed with a few Newton-Schulz iterations.

`torch.optim.Muon` runs those iterations in bfloat16. On a CPU without bf16 instructions (the
AVX2-only machines this project also runs on) a bf16 matmul is emulated: one Muon step over
eight 384x1536 matrices took 16.7 s there (torch 2.13, 2 cores, `benchmarks/muon_step.py`),
the same iterations in fp32 0.36 s. So on such a CPU `make_muon` returns `Fp32Muon`, the same
update with the iterations in fp32; on CUDA and on CPUs with native bf16 it returns torch's.
Even in fp32 the iterations cost about 25 * min(rows, cols) FLOPs per weight against 6 per
weight and token for the training step: on baby-shakespeare's shape (width 128, 768 tokens a
step) a step took 108 ms against AdamW's 69 ms (best of 10, same busy machine).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from tinygpt.runtime import cpu_features

# the quintic iteration's coefficients, tuned for the steepest slope at zero (Jordan et al.)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(matrix: Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> Tensor:
    """About U V^T of `matrix` = U S V^T, in fp32: the quintic Newton-Schulz iteration of
    torch.optim.Muon (which runs it in bf16). As there, the result's singular values land in
    roughly (0.5, 1.5), not exactly 1, which does not hurt training (Jordan et al.)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.float()
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide form: the Gram matrix x x^T is then the smaller one
        x = x.T
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm: singular values <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Fp32Muon(torch.optim.Muon):
    """torch.optim.Muon with its Newton-Schulz iterations in fp32 (see the module docstring).
    The same hyperparameters, update rule and state (`momentum_buffer`), so a checkpoint moves
    between the two."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ValueError("Fp32Muon implements adjust_lr_fn='original' only")
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: Tensor, group: dict[str, Any]) -> None:
        """torch's `_single_tensor_muon` for one matrix, orthogonalised in fp32."""
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param.grad)
        buf, momentum = state["momentum_buffer"], group["momentum"]
        buf.lerp_(param.grad, 1 - momentum)
        update = param.grad.lerp(buf, momentum) if group["nesterov"] else buf
        update = orthogonalize(update, group["ns_steps"], group["eps"]).to(param.dtype)
        rows, cols = param.shape  # Keller Jordan's scale: the same update RMS for tall matrices
        lr = group["lr"]
        param.mul_(1 - lr * group["weight_decay"])
        param.add_(update, alpha=-lr * math.sqrt(max(1.0, rows / cols)))


def make_muon(
    params: Iterable[Tensor], lr: float, momentum: float, weight_decay: float, device_type: str
) -> torch.optim.Muon:
    """torch's Muon where bf16 matmuls are native (CUDA, CPUs with avx512_bf16 or AMX), the
    fp32 one elsewhere (AVX2-only CPUs, MPS)."""
    native = device_type == "cuda" or (device_type == "cpu" and cpu_features().native_bf16)
    kind = torch.optim.Muon if native else Fp32Muon
    return kind(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
