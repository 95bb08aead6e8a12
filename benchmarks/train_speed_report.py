"""The figures and tables of benchmarks/train_speed.py: what it derives from its raw step times
and how it prints them (kept apart from the measuring)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

WINDOW = 100  # iterations in the "best window" figure

# nanoGPT's train.py, measured for the project on the 2-core AVX-512 (bf16) machine of the
# README: a reference from that kind of CPU only, not from the machine this script runs on
NANOGPT_MACHINE = "measured on 2 AVX-512 cores with bf16, not on this machine"
NANOGPT_REFERENCE = {
    "baby-shakespeare": "38-46 ms/iter, 16-20k tok/s; 2000 iters ~95 s, val loss 1.886",
    "nanogpt-6L": "fp32 11.4 s/iter (1,440 tok/s); bf16 (autocast patched in) 7.6 s/iter",
}


@dataclass(frozen=True)
class Case:
    config: str
    dtype: str
    mode: str  # "eager" or "compiled"


@dataclass
class CaseRun:
    """Raw measurements of one case; figures are derived in `summarize`."""

    case: Case
    tokens_per_step: int
    flops_per_token: float
    params: int
    library_peak: float  # Trainer.peak_flops, what `tinygpt train` divides by
    linear_dtype: str  # output dtype of one nn.Linear during the first step
    first_step_s: float  # with compile: compilation plus one step
    warmup_s: list[float]
    wall_s: list[float]
    cpu_s: list[float]
    losses: list[float]
    others_cores: float  # CPU the rest of this machine used meanwhile, in cores
    steal_cores: float  # CPU the hypervisor gave to other machines meanwhile, in cores


def summarize(run: CaseRun, peak: float, min_ratio: float) -> dict[str, Any]:
    """Median and best-window throughput, MFU against `peak`, and the contention count."""
    wall, cpu = run.wall_s, run.cpu_s
    ratios = [c / w for c, w in zip(cpu, wall, strict=True)]
    uncontended = [w for w, r in zip(wall, ratios, strict=True) if r >= min_ratio]
    median = statistics.median(wall)
    window = min(WINDOW, len(wall))
    best_start = best_window_start(wall, window)
    best_wall = sum(wall[best_start : best_start + window])
    best_ratio = sum(cpu[best_start : best_start + window]) / best_wall
    tokens_per_second = run.tokens_per_step / median
    return {
        "iters": len(wall),
        "median_ms": 1000 * median,
        "tokens_per_second": tokens_per_second,
        "mfu": run.flops_per_token * tokens_per_second / peak,
        "window": window,
        "best_window_ms": 1000 * best_wall / window,
        "best_window_tokens_per_second": run.tokens_per_step * window / best_wall,
        "best_window_cpu_ratio": best_ratio,
        "best_window_contended": best_ratio < min_ratio,
        "cpu_ratio": sum(cpu) / sum(wall),
        "contended_iters": len(wall) - len(uncontended),
        "uncontended_median_ms": 1000 * statistics.median(uncontended) if uncontended else None,
        "compile_s": run.first_step_s - median if run.case.mode == "compiled" else None,
        "min_cpu_ratio": min_ratio,
        "peak_flops": peak,
    }


def best_window_start(values: list[float], window: int) -> int:
    """Start of the `window` consecutive values with the smallest sum (a sliding sum)."""
    total = sum(values[:window])
    best, best_start = total, 0
    for start in range(1, len(values) - window + 1):
        total += values[start + window - 1] - values[start - 1]
        if total < best:
            best, best_start = total, start
    return best_start


def format_peaks(label: str, peaks: dict[str, dict[str, float]]) -> str:
    parts = [
        f"{dtype} {max(by_size.values()) / 1e9:.0f} GFLOP/s ("
        + ", ".join(f"{size}: {flops / 1e9:.0f}" for size, flops in by_size.items())
        + ")"
        for dtype, by_size in peaks.items()
    ]
    return f"matmul peak {label}: " + "; ".join(parts)


def format_table(rows: list[tuple[CaseRun, dict[str, Any]]]) -> str:
    header = (
        "| config | dtype | mode | median ms/iter | tokens/s | MFU | best-N ms/iter | best tok/s "
        "| cpu/wall | contended iters | uncontended median ms |"
    )
    lines = [header, "|" + "---|" * 11]
    for run, fig in rows:
        flag = " (contended)" if fig["best_window_contended"] else ""
        uncontended = fig["uncontended_median_ms"]
        lines.append(
            f"| {run.case.config} | {run.case.dtype} | {run.case.mode} "
            f"| {fig['median_ms']:.1f} | {fig['tokens_per_second']:,.0f} | {fig['mfu']:.1%} "
            f"| {fig['best_window_ms']:.1f} (N={fig['window']}){flag} "
            f"| {fig['best_window_tokens_per_second']:,.0f} | {fig['cpu_ratio']:.2f} "
            f"| {fig['contended_iters']}/{fig['iters']} "
            f"| {'-' if uncontended is None else f'{uncontended:.1f}'} |"
        )
    return "\n".join(lines)


def format_details(rows: list[tuple[CaseRun, dict[str, Any]]]) -> str:
    header = (
        "| config | dtype | mode | params | MFLOP/token | Linear output dtype | first step s "
        "| compile s | warm-up s | last loss | others' cores | steal cores |"
    )
    lines = [header, "|" + "---|" * 12]
    for run, fig in rows:
        compile_s = "-" if fig["compile_s"] is None else f"{fig['compile_s']:.1f}"
        lines.append(
            f"| {run.case.config} | {run.case.dtype} | {run.case.mode} | {run.params / 1e6:.2f}M "
            f"| {run.flops_per_token / 1e6:.1f} | {run.linear_dtype} | {run.first_step_s:.2f} "
            f"| {compile_s} | {sum(run.warmup_s):.2f} | {run.losses[-1]:.3f} "
            f"| {run.others_cores:.2f} | {run.steal_cores:.2f} |"
        )
    return "\n".join(lines)


def format_full_run(run: dict[str, Any]) -> str:
    lines = [
        f"full run, baby-shakespeare: {run['steps']} steps ({run['stop_reason']}), "
        f"fit {run['fit_s']:.1f} s (train steps {run['train_s']:.1f} s, "
        f"{1000 * run['train_s'] / max(1, run['steps']):.1f} ms/iter), "
        f"final val loss {run['final_val_loss']:.4f}, best {run['best_val_loss']:.4f}",
        f"  nanoGPT: {NANOGPT_REFERENCE['baby-shakespeare']} ({NANOGPT_MACHINE})",
        "| step | train loss | val loss | train s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {e['step']} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | {e['train_seconds']:.1f} |"
        for e in run["evals"]
    ]
    return "\n".join(lines)
