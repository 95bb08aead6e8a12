"""Training throughput of tinygpt on this machine, now: ms/iter, tokens/s and MFU.

Every trainer is built through the real code path (`start_run` into a temporary run directory)
and `Trainer.train_step` is timed one step at a time, the loss forced with `.item()`, so the
figures are what `tinygpt train` gets minus evaluation and checkpoints.

On a shared CPU a neighbour can take one of our cores for seconds at a time; a median of wall
times alone then mixes two machines. Each step therefore also records the process CPU time: with
N threads busy, CPU/wall is close to N, and a step well below it ran on fewer cores than asked.
Those steps are counted and left out of a second median.

MFU's denominator is a matmul peak measured in this process (several sizes, best of several
runs, before and after the training runs), not a datasheet figure: what a 2-core slice of a
server CPU delivers depends on its vector units and on the neighbours.

    .venv/bin/python benchmarks/train_speed.py                        # everything (~10-15 min)
    .venv/bin/python benchmarks/train_speed.py --configs baby-shakespeare --modes eager
    .venv/bin/python benchmarks/train_speed.py --full-run --configs baby-shakespeare
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_common import (
    cpu_line,
    cpu_model,
    emulated_bf16_reason,
    machine_line,
    matmul_peak_by_size,
    quiet_logging,
    split_choices,
)
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from train_speed_report import (
    NANOGPT_MACHINE,
    NANOGPT_REFERENCE,
    Case,
    CaseRun,
    format_details,
    format_full_run,
    format_peaks,
    format_table,
    summarize,
)

from tinygpt.config import RunConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.presets import baby_shakespeare
from tinygpt.run.metrics import read_metrics
from tinygpt.runtime import DTYPES, describe_cpu, measure_matmul_peak
from tinygpt.train.loop import Trainer
from tinygpt.train.start import start_run

# nanoGPT's default config/train_shakespeare_char.py: the size its README trains on a GPU.
NANOGPT_6L_OVERRIDES: dict[str, Any] = {
    "model.n_layer": 6,
    "model.n_head": 6,
    "model.n_embd": 384,
    "model.block_size": 256,
    "model.dropout": 0.2,
    "model.bias": False,
    "train.batch_size": 64,
    "train.max_iters": 5000,
    "train.lr_decay_iters": 5000,
}


def nanogpt_6l() -> RunConfig:
    """The baby preset reshaped to nanoGPT's 6x384 shakespeare-char model (10.7M parameters)."""
    return dataclasses.replace(
        apply_overrides(baby_shakespeare(), NANOGPT_6L_OVERRIDES), preset="nanogpt-6L"
    )


CONFIGS: dict[str, Callable[[], RunConfig]] = {
    "baby-shakespeare": baby_shakespeare,
    "nanogpt-6L": nanogpt_6l,
}
# (timed iterations, warm-up iterations): 6L takes 5-11 s a step on 2 cores.
DEFAULT_ITERS: dict[str, tuple[int, int]] = {"baby-shakespeare": (300, 20), "nanogpt-6L": (6, 1)}
# CPU/wall of an uncontended step, as a fraction of the threads, less a margin. Baby keeps both
# threads busy (1.95-2.05 of 2 measured). 6L reaches only 1.72-1.77 alone: its dropout masks
# (bernoulli_) run on one thread and page faults of 100 MB attention buffers stall both.
MIN_CPU_RATIO: dict[str, float] = {"baby-shakespeare": 0.9, "nanogpt-6L": 0.75}
PROBE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# ----------------------------------------------------------------------------------------------
# Peak


def measure_peak(device_type: str, dtype: torch.dtype) -> dict[str, float]:
    by_size = matmul_peak_by_size(device_type, dtype)
    return {str(size): flops for size, flops in by_size.items()}


# ----------------------------------------------------------------------------------------------
# Running one case


def build_config(case: Case, threads: int, device: str) -> RunConfig:
    overrides = {
        "train.dtype": case.dtype,
        "train.compile": case.mode == "compiled",
        "train.threads": threads,
        "train.device": device,
    }
    return apply_overrides(CONFIGS[case.config](), overrides)


