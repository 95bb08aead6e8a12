"""What the benchmark scripts share: flag parsing, quiet logging, the machine's name."""

from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path


def split_choices(
    parser: argparse.ArgumentParser, flag: str, text: str, choices: list[str]
) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    for value in values:
        if value not in choices:
            parser.error(f"{flag}: {value!r} is not one of {', '.join(choices)}")
    return values


def quiet_logging() -> None:
    """The library logs progress at INFO; a benchmark's output is the report alone."""
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tinygpt").setLevel(logging.WARNING)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
