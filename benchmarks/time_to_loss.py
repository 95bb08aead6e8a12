"""What each recipe reaches in a fixed number of minutes of training on this machine.

For every budget (minutes of training steps; evaluation excluded) and seed, each recipe trains
with its whole schedule fitted to the budget, as `tinygpt compare --minutes` does: its step time
is measured first (the median of a few steps), max_iters is the budget over that time, and the
decay ends at the last step. A step time measured in a few seconds is not what a run of minutes
meets (here 47-52 ms measured against 58-62 ms met, so the first figures overran their budgets by
11-30%), so every REFITS_PER_RUN-th of the way the run refits max_iters (and with it the decay)
to the training time left over its mean step time so far: each run ends within a step or two of
its budget on the training clock. A baseline always runs in the same invocation: by default the
baby-shakespeare preset (nanoGPT's CPU recipe); `--baseline` names another, and `--data` trains
every recipe on another source (TinyStories: a folder whose train/ and validation/ hold the
files, so that the validation split is a whole file of its own).

Every evaluation scores the WHOLE validation split (`split_loss`, the measure `compare` reports
as its final val loss), not the training loop's sample of windows. Evaluations run every
`--eval-every` of the budget and at the end; their time is left out of the training clock and
reported apart. The time a run first reached each threshold is the training time at the first
evaluation at or below it: an upper bound, as fine as the evaluation interval. Losses are per
token, so they compare only between recipes of one tokenizer; the table also gives bits per byte
of the validation text (loss x val tokens / val UTF-8 bytes / ln 2), which compares across them.
With `--sample-tokens N`, each evaluation also draws a seeded sample of N tokens from the
recipe's sample prompt (its `sample` settings, fp32 weights), also off the clock, written to
time_to_loss_samples.md: when do the samples start to read as stories?

Each step also records the process CPU time, as train_speed.py does: a step whose CPU/wall ratio
is below `--min-cpu-ratio` ran on fewer cores than asked (a neighbour took one) and is counted
as contended. Recipes run interleaved (budget, then seed, then recipe), so a busy spell of the
machine slows all of them alike.

    .venv/bin/python benchmarks/time_to_loss.py    # 2,5,15,60 min: ~100 min of training a recipe
    .venv/bin/python benchmarks/time_to_loss.py --budgets 2,5 --recipes shakespeare-fast
    .venv/bin/python benchmarks/time_to_loss.py --budgets 0.05 --seeds 1  # a smoke test, ~30 s
    # TinyStories, BPE against characters: bits per byte, samples (README "tinystories-fast")
    .venv/bin/python benchmarks/time_to_loss.py --baseline modern-tinystories \
        --recipes tinystories-fast --data runs/tinystories-local --thresholds '' \
        --budgets 15 --seeds 2 --sample-tokens 150
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import torch
from bench_common import cpu_line, cpu_model, machine_line, quiet_logging, whole_val_loss

from tinygpt.compare.budget import Budget, apply_budget, steps_for_budget
from tinygpt.compare.variants import Variant, load_variants, with_prepared_vocab, with_seed
from tinygpt.config import RunConfig
from tinygpt.data.prepare import PreparedData
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.eval.metrics import bits_per_unit
from tinygpt.generate.engine import GenerationSettings, generate_batch
from tinygpt.run.data import check_data_fits
from tinygpt.runtime import describe_cpu
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer
from tinygpt.train.loop import Trainer
from tinygpt.train.step_time import time_train_steps

BASELINE = "baby-shakespeare"
THRESHOLDS = "1.90,1.80,1.70,1.60,1.50"  # the issue's
# the Targets: 2- and 5-minute figures are the mean of 3 seeds, longer ones one seed
SEEDS_UP_TO_5_MIN, SEEDS_ABOVE = 3, 1
# CPU/wall of an uncontended step, as a fraction of the threads (train_speed.py's for baby)
MIN_CPU_RATIO = 0.9
OFF_BUDGET = 0.02  # a run whose training time missed its budget by more is named
REFITS_PER_RUN = 50  # how often a run refits its max_iters to the training clock
REFIT_UNTIL = 0.95  # no refit in the last 5%: the cool-down's end stays where it was set
OUT_FILES = ("time_to_loss.md", "time_to_loss.json", "time_to_loss.png")
SAMPLES_FILE = "time_to_loss_samples.md"
SAMPLE_SEED = 0  # every evaluation of every run draws from the same seed


# ----------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Evaluation:
    step: int
    train_seconds: float  # training steps' wall time before this evaluation
    val_loss: float  # over every token of the validation split
    eval_seconds: float
    sample: str | None = None  # with --sample-tokens: a seeded continuation of the prompt


@dataclass
class SeedRun:
    seed: int
    max_iters: int  # as refitted to the training clock: the steps the run took
    tokens_per_step: int
    min_cpu_ratio: float
    evals: list[Evaluation] = field(default_factory=list)
    step_wall_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return sum(self.step_wall_s)

    @property
    def eval_seconds(self) -> float:
        return sum(e.eval_seconds for e in self.evals)

    @property
    def final_val_loss(self) -> float:
        return self.evals[-1].val_loss

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step * len(self.step_wall_s) / self.train_seconds

    @property
    def contended_steps(self) -> int:
        pairs = zip(self.step_cpu_s, self.step_wall_s, strict=True)
        return sum(1 for cpu, wall in pairs if cpu / wall < self.min_cpu_ratio)

    def first_reached(self, threshold: float) -> float | None:
        """Training seconds at the first evaluation at or below `threshold` (None: never)."""
        return next((e.train_seconds for e in self.evals if e.val_loss <= threshold), None)


@dataclass
class Cell:
    """One recipe at one budget: its fitted schedule and a run per seed."""

    recipe: str
    budget_minutes: float
    step_seconds: float  # measured before the runs; max_iters = budget / this
    max_iters: int  # planned from step_seconds; each run refits its own to the clock
    eval_interval: int
    val_tokens: int  # tokens and UTF-8 bytes of the validation split: loss to bits per byte
    val_bytes: int | None
    runs: list[SeedRun] = field(default_factory=list)

    def val_loss(self) -> tuple[float, float | None]:
        return mean_and_std([run.final_val_loss for run in self.runs])

    def bits_per_byte(self) -> tuple[float, float | None] | None:
        """Mean and std over seeds of each run's final loss in bits per validation byte."""
        if not self.val_bytes:
            return None
        runs = [bits_per_unit(r.final_val_loss, self.val_tokens, self.val_bytes) for r in self.runs]
        return mean_and_std([bits for bits in runs if bits is not None])


