"""`tinygpt eval`: loss, perplexity and bits per byte of a trained run over a whole split, and for
dialog models BLEU and distinct-n of greedy replies to the validation conversations.

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
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import DataConfig, RunConfig
from tinygpt.data.chat_format import BOS, EOS, Conversation, history_prompt
from tinygpt.data.memmap import open_loss_mask, open_tokens
from tinygpt.data.prepare import PreparedData, _is_validation, prepare_dataset, same_tokenizer
from tinygpt.data.sources import open_corpus
from tinygpt.directories import check_output_dir
from tinygpt.errors import ConfigError, DataError
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import IGNORE_INDEX
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("val", "train")
EXAMPLE_REPLIES = 5  # kept in eval.json (and the first few in eval.md)


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


def bits_per_unit(loss_nats: float, tokens: int, units: int | None) -> float | None:
    """Nats per token to bits per character (or byte): the split's information, spread over its
    characters instead of its tokens, so that tokenizers compare. None without a count."""
    return loss_nats * tokens / units / math.log(2) if units else None


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


def split_conversations(data: DataConfig, split: str) -> Iterator[Conversation]:
    """The conversations of a dialog source that `prepare_dataset` put into `split`: the
    source's own validation split where it has one, else its documents picked by prepare's
    rule."""
    corpus = open_corpus(data)
    if "validation" in corpus.splits:
        documents = corpus.documents("validation" if split == "val" else "train")
    else:
        documents = (
            document
            for index, document in enumerate(corpus.documents("train"))
            if _is_validation(index, data.val_fraction) == (split == "val")
        )
    return (document for document in documents if isinstance(document, Conversation))


# ----------------------------------------------------------------------------------------------
# Dialog replies: BLEU and distinct-n


@dataclass(frozen=True)
class Reply:
    user: str
    reference: str
    generated: str


def generate_replies(
    model: GPT,
    tokenizer: Tokenizer,
    conversations: Iterable[Conversation],
    max_dialogs: int,
    max_new_tokens: int,
) -> tuple[list[Reply], int]:
    """Greedy Bot replies to every turn of the first `max_dialogs` conversations, each prompted
    with the true history (not the model's earlier replies); and the number of dialogs read."""
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        # `</s>` is one id for tokenizers that reserve it and plain text for the others; a model
        # that skips it and opens the next turn has finished its reply too
        stop=(EOS, BOS),
        precision="float32",  # evaluation scores the model itself, not a faster approximation
    )
    replies: list[Reply] = []
    dialogs = 0
    progress = tqdm(total=max_dialogs, desc="replies", disable=not sys.stderr.isatty())
    with progress:
        for conversation in conversations:
            if dialogs >= max_dialogs:
                break
            dialogs += 1
            progress.update()
            for index, (user, reference) in enumerate(conversation.turns):
                history = Conversation(conversation.turns[:index])
                prompt = history_prompt(history, user, tokenizer)
                generated = stream_text(model, tokenizer, prompt, settings).text()
                replies.append(Reply(user, reference, generated.strip()))
    return replies, dialogs


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (0-100) with one reference per hypothesis and its default 13a
    tokenization, the figure papers quote."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts' whitespace tokens (Li et al. 2016): low
    when a model says the same things again and again. 0 when there are no n-grams."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


# ----------------------------------------------------------------------------------------------
# The report


@dataclass
class EvalReport:
    run_dir: str
    checkpoint: str
    data: str  # the prepared directory that was scored
    split: str
    split_tokens: int
    predicted_tokens: int
    loss: float
    bits_per_char: float | None
    bits_per_byte: float | None
    bot_loss: float | None = None
    bot_tokens: int | None = None
    dialogs: int | None = None
    replies: int | None = None
    bleu: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None
    examples: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bot_perplexity(self) -> float | None:
        return None if self.bot_loss is None else math.exp(self.bot_loss)

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document.update(
            perplexity=self.perplexity,
            bits_per_token=self.bits_per_token,
            bot_perplexity=self.bot_perplexity,
        )
        return document

    def to_markdown(self) -> str:
        rows = [
            ("tokens predicted", f"{self.predicted_tokens:,} of {self.split_tokens:,}"),
            ("loss (nats/token)", f"{self.loss:.4f}"),
            ("perplexity", f"{self.perplexity:.3f}"),
            ("bits/token", f"{self.bits_per_token:.4f}"),
            ("bits/char", _number(self.bits_per_char)),
            ("bits/byte", _number(self.bits_per_byte)),
        ]
        if self.bot_loss is not None and self.bot_perplexity is not None:
            rows += [
                (f"Bot-token loss ({self.bot_tokens:,} tokens)", f"{self.bot_loss:.4f}"),
                ("Bot-token perplexity", f"{self.bot_perplexity:.3f}"),
            ]
        if self.bleu is not None:
            rows += [
                (f"BLEU ({self.replies:,} replies, {self.dialogs:,} dialogs)", f"{self.bleu:.2f}"),
                ("distinct-1", _number(self.distinct_1)),
                ("distinct-2", _number(self.distinct_2)),
            ]
        lines = [
            f"## eval of {self.run_dir} ({self.checkpoint} checkpoint, {self.split} split)",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in rows),
        ]
        if self.examples:
            lines += ["", "Example replies (greedy):", ""]
            for example in self.examples[:3]:
                lines += [
                    f"- User: {example['user']}",
                    f"  - reference: {example['reference']}",
                    f"  - model: {example['generated']}",
                ]
        lines += [f"\nNote: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


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
        _score_replies(report, model, tokenizer, data, split, max_dialogs)
    return report


def _score_replies(
    report: EvalReport,
    model: GPT,
    tokenizer: Tokenizer,
    data: DataConfig,
    split: str,
    max_dialogs: int,
) -> None:
    if (Path(data.source).expanduser() / "meta.json").is_file():
        report.notes.append(
            "no BLEU: prepared data holds token ids only; give the dialog source itself for "
            "replies to compare"
        )
        return
    conversations = split_conversations(data, split)
    max_new_tokens = model.config.block_size  # a longer reply would outrun its own context
    replies, report.dialogs = generate_replies(
        model, tokenizer, conversations, max_dialogs, max_new_tokens
    )
    report.replies = len(replies)
    if not replies:
        report.notes.append(f"no BLEU: the {split} split has no conversations")
        return
    generated = [reply.generated for reply in replies]
    report.bleu = corpus_bleu(generated, [reply.reference for reply in replies])
    report.distinct_1 = distinct_n(generated, 1)
    report.distinct_2 = distinct_n(generated, 2)
    report.examples = [dataclasses.asdict(reply) for reply in replies[:EXAMPLE_REPLIES]]


REPORT_FILES = ("eval.json", "eval.md")  # all `eval --out DIR` writes: DIR may hold only these


def write_report(report: EvalReport, out_dir: Path) -> tuple[Path, Path]:
    """EVAL_DIR/eval.json (every figure and a few replies) and eval.md (the summary table)."""
    check_output_dir(out_dir, REPORT_FILES)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = (out_dir / name for name in REPORT_FILES)
    document = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(json_path, document)
    write_text_atomic(markdown_path, report.to_markdown())
    return json_path, markdown_path
