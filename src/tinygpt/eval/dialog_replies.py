"""How a dialog model replies: greedy Bot replies to the conversations of a split, each
prompted with the true history, scored by corpus BLEU against the reference replies and by
distinct-n (how rarely the model repeats itself).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tinygpt.config import DataConfig
from tinygpt.data.chat_format import BOS, EOS, Conversation, history_prompt
from tinygpt.data.prepare import is_validation
from tinygpt.data.sources import open_corpus
from tinygpt.eval.report import EvalReport
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer

EXAMPLE_REPLIES = 5  # kept in eval.json (and the first few in eval.md)


def score_replies(
    report: EvalReport,
    model: GPT,
    tokenizer: Tokenizer,
    data: DataConfig,
    split: str,
    max_dialogs: int,
) -> None:
    """BLEU and distinct-n of greedy replies to the first `max_dialogs` conversations of
    `split`, and a few of the replies, into `report` (a note instead where none can be made)."""
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
            if is_validation(index, data.val_fraction) == (split == "val")
        )
    return (document for document in documents if isinstance(document, Conversation))


@dataclass(frozen=True)
class Reply:
    """A user's turn, the Bot reply the data holds, and the model's greedy reply."""

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
