"""`--data DIR` where DIR was written by `tinygpt prepare`: such a directory describes itself
(meta.json), so it is used as it is, and a run takes its data settings from it."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tinygpt.config import DataConfig, RunConfig
from tinygpt.config_parsing import field_types, parse_value
from tinygpt.data.prepare.meta import (
    READABLE_FORMAT_VERSIONS,
    PreparedData,
    check_complete,
    read_meta,
)
from tinygpt.data.prepare.vocabulary import same_tokenizer
from tinygpt.errors import ConfigError, DataError
from tinygpt.presets import PRESETS
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)


def prepared_source(config: DataConfig, tokenizer: Tokenizer | None) -> PreparedData | None:
    """The prepared directory `config.source` names, checked to suit the config (and the given
    tokenizer: ids of another vocabulary would be other text to a model); None for any other
    source."""
    directory = Path(config.source).expanduser()
    meta_path = directory / "meta.json"
    if not (meta_path.exists() or meta_path.is_symlink()):  # a broken link is refused below
        return None
    prepared = check_complete(directory, READABLE_FORMAT_VERSIONS)
    meta = read_meta(directory / "meta.json")
    stored = load_tokenizer(prepared.tokenizer_path)
    if (stored.kind, stored.vocab_size) != (meta.get("tokenizer"), prepared.vocab_size):
        raise DataError(
            f"{prepared.tokenizer_path} is a {stored.kind} tokenizer of {stored.vocab_size} "
            f"tokens, but meta.json records a {meta.get('tokenizer')} tokenizer of "
            f"{prepared.vocab_size}; the two do not belong together: prepare the data again"
        )
    if tokenizer is not None:
        if not same_tokenizer(stored, tokenizer):
            raise DataError(
                f"{directory} was prepared with another vocabulary than the given "
                f"{tokenizer.kind} tokenizer; give the text itself, to be tokenized with it"
            )
        return prepared
    if meta.get("tokenizer") != config.tokenizer:
        raise DataError(
            f"{directory} was prepared with the {meta.get('tokenizer')} tokenizer but the run "
            f"asks for {config.tokenizer}; pass --tokenizer {meta.get('tokenizer')} or prepare "
            "it again"
        )
    return prepared


def with_prepared_settings(config: RunConfig) -> RunConfig:
    """`config` with the data settings of the prepared directory its source names (unchanged
    for any other source): such a directory describes itself, so `--data DIR` needs no
    `--tokenizer`, and config.json records what the tokens really are. A setting still at the
    value the preset (or the defaults) gives it takes the directory's; one set to another value
    than the directory's is an error naming both."""
    data = config.data
    directory = Path(data.source).expanduser()
    if not (directory / "meta.json").is_file():
        return config
    recorded = _recorded_settings(directory)
    preset = PRESETS.get(config.preset)
    unset = preset().data if preset is not None else DataConfig()
    conflicts = [
        f"{name}={value} (the run sets {getattr(data, name)})"
        for name, value in recorded.items()
        if getattr(data, name) not in (value, getattr(unset, name))
    ]
    if conflicts:
        raise DataError(
            f"{directory} was prepared with {', '.join(conflicts)}; leave those settings out (a "
            "prepared directory brings its own) or prepare the text again with them"
        )
    adopted = {name: value for name, value in recorded.items() if getattr(data, name) != value}
    if adopted:
        described = ", ".join(f"{name}={value}" for name, value in adopted.items())
        logger.info("using the settings %s was prepared with: %s", directory, described)
    return dataclasses.replace(config, data=dataclasses.replace(data, **adopted))


def _recorded_settings(directory: Path) -> dict[str, Any]:
    """The DataConfig fields that meta.json records and that decide the tokens: the tokenizer
    and, where it has them, its size and unknown-character policy; the split; the format."""
    meta_path = directory / "meta.json"
    meta = read_meta(meta_path)
    try:
        names = ["tokenizer", "val_fraction", "format"]
        if meta["tokenizer"] == "char":
            names.append("unknown_chars")
        if meta["tokenizer"] in ("bpe", "sentencepiece") and "tokenizer_vocab_size" in meta:
            names.append("tokenizer_vocab_size")  # recorded since FORMAT_VERSION 4
        types = field_types(DataConfig)
        return {name: parse_value(name, types[name], meta[name]) for name in names}
    except (ValueError, KeyError, TypeError, ConfigError) as err:
        raise DataError(f"{meta_path} is unreadable ({err}); prepare the data again") from None
