"""Corpora shipped inside the package (data/corpora/): gzipped text beside a JSON record of its
sha256, so a damaged install is caught rather than trained on."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources

from tinygpt.data.sources.documents import Split, split_documents
from tinygpt.errors import DataError

BUILTIN_CORPORA = ("tinyshakespeare",)


@dataclass(frozen=True)
class SourceText:
    text: str
    sha256: str  # of the UTF-8 bytes of `text`
    origin: str  # for people: "built-in corpus tinyshakespeare"


def read_builtin_corpus(name: str) -> SourceText:
    """The whole text of the built-in corpus `name` (one of BUILTIN_CORPORA), checked."""
    corpora = resources.files("tinygpt.data") / "corpora"
    metadata = json.loads((corpora / f"{name}.json").read_text(encoding="utf-8"))
    data = gzip.decompress((corpora / metadata["file"]).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != metadata["sha256"]:
        raise DataError(
            f"built-in corpus {name} is corrupted (sha256 {digest[:12]}..., expected "
            f"{metadata['sha256'][:12]}...); reinstall tinygpt"
        )
    return SourceText(data.decode("utf-8"), digest, f"built-in corpus {name}")


def builtin_split(name: str) -> Split:
    text = read_builtin_corpus(name)
    return Split(
        stream=lambda: split_documents(io.StringIO(text.text, newline="")),
        total_bytes=len(text.text.encode("utf-8")),
        is_dialog=False,
        identity={"builtin": name, "sha256": text.sha256},
    )
