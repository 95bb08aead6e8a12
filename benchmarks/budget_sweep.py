"""What recipes reach in M minutes of THIS machine's training, searched on a faster one.

A recipe's loss after a number of optimizer steps does not depend on the device that ran them
(fp32 on both, no autocast, the same seeds and batches); only the steps that fit in M minutes
do. So the search runs in two steps:

    # 1. here, on the CPU the budget is for: each recipe's step time (the median of 20 steps)
    .venv/bin/python benchmarks/budget_sweep.py measure --recipes A.toml,B.toml --out times.json
    # 2. anywhere (a GPU, many runs at once): each recipe trains M * 60 / its step time steps,
    #    its schedule fitted to them as `compare --minutes` fits it, and is scored on the whole
    #    validation split every tenth of the way
    python benchmarks/budget_sweep.py train --step-times times.json --minutes 3 --seeds 2 \\
        --device cuda --jobs 12 --out sweep/

What the sweep finds is a shortlist: the figures the README reports come from
benchmarks/time_to_loss.py, on the CPU itself, against its clock.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import cpu_line, quiet_logging, whole_val_loss

from tinygpt.compare.budget import apply_budget
from tinygpt.compare.variants import load_variants, with_prepared_vocab, with_seed
from tinygpt.train.loop import Trainer
from tinygpt.train.step_time import time_train_steps

TIMED_STEPS = 20
EVALUATIONS = 10


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    shared = {"train.threads": args.threads, "train.device": "cpu", "train.dtype": "float32"}
    records = json.loads(args.out.read_text()) if args.out.exists() else {}
    for variant in load_variants(args.recipes, shared):
        config, prepared = with_prepared_vocab(variant.config)
        seconds = statistics.median(time_train_steps(config, prepared, TIMED_STEPS))
        records[variant.name] = {"spec": variant_spec(args, variant.name), "seconds": seconds}
        print(f"{variant.name}: {1000 * seconds:.1f} ms per step", flush=True)
        args.out.write_text(json.dumps({**records, "_cpu": cpu_line()}, indent=1) + "\n")


def variant_spec(args: argparse.Namespace, name: str) -> str:
    return next(r for r in args.recipes if Path(r).stem == name or r == name)


def train_one(job: tuple[str, str, int, int, str]) -> dict[str, Any]:
    """One recipe and seed for `steps`, on `device`; the whole-split val loss along the way."""
    spec, name, steps, seed, device = job
    torch.set_num_threads(1)
    shared = {"train.device": device, "train.dtype": "float32", "train.threads": 1}
    (variant,) = load_variants([spec], shared)
    config, prepared = with_prepared_vocab(variant.config)
    config = with_seed(apply_budget(config, steps), seed)
    trainer = Trainer(config, None, prepared)
    torch.backends.cuda.matmul.allow_tf32 = False  # after the trainer's set-up turned it on
    every = max(1, math.ceil(steps / EVALUATIONS))
    curve, start = [], time.perf_counter()
    while trainer.progress.step < steps:
        trainer.train_step()
        step = trainer.progress.step
        if step % every == 0 or step == steps:
            loss = whole_val_loss(trainer)
            curve.append((step, loss))
    seconds = time.perf_counter() - start
    print(f"{name} seed {seed}: {curve[-1][1]:.4f} ({steps} steps, {seconds:.0f} s)", flush=True)
    return {"recipe": name, "seed": seed, "steps": steps, "curve": curve, "seconds": seconds}


def train(args: argparse.Namespace) -> None:
    times = json.loads(args.step_times.read_text())
    measured_on = times.pop("_cpu", "unknown CPU")
    step_seconds = {name: record["seconds"] for name, record in times.items()}
    names = args.only or list(times)
    unknown = [name for name in names if name not in times]
    if unknown:
        print(f"budget_sweep: error: --only {unknown[0]!r}: no step time in {args.step_times}",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    steps = {name: max(1, math.floor(60 * args.minutes / step_seconds[name])) for name in names}
    jobs = [
        (times[name]["spec"], name, steps[name], seed, args.device)
        for seed in range(args.seeds)
        for name in names
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in load_variants(list(dict.fromkeys(job[0] for job in jobs)), {}):
        with_prepared_vocab(variant.config)  # prepared here: a pool's worker may not fork
    context = multiprocessing.get_context("spawn")
    results = []
    with (
        context.Pool(args.jobs) as pool,
        (args.out / "budget_sweep.jsonl").open("a") as log,
    ):  # each result as it comes: a sweep stopped early keeps what it finished
        for result in pool.imap_unordered(train_one, jobs, chunksize=1):
            results.append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
    document = {
        "command": " ".join(sys.argv),
        "step_times_measured_on": measured_on,
        "trained_on": torch.cuda.get_device_name() if args.device == "cuda" else cpu_line(),
        "minutes": args.minutes,
        "results": results,
    }
    (args.out / "budget_sweep.json").write_text(json.dumps(document, indent=1) + "\n")
    table = format_table(results, step_seconds)
    (args.out / "budget_sweep.md").write_text(table + "\n")
    print(f"step times measured on {measured_on}; trained on {document['trained_on']}\n")
    print(table)


def format_table(results: list[dict[str, Any]], step_seconds: dict[str, float]) -> str:
    rows = []
    for name in dict.fromkeys(r["recipe"] for r in results):
        finals = [r["curve"][-1][1] for r in results if r["recipe"] == name]
        spread = f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else ""
        steps = next(r["steps"] for r in results if r["recipe"] == name)
        mean = statistics.fmean(finals)
        rows.append((mean, f"| {name} | {mean:.4f}{spread} | {len(finals)} | {steps} | "
                     f"{1000 * step_seconds[name]:.1f} |"))  # fmt: skip
    header = (
        "| recipe | val loss (whole split) | seeds | steps | CPU ms/step |\n|---|---|---|---|---|"
    )
    return "\n".join([header, *(row for _, row in sorted(rows))])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("measure", help="step times here, for each recipe")
    timing.add_argument("--recipes", required=True, help="comma-separated presets or TOML files")
    timing.add_argument("--threads", type=int, default=2)
    timing.add_argument("--out", type=Path, required=True, help="JSON of step times (updated)")
    training = commands.add_parser("train", help="train each recipe for its budget's steps")
    training.add_argument("--step-times", type=Path, required=True)
    training.add_argument("--minutes", type=float, required=True)
    training.add_argument("--seeds", type=int, default=1)
    training.add_argument("--only", default="", help="comma-separated recipe names")
    training.add_argument("--device", default="cpu")
    training.add_argument("--jobs", type=int, default=1, help="runs at once")
    training.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "measure":
        args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    else:
        args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    measure(args) if args.command == "measure" else train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
