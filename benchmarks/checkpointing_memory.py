"""What gradient checkpointing saves and costs: activation memory and steps/s, with and without.

For the baseline and hybrid TinyStories models (4 layers x 192, 6 heads) at block size 1024, one
training forward + backward (`GPT.loss`, dropout on as in the presets, the model sped up as the
trainer does on a CPU: `apply_cpu_speedups`) with gradient checkpointing (`checkpoint_blocks`)
off and on:

- kept for backward: the bytes autograd holds between forward and backward, counted with
  `saved_tensors_hooks` (each storage once, parameters excluded), plus, with checkpointing, the
  block inputs that `torch.utils.checkpoint` keeps itself to rerun each block; the peak of
  backward adds one block's activations, recomputed, on top of that;
- peak RSS increase: in a fresh process per case, the rise of the resident set's high-water mark
  (`VmHWM`, reset through `/proc/self/clear_refs` after a small warm-up step) over the resident
  set before the step: what the step really asked of the machine, recomputation included;
- ms/step and steps/s, timed in interleaved rounds (off, on, off, on, ...) so a neighbour that
  slows the machine slows both; medians, with steps whose CPU time fell below 75% of threads x
  wall time counted as contended.

    .venv/bin/python benchmarks/checkpointing_memory.py                  # ~3-5 min on 2 cores
    .venv/bin/python benchmarks/checkpointing_memory.py --variants baseline --rounds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from autograd_memory import saved_for_backward
from bench_common import cpu_line, machine_line, split_choices
from torch import Tensor

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.presets import baseline_tinystories, hybrid_tinystories
from tinygpt.train.activation_checkpointing import RecomputedForward, checkpoint_blocks
from tinygpt.train.cpu_speedups import apply_cpu_speedups

CHAR_VOCAB = 74  # the character vocabulary of the TinyStories slice in shared/data
VARIANTS: dict[str, Callable[[], ModelConfig]] = {
    "baseline": lambda: baseline_tinystories().model,
    "hybrid": lambda: hybrid_tinystories().model,
}


def model_config(variant: str, block_size: int) -> ModelConfig:
    return dataclasses.replace(VARIANTS[variant](), vocab_size=CHAR_VOCAB, block_size=block_size)


def build(variant: str, block_size: int, batch: int, use_checkpointing: bool) -> tuple[GPT, Tensor]:
    torch.manual_seed(0)
    model = GPT(model_config(variant, block_size)).train()
    apply_cpu_speedups(model)
    if use_checkpointing:
        checkpoint_blocks(model)
    idx = torch.randint(0, CHAR_VOCAB, (batch, block_size))
    return model, idx


def step(model: GPT, idx: Tensor) -> None:
    model.loss(idx, idx).backward()
    model.zero_grad(set_to_none=True)


def kept_for_backward(model: GPT, idx: Tensor) -> int:
    """Bytes held from the end of forward to backward, each storage counted once. Inside a
    checkpointed block the hooks see nothing (the block saves nothing); its input, which
    checkpoint keeps to rerun the block, is counted by a pre-hook instead."""
    with saved_for_backward(model) as saved:
        handles = [
            block.register_forward_pre_hook(lambda module, args: saved.add(args[0]))
            for block in model.blocks
            if isinstance(block.forward, RecomputedForward)
        ]
        loss = model.loss(idx, idx)
    for handle in handles:
        handle.remove()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return saved.total


# ----------------------------------------------------------------------------------------------
# Peak memory, in a fresh process per case


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def measure_child(variant: str, block_size: int, batch: int, use_checkpointing: bool) -> dict:
    """Run in the child: the peak RSS rise of one full-size step, then the bytes kept."""
    model, idx = build(variant, block_size, batch, use_checkpointing)
    step(model, idx[:1, :64])  # thread pools, lazy initialisation: not the step's memory
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    step(model, idx)
    peak = _status_kib("VmHWM")
    return {"rss_rise": (peak - before) * 1024, "kept": kept_for_backward(model, idx)}


def measure_in_child(variant: str, block_size: int, batch: int, use_checkpointing: bool) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--block-size", str(block_size)]
    command += ["--batch", str(batch), "--checkpointing", str(int(use_checkpointing))]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------------------------
# Time, in this process


@dataclass
class Case:
    variant: str
    use_checkpointing: bool
    kept: int = 0
    rss_rise: int = 0
    step_s: list[float] = field(default_factory=list)
    contended: int = 0


def time_cases(cases: list[Case], block_size: int, batch: int, rounds: int, warmup: int) -> None:
    subjects = [build(c.variant, block_size, batch, c.use_checkpointing) for c in cases]
    threads = torch.get_num_threads()
    for round_index in range(warmup + rounds):
        for case, (model, idx) in zip(cases, subjects, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            step(model, idx)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_index >= warmup:
                case.step_s.append(wall)
                case.contended += cpu < 0.75 * threads * wall


def report(cases: list[Case], block_size: int, batch: int) -> str:
    lines = [
        f"| model | checkpointing | kept for backward (MB) | peak RSS rise (MB) "
        f"| ms/step (fwd+bwd, {batch} x {block_size}) | steps/s | memory vs off | time vs off "
        "| contended |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    off = {c.variant: c for c in cases if not c.use_checkpointing}
    for c in cases:
        step_s = statistics.median(c.step_s)
        base = off.get(c.variant)
        if c.use_checkpointing and base is not None:
            memory = (
                f"{base.kept / c.kept:.1f}x less kept, {base.rss_rise / c.rss_rise:.1f}x less peak"
            )
            slower = f"{step_s / statistics.median(base.step_s):.2f}x"
        else:
            memory, slower = "", ""
        lines.append(
            f"| {c.variant} | {'on' if c.use_checkpointing else 'off'} | {c.kept / 2**20:,.0f} | "
            f"{c.rss_rise / 2**20:,.0f} | {1000 * step_s:,.0f} | {1 / step_s:.2f} | {memory} | "
            f"{slower} | {c.contended}/{len(c.step_s)} |"
        )
    lines.append(
        f"\nfloat32, dropout 0.1, {torch.get_num_threads()} threads, {cpu_line()}; medians of "
        "interleaved rounds; peak RSS in a fresh process per case."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure_child(args.child, args.block_size, args.batch, bool(args.checkpointing))
        print(json.dumps(result))
        return
    names = split_choices(parser, "--variants", args.variants, list(VARIANTS))
    print(machine_line(), flush=True)
    cases = [Case(name, use) for name in names for use in (False, True)]
    for case in cases:
        measured = measure_in_child(
            case.variant, args.block_size, args.batch, case.use_checkpointing
        )
        case.kept, case.rss_rise = measured["kept"], measured["rss_rise"]
    time_cases(cases, args.block_size, args.batch, args.rounds, args.warmup)
    print(report(cases, args.block_size, args.batch))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(c) for c in cases], indent=1))


if __name__ == "__main__":
    main()
