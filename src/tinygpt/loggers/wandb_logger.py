"""`--logger wandb`: the run's config, its metrics and a text sample in Weights & Biases.

The W&B run's id is kept in RUN_DIR/wandb_run_id, so that a resumed tinygpt run goes on in the
same W&B run. W&B's own settings apply: WANDB_PROJECT (default here: tinygpt), WANDB_ENTITY,
and WANDB_MODE=offline to log into RUN_DIR/wandb without an account (`wandb sync` uploads it).
"""

from __future__ import annotations

import html
import json
import os
import secrets
from typing import TYPE_CHECKING, Any

import wandb
import wandb.errors

from tinygpt.atomic_files import write_text_atomic
from tinygpt.errors import ConfigError
from tinygpt.loggers.samples import EvaluationSampler
from tinygpt.run.directory import run_file

if TYPE_CHECKING:
    from pathlib import Path

    from tinygpt.train.loop import Trainer

RUN_ID_FILE = "wandb_run_id"
DEFAULT_PROJECT = "tinygpt"


class WandbLogger:
    def __init__(self, trainer: Trainer) -> None:
        run_dir = trainer.require_run_dir()
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
                dir=run_dir,
                id=_run_id(run_dir),
                name=run_dir.name,
                resume="allow",
                config=json.loads(trainer.config.to_json()),
            )
        except wandb.errors.Error as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"W&B could not start a run ({reason}); log in with `wandb login`, or set "
                f"WANDB_MODE=offline to log into the run directory, then `tinygpt train "
                f"--resume {run_dir}`"
            ) from None
        self.sampler = EvaluationSampler(trainer)

    def on_train(self, trainer: Trainer, record: dict[str, Any]) -> None:
        logged = {f"train/{name}": value for name, value in _numbers(record)}
        self.run.log(logged, step=record["step"])

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        logged: dict[str, Any] = {f"eval/{name}": value for name, value in _numbers(record)}
        text = self.sampler.draw(trainer)
        if text is not None:
            logged["sample"] = wandb.Html(f"<pre>{html.escape(text)}</pre>")
        self.run.log(logged, step=record["step"])

    def close(self) -> None:
        self.run.finish()


def _run_id(run_dir: Path) -> str:
    """The W&B id of this tinygpt run, made on first use."""
    path = run_file(run_dir, RUN_ID_FILE)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    run_id = secrets.token_hex(4)
    write_text_atomic(path, run_id + "\n")
    return run_id


def _numbers(record: dict[str, Any]) -> list[tuple[str, float]]:
    return [
        (name, value)
        for name, value in record.items()
        if name not in ("kind", "step") and isinstance(value, int | float)
    ]