def run_case(case: Case, iters: int, warmup: int, threads: int, device: str) -> CaseRun:
    """Build the trainer as `tinygpt train` does, then time `iters` steps after `warmup`."""
    config = build_config(case, threads, device)
    # Dynamo caches compiled code per Python function, across trainers: without a reset, each
    # case would be a recompile of the last one's GPT.forward and count towards its limit.
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory(prefix="tinygpt-bench-") as tmp:
        trainer = start_run(config, Path(tmp) / "run")
        probe_code, probe = attach_dtype_probe(trainer.model)
        start = time.perf_counter()
        trainer.train_step().item()
        first_step_s = time.perf_counter() - start
        linear_dtype = check_dtype(probe_code, trainer.runtime.dtype)
        if case.mode == "eager":
            # Dynamo guards on the hooks: removing it would recompile the model mid-benchmark.
            probe.remove()
        warmup_s = [timed_step(trainer)[0] for _ in range(max(0, warmup - 1))]
        wall, cpu, losses = [], [], []
        before = read_system_cpu()
        for _ in range(iters):
            wall_s, cpu_s, loss = timed_step(trainer)
            wall.append(wall_s)
            cpu.append(cpu_s)
            losses.append(loss)
        after = read_system_cpu()
        busy, steal = after[0] - before[0], after[1] - before[1]
        probe.remove()
        return CaseRun(
            case=case,
            tokens_per_step=trainer.tokens_per_step,
            flops_per_token=trainer.flops_per_token,
            params=trainer.model.num_params(),
            library_peak=trainer.peak_flops,
            linear_dtype=linear_dtype,
            first_step_s=first_step_s,
            warmup_s=warmup_s,
            wall_s=wall,
            cpu_s=cpu,
            losses=losses,
            others_cores=(busy - sum(cpu)) / sum(wall),
            steal_cores=steal / sum(wall),
        )


def timed_step(trainer: Trainer) -> tuple[float, float, float]:
    """(wall s, process CPU s, loss) of one optimizer step; `.item()` waits for the step."""
    wall, cpu = time.perf_counter(), time.process_time()
    loss = trainer.train_step().item()
    return time.perf_counter() - wall, time.process_time() - cpu, loss


