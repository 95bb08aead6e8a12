"""`tinygpt eval`: loss, perplexity and bits per byte of a trained run over a whole split, and for
dialog models BLEU and distinct-n of greedy replies to the validation conversations
(`dialog_replies.py`), written as eval.json and eval.md (`report.py`).

The loss is a full pass, not a sample: the split's tokens are cut into consecutive,
non-overlapping windows of block_size + 1 tokens, and every token but the first of each window
is predicted from the ones before it in its window (the last, shorter window included). Each
batch's mean loss is weighted by the number of targets it counted, so the result is the exact
mean over all predicted tokens. Windows do not overlap, so the model sees on average half a
context: the figure is a little worse than a sliding-window evaluation, and comparable between
runs of the same block_size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from tinygpt.config import DataConfig, RunConfig
from tinygpt.data.memmap import open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, prepare_dataset, same_tokenizer
from tinygpt.errors import ConfigError, DataError
from tinygpt.eval.dialog_replies import score_replies
from tinygpt.eval.metrics import bits_per_unit
from tinygpt.eval.report import EvalReport
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("val", "train")


# ----------------------------------------------------------------------------------------------
# Loss over a whole split


@dataclass(frozen=True)
class SplitLoss:
    """Summed cross-entropy (nats) and the number of predicted tokens, over all tokens and, for
    dialog data, over Bot-reply tokens only."""

    loss_sum: float
    tokens: int
    bot_loss_sum: float | None = None
    bot_tokens: int | None = None

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def bot_loss(self) -> float | None:
        if self.bot_loss_sum is None or not self.bot_tokens:
            return None
        return self.bot_loss_sum / self.bot_tokens

    @property
    def trained_loss(self) -> float:
        """The loss a run minimises: over Bot-reply tokens where it was given a mask for them,
        over every token otherwise."""
        return self.bot_loss if self.bot_loss is not None else self.loss


def eval_batches(
    tokens: np.ndarray, block_size: int, batch_size: int, loss_mask: np.ndarray | None = None
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """(x, y, learn) over consecutive windows of block_size + 1 tokens: x (B, T) inputs,
    y (B, T) targets with y[:, t] == x[:, t + 1], learn (B, T) bool (1 on Bot targets) or None.

    Full windows come `batch_size` at a time; the last, shorter window (if it has a target)
    comes alone at its own length, so no padding ever enters the model."""
    window = block_size + 1
    n_full = len(tokens) // window
    for first in range(0, n_full, batch_size):
        rows = min(batch_size, n_full - first)
        start, stop = first * window, (first + rows) * window
        yield _window_batch(tokens, loss_mask, start, stop, rows)
    if len(tokens) - n_full * window >= 2:
        yield _window_batch(tokens, loss_mask, n_full * window, len(tokens), 1)


def _window_batch(
    tokens: np.ndarray, loss_mask: np.ndarray | None, start: int, stop: int, rows: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    windows = torch.from_numpy(np.asarray(tokens[start:stop]).astype(np.int64)).view(rows, -1)
    learn = None
    if loss_mask is not None:
        mask = torch.from_numpy(np.asarray(loss_mask[start:stop]).astype(bool)).view(rows, -1)
        learn = mask[:, 1:].contiguous()  # (B, T): the mask of each target
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous(), learn


@torch.no_grad()
def split_loss(
    model: GPT,
    tokens: np.ndarray,
    batch_size: int,
    loss_mask: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> SplitLoss:
    """The exact mean next-token loss over every predicted token of `tokens` (see the module
    docstring), and with a loss mask also over the Bot-reply targets alone."""
    model.eval()
    block_size = model.config.block_size
    window = block_size + 1
    n_batches = math.ceil(len(tokens) / window / batch_size)
    loss_sum = bot_sum = 0.0
    counted = bot_counted = 0
    batches = tqdm(
        eval_batches(tokens, block_size, batch_size, loss_mask),
        total=n_batches,
        desc="loss",
        disable=not sys.stderr.isatty(),
    )
    for x, y, learn in batches:
        x, y = x.to(device), y.to(device)
        # model.loss is a mean over the batch's targets: times their number, it is their sum
        loss_sum += model.loss(x, y).double().item() * y.numel()
        counted += y.numel()
        if learn is not None:
            bot_targets = y.masked_fill(~learn.to(device), IGNORE_INDEX)
            n_bot = int(learn.sum())
            if n_bot:
                bot_sum += model.loss(x, bot_targets).double().item() * n_bot
                bot_counted += n_bot
    if loss_mask is None:
        return SplitLoss(loss_sum, counted)
    return SplitLoss(loss_sum, counted, bot_sum, bot_counted)


# ----------------------------------------------------------------------------------------------
# Data: the run's own, or another source tokenized with the run's tokenizer


def prepare_eval_data(data: DataConfig, tokenizer: Tokenizer) -> PreparedData:
    """Prepared tokens of `data`, tokenized with the run's tokenizer (the run's own data is
    found in the cache, as training left it); already prepared data must have been tokenized
    exactly as the run was: token ids from another vocabulary mean other text to the model."""
    directory = Path(data.source).expanduser()
    if (directory / "meta.json").is_file():
        prepared = prepare_dataset(data)
        if not same_tokenizer(load_tokenizer(prepared.tokenizer_path), tokenizer):
            raise DataError(
                f"{data.source} is tokenized differently from this run (prepared with another "
                f"{data.tokenizer} vocabulary); give the text itself, to be tokenized with the "
                "run's tokenizer"
            )
        return prepared
    return prepare_dataset(data, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------
# The whole evaluation


def evaluate_run(
    model: GPT,
    tokenizer: Tokenizer,
    config: RunConfig,
    run_dir: Path,
    checkpoint: str = "best",
    source: str | None = None,
    split: str = "val",
    batch_size: int | None = None,
    max_dialogs: int = 200,
    device: torch.device | str = "cpu",
) -> EvalReport:
    """Score a loaded run on `split` of its own data, or of `source` (same tokenizer)."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if max_dialogs < 0:
        raise ConfigError(f"--max-dialogs {max_dialogs} must not be negative")
    batch_size = batch_size or config.train.batch_size
    if batch_size <= 0:
        raise ConfigError(f"--batch-size {batch_size} must be greater than 0")
    data = config.data if source is None else dataclasses.replace(config.data, source=source)
    prepared = prepare_eval_data(data, tokenizer)
    path = prepared.val_path if split == "val" else prepared.train_path
    tokens = open_tokens(path, prepared.dtype)
    mask_path = prepared.mask_path(split)
    mask = open_loss_mask(mask_path) if mask_path is not None else None
    scored = split_loss(model, tokens, batch_size, mask, device)
    is_val = split == "val"
    report = EvalReport(
        run_dir=str(run_dir),
        checkpoint=checkpoint,
        data=str(prepared.directory),
        split=split,
        split_tokens=len(tokens),
        predicted_tokens=scored.tokens,
        loss=scored.loss,
        bits_per_char=bits_per_unit(
            scored.loss, len(tokens), prepared.val_chars if is_val else None
        ),
        bits_per_byte=bits_per_unit(
            scored.loss, len(tokens), prepared.val_bytes if is_val else None
        ),
        bot_loss=scored.bot_loss,
        bot_tokens=scored.bot_tokens,
    )
    if data.format == "dialog" and max_dialogs:
        score_replies(report, model, tokenizer, data, split, max_dialogs)
    return report
