"""metrics.jsonl: one JSON object a line, appended as training goes, read back by plots, by
`compare` and by a resume (which forgets the lines past its checkpoint)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from tinygpt.atomic_files import write_text_atomic
from tinygpt.directories import read_regular_file
from tinygpt.errors import CheckpointError
from tinygpt.run.directory import describe_write_failure, run_file

METRICS_FILE = "metrics.jsonl"
MAX_METRICS_BYTES = 1 << 30  # about 200 bytes a line, millions of lines


class MetricsLog:
    """metrics.jsonl: one JSON object a line, appended and flushed as training goes."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled  # False on every rank but rank 0

    def append(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: name the file, and what is safe
            err.filename = err.filename or str(self.path)
            raise CheckpointError(describe_write_failure(self.path.parent, err)) from None

    def truncate_after(self, step: int) -> None:
        """Forget lines written after the checkpoint a resumed run restarts from."""
        if not self.path.exists():
            return
        kept = [json.dumps(record) for record in _records(self.path) if record["step"] <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return _records(run_dir / METRICS_FILE)


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (JSON objects with a whole-number step), without the
    torn last line a kill mid-append leaves. Refused, like every file of a run, if it is a
    link out of the run or not a regular file."""
    if not path.exists() and not path.is_symlink():
        return []
    what = f"{path} is unreadable"
    data = read_regular_file(
        run_file(path.parent, path.name), MAX_METRICS_BYTES, what, CheckpointError
    )
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and type(record.get("step")) is int:
                records.append(record)
    return records
