"""User-facing errors: one exception family, caught once in the CLI."""

import importlib.util


class TinyGPTError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits 2."""


class ConfigError(TinyGPTError):
    """A configuration value, preset, flag or TOML file is wrong."""


class DataError(TinyGPTError):
    """A data source is missing, empty, binary, not UTF-8, or cannot be tokenized."""


class CheckpointError(TinyGPTError):
    """A run directory or checkpoint is missing, foreign, corrupted or incompatible."""


def require_package(module: str, extra: str, wanted_by: str, alternative: str = "") -> None:
    """Refuse, in one line that says how to install it, a feature whose optional package
    (`module`, in the pip extra `extra`) is not installed; `wanted_by` names the feature."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{wanted_by} needs the {module} package, which is not installed: pip install "
            f"'tinygpt[{extra}]' (or pip install {module}){alternative}"
        )
