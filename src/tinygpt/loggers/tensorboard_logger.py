"""`--logger tensorboard`: scalars and a text sample in RUN_DIR/tensorboard, for
`tensorboard --logdir RUN_DIR`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from torch.utils.tensorboard import SummaryWriter

from tinygpt.loggers.samples import EvaluationSampler

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer

LOG_DIR = "tensorboard"

# metrics.jsonl's names -> TensorBoard's tags, grouped into panels by their prefix
TRAIN_TAGS = {
    "loss": "train/loss",
    "lr": "train/learning_rate",
    "tokens_per_second": "speed/tokens_per_second",
    "mfu": "speed/mfu",
    "ms_per_step": "speed/ms_per_step",
}
EVAL_TAGS = {
    "train_loss": "eval/train_loss",
    "val_loss": "eval/val_loss",
    "val_ppl": "eval/val_perplexity",
}


class TensorBoardLogger:
    def __init__(self, trainer: Trainer) -> None:
        # purge_step: a resumed run hides the events past its checkpoint, as it forgets the
        # lines of metrics.jsonl past it
        self.writer = SummaryWriter(
            str(trainer.require_run_dir() / LOG_DIR), purge_step=trainer.progress.step or None
        )
        self.sampler = EvaluationSampler(trainer)

    def on_train(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars(TRAIN_TAGS, record)

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._scalars(EVAL_TAGS, record)
        text = self.sampler.draw(trainer)
        if text is not None:  # indented four spaces: shown as written, not as markdown
            self.writer.add_text("sample", _as_code(text), record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _scalars(self, tags: dict[str, str], record: dict[str, Any]) -> None:
        for name, tag in tags.items():
            value = record.get(name)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, record["step"])


def _as_code(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
