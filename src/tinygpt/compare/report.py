"""A comparison's results and its reports: OUT/compare.md, OUT/compare.json, OUT/val_curves.png."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from tinygpt.atomic_files import write_text_atomic
from tinygpt.compare.budget import Budget
from tinygpt.eval.metrics import bits_per_unit, perplexity

TABLE_COLUMNS = [
    "config", "params", "MFLOP/token", "steps", "tokens/s", "val loss", "Δ vs baseline", "ppl",
    "bits/char", "train s",
]  # fmt: skip
REPORT_FILES = ("compare.md", "compare.json", "val_curves.png")


@dataclass(frozen=True)
class SeedResult:
    seed: int
    run_dir: str
    final_val_loss: float  # over the whole validation split, with the final weights
    sampled_val_loss: float  # the training loop's last evaluation (a sample of windows)
    tokens_seen: int
    train_seconds: float  # time in training steps, evaluation excluded
    tokens_per_second: float  # median over the run's log lines
    curve: list[tuple[int, float]]  # (tokens seen, val loss) at every evaluation


@dataclass(frozen=True)
class ConfigResult:
    name: str
    max_iters: int
    tokens_per_step: int
    params: int
    flops_per_token: float
    val_tokens: int  # of the prepared validation split ...
    val_chars: int | None  # ... and its characters and bytes (None: data prepared before they
    val_bytes: int | None  # were recorded)
    seeds: list[SeedResult]

    @property
    def val_loss_mean(self) -> float:
        return statistics.fmean(s.final_val_loss for s in self.seeds)

    @property
    def val_loss_std(self) -> float | None:
        """Sample standard deviation over seeds; None with one seed."""
        losses = [s.final_val_loss for s in self.seeds]
        return statistics.stdev(losses) if len(losses) > 1 else None

    @property
    def perplexity(self) -> float:
        return perplexity(self.val_loss_mean)

    @property
    def bits_per_char(self) -> float | None:
        return bits_per_unit(self.val_loss_mean, self.val_tokens, self.val_chars)

    @property
    def bits_per_byte(self) -> float | None:
        return bits_per_unit(self.val_loss_mean, self.val_tokens, self.val_bytes)

    @property
    def tokens_per_second(self) -> float:
        return statistics.fmean(s.tokens_per_second for s in self.seeds)

    @property
    def train_seconds(self) -> float:
        return statistics.fmean(s.train_seconds for s in self.seeds)

    def to_dict(self) -> dict[str, Any]:
        summary = {
            name: getattr(self, name)
            for name in (
                "val_loss_mean", "val_loss_std", "perplexity", "bits_per_char", "bits_per_byte",
                "tokens_per_second", "train_seconds",
            )
        }  # fmt: skip
        return {**dataclasses.asdict(self), **summary}


@dataclass(frozen=True)
class Comparison:
    """The answer of one `tinygpt compare`: the first config is the baseline."""

    command: str
    budget: Budget
    seeds: int
    results: list[ConfigResult]

    def to_dict(self) -> dict[str, Any]:
        baseline = self.results[0]
        return {
            "command": self.command,
            "budget": dataclasses.asdict(self.budget),
            "seeds": self.seeds,
            "baseline": baseline.name,
            "configs": [
                {
                    **result.to_dict(),
                    "delta_val_loss": result.val_loss_mean - baseline.val_loss_mean,
                    "verdict": noise_verdict(baseline, result),
                }
                for result in self.results
            ],
        }

    def to_markdown(self) -> str:
        rows = [_markdown_row(TABLE_COLUMNS), "|" + "---|" * len(TABLE_COLUMNS)]
        baseline = self.results[0]
        for result in self.results:
            delta = result.val_loss_mean - baseline.val_loss_mean
            verdict = noise_verdict(baseline, result)
            cells = [
                result.name,
                f"{result.params:,}",
                f"{result.flops_per_token / 1e6:.2f}",
                f"{result.max_iters:,}",
                f"{result.tokens_per_second:,.0f}",
                _mean_and_std(result.val_loss_mean, result.val_loss_std),
                "baseline" if result is baseline else f"{delta:+.4f} ({verdict})",
                f"{result.perplexity:.3f}",
                "n/a" if result.bits_per_char is None else f"{result.bits_per_char:.4f}",
                f"{result.train_seconds:.1f}",
            ]
            rows.append(_markdown_row(cells))
        return "\n".join(rows)

    def summary_line(self) -> str:
        return (
            f"`{self.command}`: {self.budget.describe()}, {self.seeds} seed(s); val loss is the "
            "final weights' mean loss over the whole validation split, mean ± sample std over "
            "seeds; bits/char = loss * (val tokens / val characters) / ln 2"
        )


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _mean_and_std(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def noise_verdict(baseline: ConfigResult, result: ConfigResult) -> str:
    """Better or worse when the mean losses differ by more than the combined standard
    deviation sqrt(s_a² + s_b²), else within noise: a one-sigma rule of thumb, not a test."""
    if result is baseline:
        return "baseline"
    if baseline.val_loss_std is None or result.val_loss_std is None:
        return "one seed, no error bar"
    delta = result.val_loss_mean - baseline.val_loss_mean
    if abs(delta) <= math.hypot(baseline.val_loss_std, result.val_loss_std):
        return "within noise"
    return "better" if delta < 0 else "worse"


def write_reports(comparison: Comparison, out: Path) -> None:
    """OUT/compare.md, OUT/compare.json and OUT/val_curves.png."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = f"{comparison.to_markdown()}\n\n{comparison.summary_line()}\n"
    write_text_atomic(out / "compare.md", markdown)
    write_text_atomic(out / "compare.json", json.dumps(comparison.to_dict(), indent=1) + "\n")
    plot_val_curves(comparison.results, out / "val_curves.png")


def plot_val_curves(results: list[ConfigResult], out_path: Path) -> Path:
    """Validation loss against tokens seen: the mean over seeds, and a band from the lowest
    to the highest seed."""
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for result in results:
        length = min(len(s.curve) for s in result.seeds)  # equal unless a run was cut short
        tokens = [result.seeds[0].curve[i][0] for i in range(length)]
        losses = [[s.curve[i][1] for s in result.seeds] for i in range(length)]
        (line,) = axes.plot(tokens, [statistics.fmean(v) for v in losses], label=result.name)
        axes.fill_between(
            tokens, [min(v) for v in losses], [max(v) for v in losses], color=line.get_color(),
            alpha=0.2, linewidth=0,
        )  # fmt: skip
    axes.set(xlabel="tokens seen", ylabel="validation loss (nats/token)", title="compare")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out_path)
    plt.close(figure)
    return out_path
