"""User-facing errors: one exception family, caught once in the CLI."""


class TinyGPTError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits 2."""


class ConfigError(TinyGPTError):
    """A configuration value, preset, flag or TOML file is wrong."""


class DataError(TinyGPTError):
    """A data source is missing, empty, binary, not UTF-8, or cannot be tokenized."""


class CheckpointError(TinyGPTError):
    """A run directory or checkpoint is missing, foreign, corrupted or incompatible."""