def read_system_cpu() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine since boot, from /proc/stat.

    Our CPU/wall ratio only sees neighbours inside this machine that take our cores; a slower
    step with a full ratio points at the hypervisor (steal) or at shared caches and memory.
    """
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan, math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    hertz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hertz, steal / hertz


def attach_dtype_probe(model: nn.Module) -> tuple[Tensor, RemovableHandle]:
    """Hook the first nn.Linear to record, as an index into PROBE_DTYPES, the dtype it computes in.

    Autocast is easy to lose (a context manager around the wrong call, a compiled graph traced
    outside it) and then "bf16" silently trains in fp32: same loss, no speed-up. The record is a
    tensor write, not Python state, because Dynamo guards on Python state a hook touches and
    would recompile the model every step.
    """
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    code = torch.full((1,), -1, dtype=torch.int64)

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        code.fill_(PROBE_DTYPES.index(output.dtype))

    return code, linear.register_forward_hook(record)


def check_dtype(code: Tensor, expected: torch.dtype) -> str:
    if code.item() < 0:
        raise AssertionError("the dtype probe on nn.Linear never ran")
    seen = PROBE_DTYPES[int(code.item())]
    if seen != expected:
        raise AssertionError(f"asked for {expected} but nn.Linear computed in {seen}")
    return str(seen).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------
# Figures


def min_cpu_ratio(args: argparse.Namespace, config: str) -> float:
    if args.min_cpu_ratio is not None:
        return float(args.min_cpu_ratio)
    return MIN_CPU_RATIO[config] * args.threads


# ----------------------------------------------------------------------------------------------
# The full 2000-step run


def full_run(threads: int, device: str) -> dict[str, Any]:
    """Train the baby preset to the end exactly as `tinygpt train` does (evals, checkpoints)."""
    config = apply_overrides(baby_shakespeare(), {"train.threads": threads, "train.device": device})
    with tempfile.TemporaryDirectory(prefix="tinygpt-bench-full-") as tmp:
        trainer = start_run(config, Path(tmp) / "run")
        start = time.perf_counter()
        result = trainer.fit()
        fit_s = time.perf_counter() - start
        evals = [m for m in read_metrics(result.run_dir) if m.get("kind") == "eval"]
        return {
            "steps": result.step,
            "stop_reason": result.stop_reason,
            "fit_s": fit_s,
            "train_s": trainer.progress.train_seconds,
            "best_val_loss": result.best_val_loss,
            "final_val_loss": evals[-1]["val_loss"] if evals else None,
            "evals": evals,
        }


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument(
        "--dtypes",
        help="comma-separated (default: float32,bfloat16; float32 alone on a CPU without bf16 "
        "instructions, where a bf16 step of the 6L model takes many minutes)",
    )
    parser.add_argument("--modes", default="eager,compiled", help="eager, compiled or both")
    parser.add_argument("--iters", type=int, help="timed steps per case (default: per config)")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first, at least 1 (default: per config)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--min-cpu-ratio",
        type=float,
        help="CPU/wall below this marks a step contended (default: 0.9 x threads for baby, "
        "0.75 x threads for 6L)",
    )
    parser.add_argument("--full-run", action="store_true", help="also train baby to 2000 steps")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    args.configs = split_choices(parser, "--configs", args.configs, list(CONFIGS))
    if args.dtypes is not None:
        args.dtypes = split_choices(parser, "--dtypes", args.dtypes, list(DTYPES))
    args.modes = split_choices(parser, "--modes", args.modes, ["eager", "compiled"])
    return args


def default_dtypes(device_type: str) -> list[str]:
    """bf16 where the device computes it natively; on a CPU without bf16 instructions its cases
    are skipped (a 6L step would take over ten minutes), and the output says so."""
    reason = emulated_bf16_reason() if device_type == "cpu" else None
    if reason is None:
        return ["float32", "bfloat16"]
    print(f"bfloat16 cases skipped: {reason}; --dtypes float32,bfloat16 runs them anyway")
    return ["float32"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    torch.set_num_threads(args.threads)
    device_type = torch.device(args.device).type
    print(machine_line(args.threads))
    if args.dtypes is None:
        args.dtypes = default_dtypes(device_type)
    peaks_before = {d: measure_peak(device_type, DTYPES[d]) for d in args.dtypes}
    print(format_peaks("before", peaks_before), flush=True)
    runs = [run_requested_case(args, case) for case in requested_cases(args)]
    peaks_after = {d: measure_peak(device_type, DTYPES[d]) for d in args.dtypes}
    print(format_peaks("after", peaks_after))
    peaks = best_peaks(device_type, peaks_before, peaks_after)
    rows = [
        (run, summarize(run, peaks[run.case.dtype], min_cpu_ratio(args, run.case.config)))
        for run in runs
    ]
    print_report(args, rows)
    full = None
    if args.full_run:
        print("running the full baby-shakespeare run ...", file=sys.stderr, flush=True)
        full = full_run(args.threads, args.device)
        print("\n" + format_full_run(full))
    if args.json is not None:
        write_json(args, peaks_before, peaks_after, rows, full)
    return 0


def requested_cases(args: argparse.Namespace) -> list[Case]:
    return [Case(c, d, m) for c in args.configs for d in args.dtypes for m in args.modes]


def run_requested_case(args: argparse.Namespace, case: Case) -> CaseRun:
    iters, warmup = DEFAULT_ITERS[case.config]
    iters = args.iters if args.iters is not None else iters
    warmup = max(1, args.warmup if args.warmup is not None else warmup)
    print(f"running {case.config} {case.dtype} {case.mode} ...", file=sys.stderr, flush=True)
    return run_case(case, iters, warmup, args.threads, args.device)


def best_peaks(
    device_type: str, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The highest of all measurements, tinygpt's own included: a neighbour only ever lowers a
    measurement, so the highest is the closest to what the machine can do."""
    library = {d: measure_matmul_peak(device_type, DTYPES[d]) for d in before}  # cached
    peaks = {d: max(*before[d].values(), *after[d].values(), library[d]) for d in before}
    print(
        "MFU uses: "
        + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
        + " (the quicker estimate the trainers use: "
        + ", ".join(f"{d} {p / 1e9:.0f}" for d, p in library.items())
        + ")\n"
    )
    return peaks


def print_report(args: argparse.Namespace, rows: list[tuple[CaseRun, dict[str, Any]]]) -> None:
    print(format_table(rows))
    print(f"\nmeasured on {cpu_line()}, {args.threads} threads")
    thresholds = ", ".join(f"{c} {min_cpu_ratio(args, c):.2f}" for c in args.configs)
    print(
        f"\ncontended: a step whose process CPU/wall ratio is below {thresholds} "
        f"(of {args.threads} threads): a neighbour took a core. Best-N: the fastest N "
        "consecutive steps.\n"
    )
    print(format_details(rows))
    print()
    for name in args.configs:
        print(f"nanoGPT {name}: {NANOGPT_REFERENCE[name]} ({NANOGPT_MACHINE})")
    sys.stdout.flush()


def write_json(
    args: argparse.Namespace,
    peaks_before: dict[str, dict[str, float]],
    peaks_after: dict[str, dict[str, float]],
    rows: list[tuple[CaseRun, dict[str, Any]]],
    full: dict[str, Any] | None,
) -> None:
    document = {
        "machine": machine_line(args.threads),
        "cpu_model": cpu_model(),
        "cpu": describe_cpu(),
        "torch": torch.__version__,
        "threads": args.threads,
        "peak_flops_before": peaks_before,
        "peak_flops_after": peaks_after,
        "cases": [{**dataclasses.asdict(run), "figures": figures} for run, figures in rows],
        "full_run": full,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
