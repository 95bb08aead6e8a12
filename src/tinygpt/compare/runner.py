"""Training a comparison's runs: every config x seed in OUT/runs/NAME/seed-K, a finished run
reused and an interrupted one resumed, then summarised from its metrics and final weights."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinygpt.atomic_files import write_text_atomic
from tinygpt.compare.budget import (
    STEP_TIMES_FILE,
    Budget,
    apply_budget,
    step_seconds_for,
    steps_for_budget,
)
from tinygpt.compare.report import (
    REPORT_FILES,
    Comparison,
    ConfigResult,
    SeedResult,
    write_reports,
)
from tinygpt.compare.variants import Variant, load_variants, with_prepared_vocab, with_seed
from tinygpt.config import RunConfig
from tinygpt.data.memmap import open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, prepare_dataset
from tinygpt.directories import check_output_dir
from tinygpt.errors import ConfigError
from tinygpt.eval.evaluate import SplitLoss, split_loss
from tinygpt.model.gpt import GPT
from tinygpt.run.directory import RUN_FILE, describe_changes, read_run_config
from tinygpt.run.load import load_model_from_run
from tinygpt.run.metrics import read_metrics
from tinygpt.run.sizing import tokens_per_step
from tinygpt.train.evaluation import EVAL_TOKENS_PER_FORWARD
from tinygpt.train.start import resume_run, start_run

log = logging.getLogger(__name__)

FINAL_EVAL_FILE = "final_eval.json"
# all `compare --out DIR` writes: DIR may hold only these
OUT_FILES = (*REPORT_FILES, STEP_TIMES_FILE, "runs")


class CompareInterrupted(Exception):
    """Ctrl-C stopped a run; its checkpoint is saved and the same command continues it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"stopped during {run_dir}")
        self.run_dir = run_dir


def run_comparison(
    specs: list[str],
    shared: dict[str, Any],
    out: Path,
    seeds: int,
    budget: Budget,
    command: str,
) -> Comparison:
    """Train (or reuse) every config x seed, then write the reports into `out`."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1")
    check_output_dir(out, OUT_FILES)
    plans: list[tuple[Variant, PreparedData, RunConfig]] = []
    for variant in load_variants(specs, shared):
        config, prepared = with_prepared_vocab(variant.config)
        variant = dataclasses.replace(variant, config=config)
        seconds = None if budget.minutes is None else step_seconds_for(variant, prepared, out)
        steps = steps_for_budget(config, budget, seconds)
        plans.append((variant, prepared, apply_budget(config, steps)))
    for variant, _, config in plans:  # every conflict is reported before anything trains
        for k in range(seeds):
            check_run_dir(with_seed(config, k), run_dir_of(out, variant.name, k))
    for k in range(seeds):  # seed-major: an early Ctrl-C still leaves every config one run
        for variant, _, config in plans:
            with log_lines_prefixed(f"{variant.name}/seed-{k}"):
                train_or_reuse(with_seed(config, k), run_dir_of(out, variant.name, k))
    results = [
        summarize_config(variant.name, config, prepared, out, seeds)
        for variant, prepared, config in plans
    ]
    comparison = Comparison(command, budget, seeds, results)
    write_reports(comparison, out)
    return comparison


def run_dir_of(out: Path, name: str, seed_index: int) -> Path:
    return out / "runs" / name / f"seed-{seed_index}"


def check_run_dir(config: RunConfig, run_dir: Path) -> None:
    """Refuse a run directory that holds a run of another config, before anything trains."""
    if not (run_dir / RUN_FILE).exists():
        return
    saved = read_run_config(run_dir)
    if saved != config:
        raise ConfigError(
            f"{run_dir} holds a run of another config ({describe_changes(saved, config)}); "
            "choose another --out or delete that folder"
        )


def is_finished(run_dir: Path, max_iters: int) -> bool:
    records = read_metrics(run_dir)
    return any(r.get("kind") == "eval" and r["step"] == max_iters for r in records)


def train_or_reuse(config: RunConfig, run_dir: Path) -> None:
    """Reuse a finished run, resume an interrupted one, or start it."""
    if (run_dir / RUN_FILE).exists():
        check_run_dir(config, run_dir)
        if is_finished(run_dir, config.train.max_iters):
            log.info("reusing %s (finished)", run_dir)
            return
        trainer = resume_run(run_dir)  # from step 0 if it stopped before its first checkpoint
    else:
        trainer = start_run(config, run_dir)
    result = trainer.fit()
    if result.stop_reason == "interrupted":
        raise CompareInterrupted(run_dir)


@contextlib.contextmanager
def log_lines_prefixed(prefix: str) -> Iterator[None]:
    """Begin tinygpt's log lines with `prefix` (`NAME/seed-K`, as in OUT/runs) meanwhile: the
    runs train one after another and their step lines would not say whose they are. A record
    factory, as the logging cookbook adds context, so the handlers stay the CLI's."""
    make_record = logging.getLogRecordFactory()

    def make_prefixed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.name.startswith("tinygpt"):
            # with arguments, the message is still a %-format string
            shown = prefix.replace("%", "%%") if record.args else prefix
            record.msg = f"{shown}: {record.msg}"
        return record

    logging.setLogRecordFactory(make_prefixed_record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make_record)


