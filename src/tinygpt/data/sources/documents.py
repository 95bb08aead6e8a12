"""What every source gives: documents (plain text or conversations), one split's stream of them,
and the rule that cuts plain text into documents.

A line holding only `<|endoftext|>` (TinyStories V2, CS336) ends a document; the separator lines
are dropped, each document is stripped of surrounding whitespace and empty ones are skipped. A
text without any separator line is ONE document, returned unchanged as a `WholeFile`
(TinyShakespeare; prepare may split it by position). Such a file is held in memory whole, so a
many-GB corpus should use separators or be split into files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tinygpt.data.chat_format import Conversation, render_text

DOCUMENT_SEPARATOR = "<|endoftext|>"  # alone on a line, it ends a document
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")  # a source's own held-out split

Document = str | Conversation
DocumentStream = Callable[[], Iterator[Document]]


class WholeFile(str):
    """A text file without document separators, as its one document. It is not a unit the way
    a story is: prepare cuts a large one by position rather than send it whole to one split."""

    __slots__ = ()


@dataclass(frozen=True)
class Split:
    """One split of one source, before --format and --max_documents are applied."""

    stream: DocumentStream  # raw documents: text, or conversations
    total_bytes: int | None
    is_dialog: bool
    identity: Any  # JSON-able; hashed into the corpus fingerprint


def document_text(document: Document) -> str:
    """A document as text: a conversation rendered as `<s> User: ... </s>`."""
    return render_text(document) if isinstance(document, Conversation) else document


def split_documents(lines: Iterable[str]) -> Iterator[str]:
    """Plain text to documents by the module's rule: `<|endoftext|>` lines, else one document."""
    parts: list[str] = []
    is_separated = False
    for line in lines:
        if DOCUMENT_SEPARATOR in line and line.strip() == DOCUMENT_SEPARATOR:
            is_separated = True
            document = "".join(parts).strip()
            parts.clear()
            if document:
                yield document
        else:
            parts.append(line)
    document = "".join(parts)
    if is_separated:
        document = document.strip()
    if document.strip():
        yield document if is_separated else WholeFile(document)
