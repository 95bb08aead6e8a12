"""What the trainer changes when it trains on a CPU, and why.

The model is plain PyTorch (`nn.Dropout`, fused SDPA); on a CPU two of its parts are slow in
training, and the C library's allocator makes every step slower still. The trainer applies the
remedies from outside, so the model code stays what it says:

- Dropout masks. PyTorch's CPU dropout draws one Bernoulli sample per element on a single
  thread: for the attention weights of a 6-layer, block-256, batch-64 model (25M elements a
  layer) that took a quarter of every training step. `fast_dropout` cuts 64-bit random words
  into 16-bit lanes and compares them against a threshold: ten times faster, still uniform, and
  drawn from torch's global generator, so seeds and exact resume work as before. The drop
  probability is rounded to a multiple of 1/65536 (0.2 becomes 0.199997).
- Attention dropout. SDPA's fused CPU kernels refuse dropout, and its fallback draws the dropout
  mask one Bernoulli sample at a time; written out (`causal_attention_weights`), the mask comes
  from `fast_dropout`. Tested equal to SDPA when p = 0.
- Freed memory (`keep_freed_memory_in_process`): glibc's allocator hands large freed blocks
  back to the kernel, so the same activation buffers are page-faulted in afresh every step.

`apply_cpu_speedups` swaps the first two into a model: every `nn.Dropout` of the model becomes a
`FastMaskDropout`, and each attention module's `attend` is wrapped to use the written-out
attention where it trains with dropout. On GPUs the native kernels are already fast: the
swapped modules fall back to them there, and the trainer applies none of this off the CPU.
"""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinygpt.eval.metrics import causal_attention_weights
from tinygpt.model.attention import CausalSelfAttention

_LANES = 65536  # 16-bit random lanes


def apply_cpu_speedups(model: nn.Module) -> None:
    """Make `model` (a GPT or any of its parts) train faster on a CPU, in place, drawing the
    same random numbers: the fast dropout mask in every dropout of the model, and the
    written-out attention with that mask. Adapters injected into the model (LoRA's own
    dropout) are left as they are."""
    for parent in list(model.modules()):
        if not type(parent).__module__.startswith("tinygpt."):
            continue  # not the model's own: a LoRA layer keeps torch's dropout
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastMaskDropout(child.p))
        if isinstance(parent, CausalSelfAttention) and "attend" not in vars(parent):
            parent.attend = AttendWithFastDropout(parent)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to 1/65536)."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # all 64 bits random (plain random_() leaves the sign bit 0)
    lanes = words.view(torch.int16)[:count].view(shape)  # uniform over [-32768, 32767]
    threshold = round(p * _LANES) - _LANES // 2
    return lanes >= threshold


def fast_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p);
    on a CPU with `keep_mask`, elsewhere with torch's own kernel."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class _MaskedScale(torch.autograd.Function):
    """x * mask * scale, saving only the 1-byte mask for backward (as native dropout does)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, keep: Tensor, scale: float):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.masked_fill(~keep, 0).mul_(scale)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return grad.masked_fill(~keep, 0).mul_(ctx.scale), None, None


class FastMaskDropout(nn.Dropout):
    """nn.Dropout drawing its mask with `keep_mask` on a CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_dropout(x, self.p, self.training)


def causal_attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, p: float) -> Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) with dropout, then times v; q (B, H, T, D),
    k and v (B, K, T, D) with K dividing H (each key/value head serves H / K consecutive query
    heads, as in SDPA)."""
    H, K = q.size(1), k.size(1)
    weights = causal_attention_weights(q, k)  # (B, H, T, T)
    if K != H:
        v = v.repeat_interleave(H // K, dim=1)  # (B, H, T, D)
    return fast_dropout(weights, p, training=True).to(v.dtype) @ v  # (B, H, T, D)


class AttendWithFastDropout:
    """An attention module's `attend`, written out with the fast mask where SDPA would draw
    its dropout mask slowly (training on a CPU with p > 0), SDPA everywhere else."""

    def __init__(self, attention: CausalSelfAttention) -> None:
        self.attention = attention
        self.sdpa = attention.attend  # the class's own method, bound

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        attention = self.attention
        if attention.training and attention.dropout_p > 0 and q.device.type == "cpu":
            return causal_attention_with_dropout(q, k, v, attention.dropout_p)
        return self.sdpa(q, k, v)


@functools.cache
def keep_freed_memory_in_process() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel.

    By default glibc serves every allocation above 128 KiB with its own mmap and unmaps it on
    free, so the same activation buffers (100 MB of attention weights a layer at block 256) are
    page-faulted in afresh every step; on a 2-core CPU that was a third of attention's time.
    jemalloc or tcmalloc (LD_PRELOAD) fix this from outside; mallopt does it from inside.
    Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    # 1 GiB: above any activation of the models we train on CPUs; older glibc caps it at 32 MiB
    accepted = libc.mallopt(m_mmap_threshold, 2**30) or libc.mallopt(m_mmap_threshold, 2**25)
    return bool(accepted and libc.mallopt(m_trim_threshold, 2**31 - 1))