# ----------------------------------------------------------------------------------------------
# Summaries


def summarize_config(
    name: str, config: RunConfig, prepared: PreparedData, out: Path, seeds: int
) -> ConfigResult:
    params, flops = count_model(config)
    return ConfigResult(
        name=name,
        max_iters=config.train.max_iters,
        tokens_per_step=tokens_per_step(config),
        params=params,
        flops_per_token=flops,
        val_tokens=prepared.val_tokens,
        val_chars=prepared.val_chars,
        val_bytes=prepared.val_bytes,
        seeds=[
            summarize_seed(config.train.seed + k, run_dir_of(out, name, k)) for k in range(seeds)
        ],
    )


def summarize_seed(seed: int, run_dir: Path) -> SeedResult:
    records = read_metrics(run_dir)
    evals = [r for r in records if r.get("kind") == "eval"]
    speeds = [r["tokens_per_second"] for r in records if r.get("kind") == "train"]
    last = evals[-1]
    return SeedResult(
        seed=seed,
        run_dir=str(run_dir),
        final_val_loss=full_validation_loss(run_dir),
        sampled_val_loss=float(last["val_loss"]),
        tokens_seen=int(last["tokens_seen"]),
        train_seconds=float(last["train_seconds"]),
        tokens_per_second=statistics.median(speeds) if speeds else math.nan,
        curve=[(int(r["tokens_seen"]), float(r["val_loss"])) for r in evals],
    )


def whole_split_loss(
    model: GPT,
    tokens: np.ndarray,
    block_size: int,
    loss_mask: np.ndarray | None,
    device: torch.device | str = "cpu",
) -> SplitLoss:
    """The loss over every token of a split, in batches of about EVAL_TOKENS_PER_FORWARD."""
    rows = max(1, EVAL_TOKENS_PER_FORWARD // block_size)
    return split_loss(model, tokens, rows, loss_mask, device)


def full_validation_loss(run_dir: Path) -> float:
    """Mean loss of the final weights over every token of the validation split, not the
    training loop's sample of windows: the same text for every config and seed, so the
    comparison's noise is the seeds' alone. Computed once, kept in RUN_DIR/final_eval.json."""
    record = run_dir / FINAL_EVAL_FILE
    if record.exists():
        return float(json.loads(record.read_text(encoding="utf-8"))["val_loss"])
    model, _, config = load_model_from_run(run_dir, "last")
    prepared = prepare_dataset(config.data)
    mask = open_loss_mask(prepared.mask_path("val")) if config.train.loss_on == "bot" else None
    tokens = open_tokens(prepared.val_path, prepared.dtype)
    result = whole_split_loss(model, tokens, config.model.block_size, mask)
    loss = result.trained_loss
    write_text_atomic(record, json.dumps({"val_loss": loss, "tokens": result.tokens}) + "\n")
    return loss


def count_model(config: RunConfig) -> tuple[int, float]:
    """Parameters and training FLOPs per token, from a model on the meta device: shapes only,
    no memory and no initialisation."""
    with torch.device("meta"):
        model = GPT(config.model)
    return model.num_params(), model.flops_per_token(config.model.block_size)
