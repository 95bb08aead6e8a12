"""`tinygpt compare`: does variant X beat the baseline, on equal data and equal compute?

Every config trains on the same prepared data for the same budget (tokens, or minutes of
training steps), once per seed; seed k adds k to each config's own seed, so configs with the
same seed see the same batches. Runs live in OUT/runs/NAME/seed-K: a finished one is reused, an
interrupted one resumed. The report gives the final validation loss as mean ± sample standard
deviation over seeds, and converts it to bits per character so that tokenizers compare.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import torch

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import RunConfig, apply_overrides, config_from_dict, load_toml_overrides
from tinygpt.data.memmap import open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, prepare_dataset, with_prepared_settings
from tinygpt.directories import check_output_dir
from tinygpt.errors import ConfigError
from tinygpt.eval.evaluate import split_loss
from tinygpt.model.gpt import GPT
from tinygpt.presets import DEFAULT_PRESET, PRESETS, get_preset
from tinygpt.train.checkpoint import load_model_from_run, read_run_config_dict
from tinygpt.train.loop import (
    EVAL_TOKENS_PER_FORWARD,
    Trainer,
    read_metrics,
    resume_run,
    start_run,
)

log = logging.getLogger(__name__)

EVALUATIONS_PER_RUN = 10  # points on each validation curve
FINAL_EVAL_FILE = "final_eval.json"
TIMED_STEPS = 5  # train steps timed (after one warm-up step) to turn minutes into steps
# all `compare --out DIR` writes: DIR may hold only these
OUT_FILES = ("compare.md", "compare.json", "val_curves.png", "step_times.json", "runs")
TABLE_COLUMNS = [
    "config", "params", "MFLOP/token", "steps", "tokens/s", "val loss", "Δ vs baseline", "ppl",
    "bits/char", "train s",
]  # fmt: skip


class CompareInterrupted(Exception):
    """Ctrl-C stopped a run; its checkpoint is saved and the same command continues it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"stopped during {run_dir}")
        self.run_dir = run_dir


@dataclass(frozen=True)
class Budget:
    """Compute per run: `tokens` trained, or `minutes` of training steps (evaluation excluded)."""

    tokens: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.minutes is None):
            raise ConfigError("give exactly one budget: --tokens N or --minutes M")
        if self.tokens is not None and self.tokens <= 0:
            raise ConfigError(f"--tokens {self.tokens} must be greater than 0")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"--minutes {self.minutes} must be greater than 0")

    def describe(self) -> str:
        if self.tokens is not None:
            return f"{self.tokens:,} training tokens per run"
        return f"{self.minutes:g} min of training steps per run (step time measured per config)"


@dataclass(frozen=True)
class Variant:
    """One CONFIG argument, resolved: its display name and its config before the budget."""

    name: str
    config: RunConfig


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
        return math.exp(min(self.val_loss_mean, 50.0))

    @property
    def bits_per_char(self) -> float | None:
        return _bits_or_none(self.val_loss_mean, self.val_tokens, self.val_chars)

    @property
    def bits_per_byte(self) -> float | None:
        return _bits_or_none(self.val_loss_mean, self.val_tokens, self.val_bytes)

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


def bits_per_unit(loss_nats: float, tokens: int, units: int) -> float:
    """Loss in nats per token to bits per character (or byte): the total information of the
    text, spread over its characters instead of its tokens, so tokenizers compare."""
    return loss_nats * (tokens / units) / math.log(2)


def _bits_or_none(loss_nats: float, tokens: int, units: int | None) -> float | None:
    return None if not units else bits_per_unit(loss_nats, tokens, units)


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


# ----------------------------------------------------------------------------------------------
# Configs and budgets


def load_variants(specs: list[str], shared: dict[str, Any]) -> list[Variant]:
    """CONFIG arguments to variants; `shared` fields (flags) apply to each after its own."""
    variants = [load_variant(spec, shared) for spec in specs]
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"two configs are both named {duplicates[0]!r}; rename one of the TOML files"
        )
    return variants


def load_variant(spec: str, shared: dict[str, Any]) -> Variant:
    """A preset name, or a TOML file of fields whose top-level `preset = "NAME"` picks the
    preset it starts from."""
    path = Path(spec)
    if spec in PRESETS or not (path.suffix == ".toml" or path.is_file()):
        return Variant(spec, apply_overrides(get_preset(spec), shared))
    fields = load_toml_overrides(path)
    preset = fields.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str):
        raise ConfigError(f"{path}: preset = {preset!r} must be a preset name in quotes")
    config = apply_overrides(apply_overrides(get_preset(preset), fields), shared)
    return Variant(path.stem, config)


def with_prepared_vocab(config: RunConfig) -> tuple[RunConfig, PreparedData]:
    """The config with the tokenizer's vocabulary size filled in, as `start_run` saves it, so
    that it compares equal to a finished run's config.json (a prepared directory's data
    settings included)."""
    config = with_prepared_settings(config)
    prepared = prepare_dataset(config.data)
    if 0 < config.model.vocab_size < prepared.vocab_size:
        raise ConfigError(
            f"vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
            f"{prepared.vocab_size}; leave it at 0 or make it larger (padding)"
        )
    vocab_size = max(config.model.vocab_size, prepared.vocab_size)
    model = dataclasses.replace(config.model, vocab_size=vocab_size)
    return dataclasses.replace(config, model=model), prepared


def tokens_per_step(config: RunConfig) -> int:
    train = config.train
    return train.batch_size * config.model.block_size * train.gradient_accumulation_steps


