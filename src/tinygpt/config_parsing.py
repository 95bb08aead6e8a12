"""How text becomes a `RunConfig`: flags, a `--config` TOML file and a run's config.json.

Precedence, lowest first: dataclass defaults < ``--preset NAME`` < ``--config run.toml`` < flags
(`resolve_train_config`). Every value is parsed by its field's type; no user text is ever
evaluated as code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from tinygpt.config import SECTIONS, DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig
from tinygpt.errors import ConfigError
from tinygpt.presets import DEFAULT_PRESET, get_preset

# ----------------------------------------------------------------------------------------------
# The tree's shape, for parsing and for the command line's flags


def section_classes() -> dict[str, type]:
    return {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "sample": SampleConfig}


@functools.cache  # resolving the annotations is most of what building the CLI's parser costs
def field_types(section_cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass (the module uses postponed annotations)."""
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def all_fields() -> dict[str, tuple[str, Any, Any]]:
    """Map every field name to (section, type, default). Field names are unique across sections."""
    found: dict[str, tuple[str, Any, Any]] = {}
    for section, cls in section_classes().items():
        defaults = cls()  # type: ignore[call-arg]
        for name, annotation in field_types(cls).items():
            assert name not in found, f"config field {name} is defined twice"
            found[name] = (section, annotation, getattr(defaults, name))
    return found