def mean_and_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass(frozen=True)
class Recipe:
    name: str
    config: RunConfig  # vocabulary filled in, before the budget
    prepared: PreparedData
    step_seconds: float


def prepare_recipe(variant: Variant, timed_steps: int) -> Recipe:
    """The variant's config fitted to its data, and its step time: the median of
    `timed_steps` steps, more than `compare`'s 5 because a neighbour's burst of a few seconds
    can slow several steps in a row (seen here: 5 steps of 0.9-1.8 s, then 60-90 ms)."""
    config, prepared = with_prepared_vocab(variant.config)
    check_data_fits(config, prepared)
    print(f"measuring the step time of {variant.name} ...", file=sys.stderr, flush=True)
    seconds = statistics.median(time_train_steps(config, prepared, timed_steps))
    return Recipe(variant.name, config, prepared, seconds)


def plan_cell(recipe: Recipe, minutes: float, eval_every: float) -> tuple[Cell, RunConfig]:
    if minutes * 60 < recipe.step_seconds:  # steps_for_budget's own message names compare's flag
        raise ConfigError(
            f"--budgets {minutes:g} is less than one step of {recipe.name} "
            f"({recipe.step_seconds:.2f} s); give a larger budget"
        )
    steps = steps_for_budget(recipe.config, Budget(minutes=minutes), recipe.step_seconds)
    config = apply_budget(recipe.config, steps)
    interval = max(1, math.ceil(steps * eval_every))
    prepared = recipe.prepared
    cell = Cell(
        recipe.name, minutes, recipe.step_seconds, steps, interval,
        prepared.val_tokens, prepared.val_bytes,
    )  # fmt: skip
    return cell, config


