"""Where training text comes from: a built-in corpus, a file, a folder or glob, JSON(L) records,
DailyDialog or ProSocial Dialog conversations, an http(s) URL, or a Hugging Face dataset.

`open_corpus` gives a `Corpus` that streams documents, so a corpus of many GB is never held in
memory, and keeps the source's own validation split where it has one (a folder with `train/`
and `validation/`, a hub dataset's splits). One module per kind of source:

- `documents`: documents, splits, and the `<|endoftext|>` rule that cuts plain text;
- `builtin`: the corpora shipped in the package (TinyShakespeare);
- `text_files`: one file, checked as UTF-8 text and hashed, then read by lines;
- `files`: local files, folders and globs;
- `records`: JSON(L) records and their layouts (a text field, or a dialog);
- `dialogs`: DailyDialog's `__eou__` lines and ProSocial Dialog's turns as conversations;
- `hub`: Hugging Face datasets, streamed;
- `download`: http(s) URLs, cached;
- `corpus`: `open_corpus`, which picks among them and joins sources given as `A+B`.

Conversations become `Conversation`s; with --format text they are rendered as
`<s> User: ... </s>` text.
"""

from tinygpt.data.sources.corpus import Corpus, imported_source, open_corpus
from tinygpt.data.sources.documents import Document, WholeFile, split_documents

__all__ = [
    "Corpus",
    "Document",
    "WholeFile",
    "imported_source",
    "open_corpus",
    "split_documents",
]
