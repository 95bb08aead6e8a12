"""What a training run tells those who watch it, besides metrics.jsonl.

The loop hands each record it writes to metrics.jsonl to its observers too: the TensorBoard and
W&B loggers (tinygpt.loggers) are observers. They live above the trainer because a logger also
draws a text sample, which is generation's work; the loop only knows this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer


class TrainingObserver(Protocol):
    def on_train(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """A "train" record: step, loss, lr, tokens_per_second, mfu, ms_per_step."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """An "eval" record: step, train_loss, val_loss, val_ppl, tokens_seen, train_seconds.
        The model is between steps: an observer may run it, in eval mode."""

    def close(self) -> None:
        """Training ended, or failed: write out what is buffered."""
