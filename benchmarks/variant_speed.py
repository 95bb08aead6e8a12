"""What each architecture variant costs on this machine: time, MFU, memory, KV cache.

For the four TinyStories variant presets (baseline, GQA, hybrid, modern) at block 256, and for
the dialog model's output layer with a full and an adaptive softmax over 32k tokens:

- time per token of a forward + backward pass of the whole model (`GPT.loss`, what training
  runs), and of one block alone (the issue's target: a hybrid block at most 1.3x a baseline
  block at block size 256);
- MFU against a matmul peak measured in the same run;
- activation memory per token: the bytes autograd saves for backward, counted with
  `saved_tensors_hooks` (each storage once), which is what grows with batch x context;
- KV cache per token at inference: the bytes of the cache `generate` preallocates (keys and
  values of every layer; the hybrid adds its local key features, local_dim per key/value head).

Variants are timed in interleaved rounds (A, B, C, A, B, C, ...), so a neighbour that slows the
machine for a while slows every variant alike; the median of the rounds is reported, and steps
whose process CPU time fell below 75% of threads x wall time are counted as contended.

    .venv/bin/python benchmarks/variant_speed.py                    # ~5 min on 2 cores
    .venv/bin/python benchmarks/variant_speed.py --rounds 3 --variants baseline,hybrid
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from autograd_memory import saved_for_backward
from bench_common import (
    cpu_line,
    emulated_bf16_reason,
    machine_line,
    matmul_peak_by_size,
    split_choices,
)

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT, Block
from tinygpt.presets import (
    baseline_tinystories,
    dialog_chatbot,
    gqa_tinystories,
    hybrid_tinystories,
    modern_tinystories,
)
from tinygpt.runtime import DTYPES
from tinygpt.train.cpu_speedups import apply_cpu_speedups, keep_freed_memory_in_process

CHAR_VOCAB = 74  # the character vocabulary of the TinyStories slice in shared/data
DIALOG_VOCAB = 32_000


def _dialog(output: str) -> ModelConfig:
    model = dialog_chatbot().model
    return dataclasses.replace(
        model, vocab_size=DIALOG_VOCAB, output=output, tie_weights=output == "softmax"
    )


VARIANTS: dict[str, Callable[[], ModelConfig]] = {
    "baseline": lambda: dataclasses.replace(baseline_tinystories().model, vocab_size=CHAR_VOCAB),
    "gqa": lambda: dataclasses.replace(gqa_tinystories().model, vocab_size=CHAR_VOCAB),
    "hybrid": lambda: dataclasses.replace(hybrid_tinystories().model, vocab_size=CHAR_VOCAB),
    "modern": lambda: dataclasses.replace(modern_tinystories().model, vocab_size=CHAR_VOCAB),
    "dialog-softmax-32k": lambda: _dialog("softmax"),
    "dialog-adaptive-32k": lambda: _dialog("adaptive"),
}


@dataclass
class Measured:
    name: str
    config: ModelConfig
    batch: int
    params: int
    flops_per_token: float
    model_s: list[float] = dataclasses.field(default_factory=list)
    block_s: list[float] = dataclasses.field(default_factory=list)
    contended: int = 0
    activation_bytes_per_token: float = 0.0
    kv_bytes_per_token: float = 0.0


class Subject:
    """One variant: the model, one of its blocks, and fixed inputs for both."""

    def __init__(self, name: str, config: ModelConfig, batch: int, autocast_dtype: torch.dtype):
        torch.manual_seed(0)
        self.model = GPT(config).train()
        self.block = Block(config).train()
        apply_cpu_speedups(self.model)  # as the trainer builds its model on a CPU
        apply_cpu_speedups(self.block)
        self.idx = torch.randint(0, config.vocab_size, (batch, config.block_size))
        self.hidden = torch.randn(batch, config.block_size, config.n_embd)
        self.autocast_dtype = autocast_dtype
        self.tokens = batch * config.block_size
        self.result = Measured(
            name, config, batch, self.model.num_params(), self.model.flops_per_token()
        )

    def _autocast(self) -> torch.autocast:
        enabled = self.autocast_dtype != torch.float32
        return torch.autocast("cpu", dtype=self.autocast_dtype, enabled=enabled)

    def model_step(self) -> None:
        with self._autocast():
            loss = self.model.loss(self.idx, self.idx)
        loss.backward()
        self.model.zero_grad(set_to_none=True)

    def block_step(self) -> None:
        with self._autocast():
            out = self.block(self.hidden)
        out.float().square().mean().backward()
        self.block.zero_grad(set_to_none=True)


def timed(step: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def activation_bytes(subject: Subject) -> int:
    """Bytes autograd keeps for backward in one training forward (autograd_memory.py)."""
    with saved_for_backward(subject.model) as saved, subject._autocast():
        loss = subject.model.loss(subject.idx, subject.idx)
    loss.backward()
    subject.model.zero_grad(set_to_none=True)
    return saved.total


def kv_cache_bytes(subject: Subject) -> int:
    """Bytes of the KV cache generation allocates for one sequence of block_size tokens (keys,
    values, and the hybrid's local key features), as `tinygpt.model.kv_cache` preallocates it."""
    return subject.model.new_cache(1).nbytes()


def run(names: list[str], batch: int, rounds: int, warmup: int, dtype: str) -> list[Measured]:
    autocast_dtype = DTYPES[dtype]
    subjects = [Subject(name, VARIANTS[name](), batch, autocast_dtype) for name in names]
    for subject in subjects:
        subject.result.activation_bytes_per_token = activation_bytes(subject) / subject.tokens
        block_size = subject.idx.size(1)
        subject.result.kv_bytes_per_token = kv_cache_bytes(subject) / block_size
    threads = torch.get_num_threads()
    for round_index in range(warmup + rounds):
        for subject in subjects:
            wall, cpu = timed(subject.model_step)
            block_wall, _ = timed(subject.block_step)
            if round_index < warmup:
                continue
            subject.result.model_s.append(wall)
            subject.result.block_s.append(block_wall)
            subject.result.contended += cpu < 0.75 * threads * wall
    return [s.result for s in subjects]


def report(results: list[Measured], peak: float, dtype: str) -> str:
    by_name = {r.name: r for r in results}
    base = by_name.get("baseline")
    lines = [
        f"| variant | params | MFLOP/token | ms/step (batch x {results[0].config.block_size}) "
        "| tokens/s | MFU | time/token vs baseline | block time vs baseline block "
        "| activations KB/token | KV cache bytes/token | contended |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        step = statistics.median(r.model_s)
        tokens = r.batch * r.config.block_size
        per_token = step / tokens
        block = statistics.median(r.block_s) / tokens
        versus = "" if base is None else f"{per_token / _per_token(base):.2f}x"
        block_versus = "" if base is None else f"{block / _block_per_token(base):.2f}x"
        if r.config.block_size != (base.config.block_size if base else 0):
            versus = block_versus = "n/a"
        lines.append(
            f"| {r.name} | {r.params / 1e6:.2f}M | {r.flops_per_token / 1e6:.1f} | "
            f"{1000 * step:.0f} | {tokens / step:,.0f} | "
            f"{r.flops_per_token * tokens / step / peak:.0%} | {versus} | {block_versus} | "
            f"{r.activation_bytes_per_token / 1024:.1f} | {r.kv_bytes_per_token:,.0f} | "
            f"{r.contended}/{len(r.model_s)} |"
        )
    lines.append(
        f"\n{dtype}, {torch.get_num_threads()} threads, {cpu_line()}; matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s measured in this run; medians of interleaved rounds."
    )
    return "\n".join(lines)


def _per_token(r: Measured) -> float:
    return statistics.median(r.model_s) / (r.batch * r.config.block_size)


def _block_per_token(r: Measured) -> float:
    return statistics.median(r.block_s) / (r.batch * r.config.block_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    names = split_choices(parser, "--variants", args.variants, list(VARIANTS))
    print(machine_line())
    if args.dtype == "bfloat16" and (reason := emulated_bf16_reason()):
        print(f"bfloat16 here measures emulation: {reason}; expect hours, not minutes")
    keep_freed_memory_in_process()
    peak_before = max(matmul_peak_by_size("cpu", DTYPES[args.dtype]).values())
    results = run(names, args.batch, args.rounds, args.warmup, args.dtype)
    peak = max(peak_before, *matmul_peak_by_size("cpu", DTYPES[args.dtype]).values())
    print(report(results, peak, args.dtype))
    if args.json:
        raw = [{**dataclasses.asdict(r), "config": dataclasses.asdict(r.config)} for r in results]
        args.json.write_text(json.dumps({"peak_flops": peak, "results": raw}, indent=1))


if __name__ == "__main__":
    main()
