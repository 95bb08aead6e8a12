"""Hugging Face hub datasets (`hf:NAME`), streamed with the `datasets` package so that a
dataset of many GB is never downloaded whole. A dataset gives its train split and, where it has
one, its validation split; rows are records in one of the `records` layouts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tinygpt.data.sources.documents import VALIDATION_SPLIT_NAMES, Split
from tinygpt.data.sources.records import record_documents, record_layout
from tinygpt.errors import DataError

LOCAL_PATH_HINT = "--data path/to/file.txt|.jsonl|folder"


def hub_splits(name: str, text_field: str) -> dict[str, Split]:
    """The train (and validation) split of the hub dataset `name`, checked by its first row."""
    if not name:
        raise DataError("hf: needs a dataset name, e.g. hf:roneneldan/TinyStories")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"hf:{name} needs the datasets package (pip install datasets); or download the files "
            f"and pass a local path: {LOCAL_PATH_HINT}"
        ) from None
    try:
        loaded = datasets.load_dataset(name, streaming=True)
    except Exception as err:  # the hub's failures have many types; all mean "not loaded"
        raise DataError(
            f"could not load hf:{name} from the Hugging Face hub ({_first_line(err)}); download "
            f"the files and pass a local path: {LOCAL_PATH_HINT}"
        ) from None
    available = dict(loaded) if isinstance(loaded, Mapping) else {"train": loaded}
    if "train" not in available:
        raise DataError(f"hf:{name} has no train split (it has: {', '.join(available)})")
    chosen = {"train": "train"}
    validation = next((n for n in VALIDATION_SPLIT_NAMES if n in available), None)
    if validation is not None:
        chosen["validation"] = validation
    return {
        split: _hub_split(name, hub_split, available[hub_split], text_field)
        for split, hub_split in chosen.items()
    }


def _hub_split(name: str, hub_split: str, dataset: Any, text_field: str) -> Split:
    origin = f"hf:{name} {hub_split} split"
    rows = _hub_rows(dataset, origin)
    first = next(rows, None)
    rows.close()
    if first is None:
        raise DataError(f"{origin} is empty; give a dataset with rows")
    layout = record_layout(first, text_field, f"{origin} row 1")
    info = getattr(dataset, "info", None)
    return Split(
        stream=lambda: record_documents(
            enumerate(_hub_rows(dataset, origin), start=1), text_field, origin, "row"
        ),
        total_bytes=None,
        is_dialog=layout != "text",
        identity={
            "hf": name,
            "split": hub_split,
            "fingerprint": getattr(dataset, "_fingerprint", None),
            "config": getattr(info, "config_name", None),
            "version": str(getattr(info, "version", None)),
            "text_field": text_field,
        },
    )


def _hub_rows(dataset: Iterable[Any], origin: str) -> Iterator[Any]:
    """Rows of a streamed dataset; a network failure mid-stream becomes a DataError."""
    rows = iter(dataset)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:  # as in load_dataset: many types, one meaning
            raise DataError(f"could not read {origin} ({_first_line(err)}); try again") from None
        yield row


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
