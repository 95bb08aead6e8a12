"""Shards of documents to token ids in worker processes. Each finished shard is written with a
`.done` marker beside it in the work directory, so a resumed run skips those; at most two shards
per worker are in flight, so memory stays bounded however big the corpus."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinygpt.atomic_files import write_bytes_atomic, write_synced
from tinygpt.config import DataConfig
from tinygpt.data.chat_format import Conversation, encode_conversation
from tinygpt.data.prepare.meta import token_dtype
from tinygpt.data.prepare.splitting import SplitPlan, shards, text_size, utf8_size
from tinygpt.data.sources import Corpus, Document
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer

TextSizes = dict[str, list[tuple[int, int]]]  # per destination, (characters, bytes) per shard
PendingShard = tuple[str, list, concurrent.futures.Future | None]  # None: done by an earlier run
EncodedShard = dict[str, tuple[np.ndarray, np.ndarray | None]]  # destination: (ids, loss mask)


def encode_corpus(
    config: DataConfig, corpus: Corpus, tokenizer: Tokenizer, work: Path, plan: SplitPlan
) -> tuple[dict[str, list[str]], TextSizes]:
    """Encode every shard not already done; returns, per destination, the shard names in order
    and the characters and bytes of text in each (counted here, where the text passes anyway)."""
    workers = config.workers or os.cpu_count() or 1
    total = sum(corpus.total_bytes(split) or 0 for split in corpus.splits) or None
    progress = tqdm(
        total=total, unit="B", unit_scale=True, desc="tokenize", disable=not sys.stderr.isatty()
    )
    names: dict[str, list[str]] = {"train": [], "val": [], "all": []}
    sizes: TextSizes = {dest: [] for dest in names}
    with progress, EncoderPool(workers, work / "tokenizer.json", config.format) as submit:
        pending: list[PendingShard] = []
        for name, batch in shards(corpus, config, plan):
            done = (work / f"{name}.done").exists()
            pending.append((name, batch, None if done else submit(batch)))
            if len(pending) >= 2 * workers:  # bounded memory: at most 2 shards per worker
                _record_shard(pending.pop(0), work, names, sizes, progress)
        while pending:
            _record_shard(pending.pop(0), work, names, sizes, progress)
        # the bar counts the documents' text; the source's bytes also hold what reading drops
        # (document separators, blank lines, JSON syntax), so end it at 100% once all is read
        if progress.total is not None:
            progress.update(max(0, progress.total - progress.n))
    return names, sizes


def _record_shard(
    entry: PendingShard,
    work: Path,
    names: dict[str, list[str]],
    sizes: TextSizes,
    progress: tqdm,
) -> None:
    """Write a shard's encoded files and its `.done` marker (unless an earlier run did), and
    count its text."""
    name, batch, future = entry
    if future is not None:
        outputs = future.result()
        for dest, (ids, mask) in outputs.items():
            write_synced(work / f"{name}.{dest}.bin", ids.tobytes())
            if mask is not None:
                write_synced(work / f"{name}.{dest}.mask.bin", mask.tobytes())
        write_bytes_atomic(work / f"{name}.done", json.dumps(sorted(outputs)).encode())
    for dest in json.loads((work / f"{name}.done").read_text()):
        names[dest].append(name)
        documents = [doc for doc_dest, doc in batch if doc_dest == dest]
        sizes[dest].append((sum(map(text_size, documents)), sum(map(utf8_size, documents))))
    progress.update(sum(utf8_size(doc) for _, doc in batch))  # bytes, as total counts them


class EncoderPool:
    """Submit shards to worker processes, or encode inline when one worker is asked for."""

    def __init__(self, workers: int, tokenizer_path: Path, data_format: str) -> None:
        self.args = (str(tokenizer_path), data_format)
        self.executor = None
        if workers > 1:
            # spawn, not fork: the parent may hold torch's and tokenizers' thread pools
            self.executor = concurrent.futures.ProcessPoolExecutor(
                workers, multiprocessing.get_context("spawn"), _init_worker, self.args
            )

    def __enter__(self) -> Callable[[list], concurrent.futures.Future]:
        if self.executor is None:
            _init_worker(*self.args)
            return _run_inline
        return lambda batch: self.executor.submit(_encode_batch, batch)

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def _run_inline(batch: list) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(_encode_batch(batch))
    return future


_WORKER: dict[str, Any] = {}  # this process's tokenizer and data format, set by _init_worker


def _init_worker(tokenizer_path: str, data_format: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker process
    _WORKER["tokenizer"] = load_tokenizer(Path(tokenizer_path))
    _WORKER["format"] = data_format


def _encode_batch(batch: list[tuple[str, Document]]) -> EncodedShard:
    """Encode one shard: per destination, the ids (documents each followed by the separator;
    "all", the pieces of one document, without), already in the token file's dtype, and for
    dialogs the loss mask (1 on Bot reply tokens)."""
    tokenizer: Tokenizer = _WORKER["tokenizer"]
    dtype = token_dtype(tokenizer.vocab_size)
    outputs = {}
    for dest in dict.fromkeys(dest for dest, _ in batch):  # destinations in order of appearance
        documents = [doc for doc_dest, doc in batch if doc_dest == dest]
        separator_ids = [] if dest == "all" else tokenizer.document_separator()
        separator = np.asarray(separator_ids, dtype=dtype)
        if _WORKER["format"] == "dialog":
            outputs[dest] = _encode_conversations(documents, tokenizer, separator)
        else:
            outputs[dest] = (_encode_texts(documents, tokenizer, separator), None)
    return outputs


def _encode_texts(texts: list[str], tokenizer: Tokenizer, separator: np.ndarray) -> np.ndarray:
    """One batch call for the whole shard: tokenizers pay their per-call cost (thread pools,
    Python-to-Rust hops) once per shard, not once per story."""
    if isinstance(tokenizer, CharTokenizer):  # its per-text encoding is already vectorised
        encoded = [tokenizer.encode_array(text) for text in texts]
    else:
        encoded = tokenizer.encode_batch(texts)
    arrays = [np.asarray(ids, dtype=separator.dtype) for ids in encoded]
    return np.concatenate([part for ids in arrays for part in (ids, separator)])


def _encode_conversations(
    conversations: list[Conversation], tokenizer: Tokenizer, separator: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    no_loss = np.zeros(len(separator), dtype=np.uint8)
    ids, masks = [], []
    for conversation in conversations:
        conv_ids, conv_mask = encode_conversation(conversation, tokenizer)
        ids += [np.asarray(conv_ids, dtype=separator.dtype), separator]
        masks += [np.asarray(conv_mask, dtype=np.uint8), no_loss]
    return np.concatenate(ids), np.concatenate(masks)
