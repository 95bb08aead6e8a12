"""The loss-curve picture of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from tinygpt.errors import CheckpointError


def plot_loss_curve(records: list[dict[str, Any]], out_path: Path, title: str) -> Path:
    """Training loss at every log step (thin), train and validation loss at evaluations."""
    logged = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not logged and not evals:
        raise CheckpointError(f"no metrics to plot for {title}; train the run first")
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    if logged:
        axes.plot(
            [r["step"] for r in logged],
            [r["loss"] for r in logged],
            color="tab:blue",
            alpha=0.35,
            linewidth=1,
            label="train (batch)",
        )
    if evals:
        steps = [r["step"] for r in evals]
        axes.plot(
            steps, [r["train_loss"] for r in evals], "o-", color="tab:blue", label="train (eval)"
        )
        axes.plot(
            steps, [r["val_loss"] for r in evals], "o-", color="tab:orange", label="validation"
        )
        best = min(evals, key=lambda r: r["val_loss"])
        axes.annotate(
            f"best val {best['val_loss']:.3f}",
            (best["step"], best["val_loss"]),
            textcoords="offset points",
            xytext=(0, 10),
            ha="center",
        )
    axes.set(xlabel="step", ylabel="cross-entropy loss (nats/token)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    plt.close(figure)
    return out_path
