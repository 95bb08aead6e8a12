"""A corpus to `train.bin`, `val.bin` (+ loss masks for dialogs), `tokenizer.json`, `meta.json`.

Streamed, parallel and resumable, so a multi-gigabyte corpus is prepared in bounded memory on
every core, and an interrupted run picks up where it stopped. One module per step:

- `pipeline`: `prepare_dataset`, the cache entry (keyed by content) and its lock;
- `vocabulary`: the tokenizer, trained once or given, and its identity;
- `splitting`: which text is validation, and the shards the corpus is encoded in;
- `encoding`: shards to token ids in worker processes, resumable shard by shard;
- `token_files`: the final files, published as one directory;
- `meta`: meta.json and `PreparedData`, read back and checked;
- `prepared_source`: `--data DIR` for a directory `tinygpt prepare` wrote.
"""

from tinygpt.data.prepare.meta import PreparedData, load_prepared
from tinygpt.data.prepare.pipeline import dataset_key, prepare_dataset
from tinygpt.data.prepare.prepared_source import with_prepared_settings
from tinygpt.data.prepare.splitting import SHARD_TEXT_BYTES, is_validation
from tinygpt.data.prepare.vocabulary import (
    name_characters,
    same_tokenizer,
    unknown_characters,
)

__all__ = [
    "SHARD_TEXT_BYTES",
    "PreparedData",
    "dataset_key",
    "is_validation",
    "load_prepared",
    "name_characters",
    "prepare_dataset",
    "same_tokenizer",
    "unknown_characters",
    "with_prepared_settings",
]