def apply_budget(config: RunConfig, max_iters: int) -> RunConfig:
    """Train for `max_iters` with the whole schedule fitted into it: decay ends at the last
    step, warm-up is at most a tenth, about EVALUATIONS_PER_RUN evaluations, no early stop."""
    train = dataclasses.replace(
        config.train,
        max_iters=max_iters,
        lr_decay_iters=max_iters,
        warmup_iters=min(config.train.warmup_iters, max_iters // 10),
        eval_interval=max(1, math.ceil(max_iters / EVALUATIONS_PER_RUN)),
        patience=0,
        epochs=0.0,  # an epoch count would override max_iters
    )
    return dataclasses.replace(config, train=train)


def with_seed(config: RunConfig, offset: int) -> RunConfig:
    train = dataclasses.replace(config.train, seed=config.train.seed + offset)
    return dataclasses.replace(config, train=train)


def steps_for_budget(config: RunConfig, budget: Budget, step_seconds: float | None) -> int:
    """Optimizer steps that spend the budget: ceil(tokens / tokens per step), or
    floor(seconds / measured step time)."""
    if budget.tokens is not None:
        per_step = tokens_per_step(config)
        if budget.tokens < per_step:
            raise ConfigError(
                f"--tokens {budget.tokens:,} is less than one step of this config "
                f"({per_step:,} tokens: batch_size x block_size x gradient_accumulation_steps)"
            )
        return math.ceil(budget.tokens / per_step)
    assert budget.minutes is not None and step_seconds is not None
    steps = math.floor(budget.minutes * 60 / step_seconds)
    if steps < 1:
        raise ConfigError(
            f"--minutes {budget.minutes:g} is less than one step of this config "
            f"({step_seconds:.2f} s); give a larger budget"
        )
    return steps


def measure_step_seconds(config: RunConfig, prepared: PreparedData) -> float:
    """Seconds per optimizer step of a throw-away trainer, after one warm-up step (allocation,
    compilation): the median of TIMED_STEPS steps, so that one step slowed by a busy neighbour
    does not shrink the budget. `.item()` waits for the GPU: the time is of finished work."""
    with tempfile.TemporaryDirectory(prefix="tinygpt-step-time-") as scratch:
        trainer = Trainer(config, Path(scratch), prepared)
        trainer.train_step().item()
        seconds = []
        for _ in range(TIMED_STEPS):
            start = time.perf_counter()
            trainer.train_step().item()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)


def step_seconds_for(variant: Variant, prepared: PreparedData, out: Path) -> float:
    """The measured step time of `variant`, remembered in OUT/step_times.json: measuring again
    would give another max_iters, and the runs already there could no longer be reused. Kept
    per config, so that a refused attempt with a changed config forgets nothing."""
    record_path = out / "step_times.json"
    records = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else []
    config = variant.config.to_dict()
    for record in records:
        if record["name"] == variant.name and record["config"] == config:
            log.info("%s: reusing the measured step time, %.4f s", variant.name, record["seconds"])
            return float(record["seconds"])
    seconds = measure_step_seconds(variant.config, prepared)
    log.info("%s: %.4f s per step", variant.name, seconds)
    records.append({"name": variant.name, "config": config, "seconds": seconds})
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record_path, json.dumps(records, indent=1) + "\n")
    return seconds


# ----------------------------------------------------------------------------------------------
# Runs


def check_run_dir(config: RunConfig, run_dir: Path) -> None:
    """Refuse a run directory that holds a run of another config, before anything trains."""
    if not (run_dir / "run.json").exists():
        return
    saved = config_from_dict(read_run_config_dict(run_dir))
    if saved != config:
        raise ConfigError(
            f"{run_dir} holds a run of another config ({_describe_changes(saved, config)}); "
            "choose another --out or delete that folder"
        )


def _describe_changes(saved: RunConfig, wanted: RunConfig) -> str:
    before, after = _flatten(saved.to_dict()), _flatten(wanted.to_dict())
    changes = [
        f"{key} {before.get(key)!r} -> {value!r}"
        for key, value in after.items()
        if before.get(key) != value
    ]
    return ", ".join(changes[:3]) + (", ..." if len(changes) > 3 else "")


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def is_finished(run_dir: Path, max_iters: int) -> bool:
    records = read_metrics(run_dir)
    return any(r.get("kind") == "eval" and r["step"] == max_iters for r in records)


def train_or_reuse(config: RunConfig, run_dir: Path) -> None:
    """Reuse a finished run, resume an interrupted one, or start it."""
    if (run_dir / "run.json").exists():
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
    rows = max(1, EVAL_TOKENS_PER_FORWARD // config.model.block_size)
    result = split_loss(model, open_tokens(prepared.val_path, prepared.dtype), rows, mask)
    loss = result.bot_loss if mask is not None and result.bot_loss is not None else result.loss
    write_text_atomic(record, json.dumps({"val_loss": loss, "tokens": result.tokens}) + "\n")
    return loss


def count_model(config: RunConfig) -> tuple[int, float]:
    """Parameters and training FLOPs per token, from a model on the meta device: shapes only,
    no memory and no initialisation."""
    with torch.device("meta"):
        model = GPT(config.model)
    return model.num_params(), model.flops_per_token(config.model.block_size)


# ----------------------------------------------------------------------------------------------
# The comparison


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


def run_dir_of(out: Path, name: str, seed_index: int) -> Path:
    return out / "runs" / name / f"seed-{seed_index}"


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
