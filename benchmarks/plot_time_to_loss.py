"""One plot of val loss against training minutes from several `time_to_loss.py` JSON files:
runs of 60 minutes each take a whole invocation, so recipes measured in separate invocations
are drawn together here. Each recipe is one curve (the mean over its seeds at each
evaluation), labelled with the file it came from; nothing is measured again.

    .venv/bin/python benchmarks/plot_time_to_loss.py benchmarks/results/time_to_loss_60min.json \
        benchmarks/results/time_to_loss_60min_dropout.json --out docs/time_to_loss_60min.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt


def curve(cell: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean training minutes and mean val loss over the seeds, evaluation by evaluation (as
    far as every seed got)."""
    points = list(zip(*(run["evals"] for run in cell["runs"]), strict=False))
    minutes = [statistics.fmean(e["train_seconds"] for e in evals) / 60 for evals in points]
    losses = [statistics.fmean(e["val_loss"] for e in evals) for evals in points]
    return minutes, losses


def plot(documents: dict[Path, dict[str, Any]], out: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    thresholds: set[float] = set()
    for path, document in documents.items():
        thresholds.update(document["thresholds"])
        for cell in document["cells"]:
            seeds = len(cell["runs"])
            seeds_text = f"{seeds} seed" + ("s" if seeds > 1 else "")
            label = f"{cell['recipe']}, {cell['budget_minutes']:g} min ({seeds_text}; {path.name})"
            axis.plot(*curve(cell), marker=".", label=label)
    for threshold in sorted(thresholds):
        axis.axhline(threshold, color="grey", linewidth=0.5, linestyle=":")
    axis.set(xlabel="training minutes (evaluation excluded)", ylabel="val loss (whole split)")
    axis.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below
    figure.tight_layout()
    figure.savefig(out, dpi=120, bbox_inches="tight")  # the legend below the axes included
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("documents", nargs="+", type=Path, help="time_to_loss.json files")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    try:
        documents = {path: json.loads(path.read_text(encoding="utf-8")) for path in args.documents}
    except (OSError, json.JSONDecodeError) as err:
        print(
            f"plot_time_to_loss: error: cannot read a time_to_loss JSON file: {err}",
            file=sys.stderr,
        )
        return 2
    plot(documents, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