def field_help(section_cls: type) -> dict[str, str]:
    """The help text of each field of a config dataclass that has one (see `option`)."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(section_cls) if f.metadata}


def parse_value(name: str, annotation: Any, raw: Any) -> Any:
    """Convert `raw` (text from a flag, or a TOML/JSON value) to the field's type."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if raw not in choices:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(map(str, choices))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() == "none"):
            return None
        return parse_value(name, options[0], raw)
    if annotation is bool:
        return _parse_bool(name, raw)
    if annotation is int:
        return _parse_int(name, raw)
    if annotation is float:
        return _parse_float(name, raw)
    if annotation is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}={raw!r} must be text")
        return raw
    raise TypeError(f"unsupported config type {annotation!r} for {name}")


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _parse_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}={raw!r} must be a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    try:
        return int(str(raw).replace("_", ""))
    except ValueError:
        pass
    try:  # allow 1e4 and 5000.0 for whole numbers
        value = float(str(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a whole number") from None
    if not value.is_integer():
        raise ConfigError(f"{name}={raw!r} must be a whole number")
    return int(value)


def _parse_float(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}={raw!r} must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    return value


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return `config` with fields replaced. Keys are `field` or `section.field`."""
    known = all_fields()
    changes: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, raw in overrides.items():
        section, name = _locate_field(key, known)
        changes[section][name] = parse_value(name, known[name][1], raw)
    sections = {
        section: dataclasses.replace(getattr(config, section), **changes[section])
        for section in SECTIONS
        if changes[section]
    }
    return dataclasses.replace(config, **sections)


def apply_given_settings(config: RunConfig, overrides: dict[str, Any], origin: str) -> RunConfig:
    """`apply_overrides` for settings a person gave (a --config file, then flags) over a preset.

    A value given wins over what a lower layer would derive it from: `max_iters` given without
    `epochs` drops a lower layer's `epochs` (which would recompute max_iters from the data), and
    a lower layer's decay over its whole run (`lr_decay_iters` equal to its `max_iters`) follows
    the new length. Given together in one place, `epochs` and `max_iters` conflict; `origin`
    ("the flags", "config file run.toml") names that place in the error."""
    given = given_field_names(overrides)
    updated = apply_overrides(config, overrides)
    train = updated.train
    if {"epochs", "max_iters"} <= given and train.epochs:
        raise ConfigError(
            f"{origin} set both epochs={train.epochs:g} and max_iters={train.max_iters}, which "
            "both decide how long the run trains; keep one"
        )
    if "max_iters" not in given or "epochs" in given:
        return updated
    decays_over_whole_run = config.train.lr_decay_iters == config.train.max_iters
    follows = "lr_decay_iters" not in given and decays_over_whole_run
    train = dataclasses.replace(
        train, epochs=0.0, lr_decay_iters=0 if follows else train.lr_decay_iters
    )
    return dataclasses.replace(updated, train=train)


def check_given_settings(config: RunConfig, given: set[str]) -> None:
    """Refuse, in one line, step counts a person gave that contradict each other (values from
    presets and defaults are not checked: a short test run keeps the preset's warm-up)."""
    train = config.train
    if {"warmup_iters", "max_iters"} <= given and train.warmup_iters >= train.max_iters:
        raise ConfigError(
            f"warmup_iters={train.warmup_iters} is not below max_iters={train.max_iters}: the "
            "run would end before the learning rate reaches its peak; lower warmup_iters"
        )
    if {
        "warmup_iters",
        "lr_decay_iters",
    } <= given and 0 < train.lr_decay_iters <= train.warmup_iters:
        raise ConfigError(
            f"lr_decay_iters={train.lr_decay_iters} is not after warmup_iters="
            f"{train.warmup_iters}: the decay would end before the warm-up does; raise "
            "lr_decay_iters (or set 0: decay over max_iters)"
        )


def given_field_names(overrides: dict[str, Any]) -> set[str]:
    """The field names (`max_iters`) that override keys (`train.max_iters`, `max-iters`) set."""
    known = all_fields()
    return {_locate_field(key, known)[1] for key in overrides}


def _locate_field(key: str, known: dict[str, tuple[str, Any, Any]]) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    name = name.replace("-", "_")
    if name not in known or (section and known[name][0] != section):
        raise ConfigError(f"unknown config field {key!r}; `tinygpt train --help` lists every field")
    return known[name][0], name


def flatten_toml(document: dict[str, Any], origin: str) -> dict[str, Any]:
    """Turn `{train: {lr: 1}}` or `{"train.lr": 1}` into `{"train.lr": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{origin}: unknown section [{key}]; use {', '.join(SECTIONS)}")
            for name, inner in value.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = value
    return flat


def load_toml_overrides(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return flatten_toml(document, str(path))


def config_from_dict(document: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved by `RunConfig.to_json` (a run's config.json)."""
    overrides = flatten_toml({k: v for k, v in document.items() if k in SECTIONS}, "config.json")
    config = apply_overrides(RunConfig(), overrides)
    return dataclasses.replace(config, preset=str(document.get("preset", "")))


def resolve_train_config(
    preset: str | None, config_file: Path | None, overrides: dict[str, Any]
) -> RunConfig:
    """The preset, then the --config file, then the flags: what a person gave wins over the
    preset (see `apply_given_settings`), and given settings that contradict each other are
    refused. The file may name its preset (`preset = "NAME"`, as `compare` recipes do)."""
    from_file = load_toml_overrides(config_file) if config_file is not None else {}
    preset = preset_named(preset, from_file.pop("preset", None), config_file)
    config = get_preset(preset or DEFAULT_PRESET)
    given: set[str] = set()
    if config_file is not None:
        config = apply_given_settings(config, from_file, f"config file {config_file}")
        given |= given_field_names(from_file)
    config = apply_given_settings(config, overrides, "the flags")
    check_given_settings(config, given | given_field_names(overrides))
    return config


def given_settings(config_file: Path | None, overrides: dict[str, Any]) -> set[str]:
    """The field names a person set, in the --config file (its `preset` line aside) and by
    flags."""
    from_file = load_toml_overrides(config_file) if config_file is not None else {}
    from_file.pop("preset", None)
    return given_field_names(from_file) | given_field_names(overrides)


def preset_named(flag: str | None, in_file: object, config_file: Path | None) -> str | None:
    """--preset, or a TOML file's `preset = "NAME"`; the two must agree where both are given."""
    if in_file is None:
        return flag
    if not isinstance(in_file, str):
        raise ConfigError(f"{config_file}: preset = {in_file!r} must be a preset name in quotes")
    if flag is not None and flag != in_file:
        raise ConfigError(
            f"--preset {flag} contradicts preset = {in_file!r} in {config_file}; give one of them"
        )
    return in_file