def train_timed(
    config: RunConfig,
    prepared: PreparedData,
    eval_interval: int,
    min_cpu_ratio: float,
    budget_seconds: float,
    sample_tokens: int = 0,
) -> SeedRun:
    """Train `config` step by step on a trainer without a run directory (nothing is written),
    timing each step's wall and process CPU time, and score the whole validation split every
    `eval_interval` steps and at the last, off the training clock. max_iters is refitted to
    `budget_seconds` of training as the run goes (see the module's docstring)."""
    trainer = Trainer(config, None, prepared)
    tokenizer = load_tokenizer(prepared.tokenizer_path) if sample_tokens else None
    run = SeedRun(config.train.seed, config.train.max_iters, trainer.tokens_per_step, min_cpu_ratio)
    refit_every = max(1, config.train.max_iters // REFITS_PER_RUN)
    while trainer.progress.step < run.max_iters:
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train_step().item()  # .item() waits for the step to finish
        run.step_wall_s.append(time.perf_counter() - wall)
        run.step_cpu_s.append(time.process_time() - cpu)
        step = trainer.progress.step
        if step % refit_every == 0 and step < REFIT_UNTIL * run.max_iters:
            run.max_iters = refit_to_clock(trainer, run, budget_seconds)
        if step % eval_interval == 0 or step == run.max_iters:
            run.evals.append(evaluate_whole_val(trainer, run.train_seconds))
            if tokenizer is not None:
                run.evals[-1].sample = draw_sample(trainer, tokenizer, sample_tokens)
    return run


def refit_to_clock(trainer: Trainer, run: SeedRun, budget_seconds: float) -> int:
    """Steps done plus the training time left over the mean step time so far (the first step
    left out: it allocates), at least one more; the trainer's schedule is refitted to it, which
    the learning rate, a pure function of the step and the config, follows from the next step."""
    times = run.step_wall_s[1:] or run.step_wall_s
    left = max(0.0, budget_seconds - run.train_seconds)
    max_iters = trainer.progress.step + max(1, math.floor(left / statistics.fmean(times)))
    train = dataclasses.replace(trainer.config.train, max_iters=max_iters, lr_decay_iters=max_iters)
    trainer.config = dataclasses.replace(trainer.config, train=train)
    return max_iters


def evaluate_whole_val(trainer: Trainer, train_seconds: float) -> Evaluation:
    """Mean loss over every token of the validation split, as `compare`'s final val loss
    (`full_validation_loss`) measures it, in fp32 without autocast; a dialog run's Bot-reply
    loss where it trains on those alone."""
    start = time.perf_counter()
    loss = whole_val_loss(trainer)
    elapsed = time.perf_counter() - start
    return Evaluation(trainer.progress.step, train_seconds, loss, elapsed)


def draw_sample(trainer: Trainer, tokenizer: Tokenizer, tokens: int) -> str:
    """The recipe's sample prompt continued for `tokens` tokens, from SAMPLE_SEED, so that the
    samples of one run differ only by the weights."""
    sample = trainer.config.sample
    settings = GenerationSettings.from_sample(
        sample, max_new_tokens=tokens, seed=SAMPLE_SEED, precision="float32"
    )
    completion = generate_batch(trainer.model, tokenizer, [sample.prompt], settings)[0]
    return sample.prompt + completion.text


def run_all(args: argparse.Namespace, recipes: list[Recipe]) -> list[Cell]:
    cells = []
    for minutes in args.budgets:
        planned = [plan_cell(recipe, minutes, args.eval_every) for recipe in recipes]
        seeds = args.seeds or (SEEDS_UP_TO_5_MIN if minutes <= 5 else SEEDS_ABOVE)
        for k in range(seeds):  # seed-major: the recipes of one seed run back to back
            for recipe, (cell, config) in zip(recipes, planned, strict=True):
                print(
                    f"{minutes:g} min, seed {k}: {cell.recipe} ({cell.max_iters} steps) ...",
                    file=sys.stderr,
                    flush=True,
                )
                run = train_timed(
                    with_seed(config, k),
                    recipe.prepared,
                    cell.eval_interval,
                    args.min_ratio,
                    budget_seconds=60 * minutes,
                    sample_tokens=args.sample_tokens,
                )
                cell.runs.append(run)
        cells.extend(cell for cell, _ in planned)
    return cells


# ----------------------------------------------------------------------------------------------
# Reports


def format_minutes(seconds: list[float | None]) -> str:
    """Mean minutes over the seeds that reached a threshold; `(k/n)` when only some did."""
    reached = [s for s in seconds if s is not None]
    if not reached:
        return "-"
    mean = f"{statistics.fmean(reached) / 60:.2f}"
    return mean if len(reached) == len(seconds) else f"{mean} ({len(reached)}/{len(seconds)})"


def format_mean(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def format_delta(
    value: tuple[float, float | None] | None, base: tuple[float, float | None] | None
) -> str:
    return "-" if value is None or base is None else f"{value[0] - base[0]:+.4f}"


def format_table(cells: list[Cell], thresholds: list[float], baseline: str) -> str:
    header = [
        "recipe", "budget min", "seeds", "val loss (whole split)", "Δ vs baseline",
        "bits/byte", "Δ bits/byte", *(f"min to {t:.2f}" for t in thresholds),
        "steps", "train min", "tokens/s", "eval s", "contended steps",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    bases = {c.budget_minutes: c for c in cells if c.recipe == baseline}
    for cell in cells:
        runs, base = cell.runs, bases[cell.budget_minutes]
        per_byte, is_base = cell.bits_per_byte(), cell is base
        row = [
            cell.recipe,
            f"{cell.budget_minutes:g}",
            str(len(runs)),
            format_mean(*cell.val_loss()),
            "-" if is_base else format_delta(cell.val_loss(), base.val_loss()),
            "n/a" if per_byte is None else format_mean(*per_byte),
            "-" if is_base else format_delta(per_byte, base.bits_per_byte()),
            *(format_minutes([r.first_reached(t) for r in runs]) for t in thresholds),
            f"{statistics.fmean(r.max_iters for r in runs):.0f}",
            f"{statistics.fmean(r.train_seconds for r in runs) / 60:.2f}",
            f"{statistics.fmean(r.tokens_per_second for r in runs):,.0f}",
            f"{statistics.fmean(r.eval_seconds for r in runs):.1f}",
            f"{sum(r.contended_steps for r in runs)}/{sum(len(r.step_wall_s) for r in runs)}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_notes(args: argparse.Namespace, cells: list[Cell]) -> str:
    steps = ", ".join(
        f"{c.recipe} {1000 * c.step_seconds:.1f} ms"
        for c in cells
        if c.budget_minutes == args.budgets[0]
    )
    data = f", every recipe on --data {args.data}" if args.data else ""
    reached = (
        "min to X: training minutes (evaluation excluded) at the first evaluation at or below X, "
        f"every {args.eval_every:.0%} of the budget, mean over the seeds that reached it, (k/n) "
        "when only k did. "
        if args.thresholds
        else ""
    )
    return (
        f"measured on {cpu_line()}, {args.threads} threads{data}\n\n"
        "val loss: the mean loss over every token of the validation split at the last step, mean "
        "± sample std over seeds; bits/byte: the same loss in bits per UTF-8 byte of the "
        f"validation text, which compares across tokenizers. {reached}train min: the steps' "
        "wall time, which max_iters, refitted to the clock as the run goes, aims at the budget; "
        f"steps: the mean over seeds of the steps taken (step times measured first: {steps}). "
        f"contended steps: process CPU/wall below {args.min_ratio:.2f} (of {args.threads} "
        "threads), a neighbour took a core." + format_off_budget(cells)
    )


def format_off_budget(cells: list[Cell]) -> str:
    """Runs whose steps took more than OFF_BUDGET away from the budget: the step time measured
    before them was not what they met (a neighbour came or went), so their minutes differ."""
    off = [
        f"{c.recipe} at {c.budget_minutes:g} min, seed {k}: {run.train_seconds / 60:.2f} min"
        for c in cells
        for k, run in enumerate(c.runs)
        if abs(run.train_seconds / (60 * c.budget_minutes) - 1) > OFF_BUDGET
    ]
    if not off:
        return ""
    return f"\n\ntraining time off the budget by more than {OFF_BUDGET:.0%}: " + "; ".join(off)


def aligned_evaluations(runs: list[SeedRun]) -> list[tuple[Evaluation, ...]]:
    """The seeds' evaluations side by side: the k-th of each while every seed has one before
    its last, then the last of each. Refitting to the clock ends the seeds at different steps,
    so one may have an evaluation fewer than another."""
    common = min(len(run.evals) for run in runs) - 1
    return [
        *zip(*(run.evals[:common] for run in runs), strict=True),
        tuple(run.evals[-1] for run in runs),
    ]


def plot_curves(cells: list[Cell], thresholds: list[float], path: Path) -> None:
    """One panel per budget, one curve per recipe: the mean over seeds of the whole-split val
    loss at each evaluation, against the mean training minutes there."""
    budgets = sorted({c.budget_minutes for c in cells})
    figure, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), squeeze=False)
    for axis, minutes in zip(axes[0], budgets, strict=True):
        for cell in (c for c in cells if c.budget_minutes == minutes):
            points = aligned_evaluations(cell.runs)
            x = [statistics.fmean(e.train_seconds for e in evals) / 60 for evals in points]
            y = [statistics.fmean(e.val_loss for e in evals) for evals in points]
            axis.plot(x, y, marker=".", label=f"{cell.recipe} ({len(cell.runs)} seeds)")
        for threshold in thresholds:
            axis.axhline(threshold, color="grey", linewidth=0.5, linestyle=":")
        axis.set(
            title=f"{minutes:g} min budget",
            xlabel="training minutes (evaluation excluded)",
            ylabel="val loss (whole split)",
        )
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def to_json(args: argparse.Namespace, recipes: list[Recipe], cells: list[Cell]) -> dict[str, Any]:
    return {
        "command": " ".join(sys.argv),
        "machine": machine_line(args.threads),
        "cpu_model": cpu_model(),
        "cpu": describe_cpu(),
        "torch": torch.__version__,
        "threads": args.threads,
        "thresholds": args.thresholds,
        "eval_every": args.eval_every,
        "min_cpu_ratio": args.min_ratio,
        "recipes": {
            r.name: {"config": r.config.to_dict(), "step_seconds": r.step_seconds} for r in recipes
        },
        "cells": [
            {
                **{k: v for k, v in dataclasses.asdict(cell).items() if k != "runs"},
                "runs": [
                    {
                        **dataclasses.asdict(run),
                        "final_val_loss": run.final_val_loss,
                        "train_seconds": run.train_seconds,
                        "eval_seconds": run.eval_seconds,
                        "tokens_per_second": run.tokens_per_second,
                        "contended_steps": run.contended_steps,
                        "first_reached_seconds": {
                            f"{t:.2f}": run.first_reached(t) for t in args.thresholds
                        },
                    }
                    for run in cell.runs
                ],
            }
            for cell in cells
        ],
    }


def format_samples(cells: list[Cell]) -> str:
    """Each run's samples, evaluation by evaluation, under its step and whole-split loss."""
    parts = []
    for cell in cells:
        for k, run in enumerate(cell.runs):
            parts.append(f"## {cell.recipe}, {cell.budget_minutes:g} min, seed {k}\n")
            for e in run.evals:
                heading = (
                    f"step {e.step}, {e.train_seconds / 60:.2f} train min, val {e.val_loss:.4f}"
                )
                parts.append(f"### {heading}\n\n```text\n{e.sample}\n```\n")
    return "\n".join(parts)


def write_reports(args: argparse.Namespace, recipes: list[Recipe], cells: list[Cell]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    markdown, document, plot = (args.out / name for name in OUT_FILES)
    table = format_table(cells, args.thresholds, recipes[0].name)
    notes = format_notes(args, cells)
    markdown.write_text(f"{machine_line(args.threads)}\n\n{table}\n\n{notes}\n", encoding="utf-8")
    document.write_text(
        json.dumps(to_json(args, recipes, cells), indent=1) + "\n", encoding="utf-8"
    )
    plot_curves(cells, args.thresholds, plot)
    if args.sample_tokens:
        samples = args.out / SAMPLES_FILE
        samples.write_text(f"{machine_line(args.threads)}\n\n{format_samples(cells)}", "utf-8")
        print(f"wrote {samples}")
    print(f"\n{table}\n\n{notes}\n\nwrote {markdown}, {document} and {plot}")


# ----------------------------------------------------------------------------------------------
# Command line


def parse_floats(parser: argparse.ArgumentParser, flag: str, text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"{flag}: {text!r} is not a comma-separated list of numbers")
    if not values or any(not v > 0 for v in values):
        parser.error(f"{flag}: {text!r} must list numbers greater than 0")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes",
        default="",
        help="comma-separated presets or TOML files of overrides (as `tinygpt compare` takes "
        "them), trained beside the baseline, which always runs",
    )
    parser.add_argument(
        "--baseline", default=BASELINE, help="preset or TOML file the recipes are measured against"
    )
    parser.add_argument(
        "--data", help="train every recipe on this source (a --data value) instead of its own"
    )
    parser.add_argument("--budgets", default="2,5,15,60", help="minutes of training, e.g. 2,5")
    parser.add_argument(
        "--seeds",
        type=int,
        help=f"seeds per recipe and budget (default: {SEEDS_UP_TO_5_MIN} for budgets up to 5 "
        f"min, {SEEDS_ABOVE} above)",
    )
    parser.add_argument(
        "--eval-every", type=float, default=0.1, help="evaluate every this fraction of a budget"
    )
    parser.add_argument(
        "--thresholds",
        default=THRESHOLDS,
        help="val losses whose first reaching is timed; '' for none (recipes of other tokenizers)",
    )
    parser.add_argument(
        "--timed-steps", type=int, default=20, help="steps timed to fit each schedule"
    )
    parser.add_argument(
        "--sample-tokens",
        type=int,
        default=0,
        help="at each evaluation, sample this many tokens from the recipe's prompt (0: none)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--min-cpu-ratio",
        type=float,
        help=f"CPU/wall below this marks a step contended (default: {MIN_CPU_RATIO} x threads)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_loss"))
    args = parser.parse_args(argv)
    args.budgets = parse_floats(parser, "--budgets", args.budgets)
    thresholds = parse_floats(parser, "--thresholds", args.thresholds) if args.thresholds else []
    args.thresholds = sorted(thresholds, reverse=True)
    if args.timed_steps < 1:
        parser.error(f"--timed-steps {args.timed_steps} must be at least 1")
    if args.sample_tokens < 0:
        parser.error(f"--sample-tokens {args.sample_tokens} must not be negative")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds {args.seeds} must be at least 1")
    if not 0 < args.eval_every <= 1:
        parser.error(f"--eval-every {args.eval_every} must be in (0, 1]")
    args.recipes = [args.baseline] + [
        r.strip() for r in args.recipes.split(",") if r.strip() and r.strip() != args.baseline
    ]
    args.min_ratio = (
        args.min_cpu_ratio if args.min_cpu_ratio is not None else MIN_CPU_RATIO * args.threads
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads), flush=True)
    shared: dict[str, Any] = {"train.threads": args.threads, "train.device": args.device}
    if args.data:
        shared["data.source"] = args.data
    try:
        variants = load_variants(args.recipes, shared)
        recipes = [prepare_recipe(v, args.timed_steps) for v in variants]
        cells = run_all(args, recipes)
    except TinyGPTError as err:
        print(f"time_to_loss: error: {err}", file=sys.stderr)
        return 2
    write_reports(args, recipes, cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
