"""The configs a comparison trains: CONFIG arguments resolved to configs, fitted to their data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinygpt.config import RunConfig
from tinygpt.config_parsing import apply_overrides, load_toml_overrides, preset_named
from tinygpt.data.prepare import PreparedData, prepare_dataset, with_prepared_settings
from tinygpt.errors import ConfigError
from tinygpt.presets import DEFAULT_PRESET, PRESETS, get_preset
from tinygpt.run.sizing import with_vocab_size


@dataclass(frozen=True)
class Variant:
    """One CONFIG argument, resolved: its display name and its config before the budget."""

    name: str
    config: RunConfig


def load_variants(specs: list[str], shared: dict[str, Any]) -> list[Variant]:
    """CONFIG arguments to variants; `shared` fields (flags) apply to each after its own."""
    variants = [load_variant(spec, shared) for spec in specs]
    names = [variant.name for variant in variants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"two configs are both named {duplicates[0]!r}; rename one of the TOML files"
        )
    return variants


def load_variant(spec: str, shared: dict[str, Any]) -> Variant:
    """A preset name, or a TOML file of fields whose top-level `preset = "NAME"` picks the
    preset it starts from."""
    path = Path(spec)
    if spec in PRESETS or not (path.suffix == ".toml" or path.is_file()):
        return Variant(spec, apply_overrides(get_preset(spec), shared))
    fields = load_toml_overrides(path)
    preset = preset_named(None, fields.pop("preset", None), path) or DEFAULT_PRESET
    config = apply_overrides(apply_overrides(get_preset(preset), fields), shared)
    return Variant(path.stem, config)


def with_prepared_vocab(config: RunConfig) -> tuple[RunConfig, PreparedData]:
    """The config with the tokenizer's vocabulary size filled in, as `start_run` saves it, so
    that it compares equal to a finished run's config.json (a prepared directory's data
    settings included)."""
    config = with_prepared_settings(config)
    prepared = prepare_dataset(config.data)
    return with_vocab_size(config, prepared.vocab_size), prepared


def with_seed(config: RunConfig, offset: int) -> RunConfig:
    train = dataclasses.replace(config.train, seed=config.train.seed + offset)
    return dataclasses.replace(config, train=train)
