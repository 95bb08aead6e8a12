"""Which text is validation, and the shards the corpus is encoded in.

- the source's own validation split where it has one (DailyDialog, Hugging Face datasets);
- otherwise whole documents, every document going to validation with probability val_fraction
  by a fixed rule on its index (never a cut through the middle of a story);
- except a file without document separators big enough to tip that split (more than half of
  val_fraction of the corpus: three such files once gave 39% validation at 0.1): it is cut by
  position, its last val_fraction of characters (at a line end) validating;
- a corpus that is a single document (TinyShakespeare) is cut by position: the first 90% of the
  tokens train, the rest validate, exactly as nanoGPT does, so losses compare one to one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from tinygpt.config import DataConfig
from tinygpt.data.sources import Corpus, Document, WholeFile
from tinygpt.data.sources.documents import document_text
from tinygpt.errors import DataError
from tinygpt.tokenizers.bpe import split_text

SHARD_TEXT_BYTES = 4 << 20  # text per unit of parallel work: big enough to amortise, small in RAM
GOLDEN_RATIO_FRACTION = 0.6180339887498949  # spreads document indices evenly over [0, 1)
# a WholeFile holding more than this share of val_fraction of the corpus is cut by position:
# sent whole to one side, it alone would move the validation share by over half its target
POSITION_SPLIT_SHARE = 0.5
FAR_FROM_VAL_FRACTION = 2.0  # warn when the validation share is over 2x or under 1/2x the asked

SplitPlan = Literal["own_split", "by_document", "by_position"]
Destination = str  # "train", "val", or "all" (pieces of one document, split after encoding)
Shard = tuple[str, list[tuple[Destination, Document]]]  # (name, [(destination, document)])


def split_plan(corpus: Corpus) -> SplitPlan:
    if "validation" in corpus.splits:
        return "own_split"
    first_two = list(itertools.islice(corpus.documents("train"), 2))
    if not first_two:
        raise DataError(f"{corpus.origin} has no documents; give a corpus with some text")
    return "by_position" if len(first_two) == 1 else "by_document"


def shards(corpus: Corpus, config: DataConfig, plan: SplitPlan) -> Iterator[Shard]:
    """(shard name, [(destination, document), ...]) in a fixed order, so a resumed run cuts the
    same shards and can skip the finished ones."""
    if plan == "own_split":
        for split, dest in (("train", "train"), ("validation", "val")):
            yield from _cut_shards(split, ((dest, doc) for doc in corpus.documents(split)))
    elif plan == "by_document":
        yield from _cut_shards("train", _assigned_documents(corpus, config.val_fraction))
    else:  # one document: cut into pieces at line ends, encoded in parallel, split afterwards
        # "all" holds pieces of that one document, so no separator is put after them
        (document,) = corpus.documents("train")
        yield from _cut_shards(
            "train", (("all", piece) for piece in pieces(document_text(document)))
        )


def is_validation(index: int, val_fraction: float) -> bool:
    """Whether document `index` of a corpus without its own validation split validates: a
    fixed rule, so `eval` finds the same documents again."""
    return (index * GOLDEN_RATIO_FRACTION) % 1.0 < val_fraction


def validation_share(meta: dict[str, Any]) -> float:
    """The share of the prepared tokens that validate."""
    return meta["val_tokens"] / (meta["train_tokens"] + meta["val_tokens"])


def is_far_off(share: float, val_fraction: float) -> bool:
    return not val_fraction / FAR_FROM_VAL_FRACTION <= share <= FAR_FROM_VAL_FRACTION * val_fraction


def pieces(text: str) -> Iterator[str]:
    """Cut one long text into pieces of ~SHARD_TEXT_BYTES characters at a newline between two
    non-space characters, where the pieces encode to the ids of the whole text (`split_text`: a
    newline after a space would end a piece with a " \n" token that the whole text lacks)."""
    return (piece for piece in split_text(text, SHARD_TEXT_BYTES) if piece)


def text_size(document: Document) -> int:
    """Characters of text, the unit shards are cut in (progress counts UTF-8 bytes)."""
    if isinstance(document, str):
        return len(document)
    return sum(len(user) + len(bot) for user, bot in document.turns)


def utf8_size(document: Document) -> int:
    """UTF-8 bytes of the text. `isascii()` is O(1) on CPython's compact strings, so an ASCII
    corpus costs nothing and others one C-level encode, never a Python loop over characters."""
    if isinstance(document, str):
        texts = [document]
    else:
        texts = [text for turn in document.turns for text in turn]
    return sum(len(t) if t.isascii() else len(t.encode("utf-8", "surrogatepass")) for t in texts)


def _assigned_documents(
    corpus: Corpus, val_fraction: float
) -> Iterator[tuple[Destination, Document]]:
    """(destination, document): whole documents by the rule on their index, large files without
    separators in two parts by position. Every document keeps its index, so the rule puts the
    others where it always did (`eval` finds the validation conversations by it)."""
    total = corpus.total_bytes("train") or 0  # unknown: every file without separators is large
    for index, document in enumerate(corpus.documents("train")):
        if isinstance(document, WholeFile) and (
            utf8_size(document) > POSITION_SPLIT_SHARE * val_fraction * total
        ):
            yield from _parts_by_position(document, val_fraction)
        else:
            yield ("val" if is_validation(index, val_fraction) else "train", document)


def _parts_by_position(text: str, val_fraction: float) -> list[tuple[Destination, str]]:
    """The text's first 1 - val_fraction of characters to train and the rest to validation, cut
    at the line end nearest that point (mid-line only in a text without one). The two parts
    are two documents from now on, each followed by the separator."""
    target = round(len(text) * (1.0 - val_fraction))
    line_ends = (text.rfind("\n", 0, target) + 1, text.find("\n", target) + 1)
    inside = [end for end in line_ends if 0 < end < len(text)]
    cut = min(inside, key=lambda end: abs(end - target)) if inside else target
    parts = (("train", text[:cut]), ("val", text[cut:]))
    return [(dest, part) for dest, part in parts if part.strip()]


def _cut_shards(split: str, items: Iterable[tuple[Destination, Document]]) -> Iterator[Shard]:
    batch: list[tuple[Destination, Document]] = []
    size = 0
    for index in itertools.count():
        for item in items:
            batch.append(item)
            size += text_size(item[1])
            if size >= SHARD_TEXT_BYTES:
                break
        if not batch:
            return
        yield f"{split}-{index:06d}", batch
        batch, size = [], 0
