"""A run directory: creating it, locking it, and reading its files without trusting them.

Layout of a run directory::

    RUN_DIR/
      run.json          marks a tinygpt run; what data it was trained on
      config.json       the resolved RunConfig
      tokenizer.json
      metrics.jsonl     one JSON object per log line and per evaluation (run/metrics.py)
      .lock             held (fcntl) by the one process training the run
      checkpoints/      one folder per saved step, and the `last`/`best` links (run/checkpoint.py)

Reading trusts nothing in the directory: every file must be a regular file inside the run (a
link to `/dev/zero` or into another run is refused before a byte is read), and JSON files are
read only up to a size no honest one reaches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tinygpt.atomic_files import temporary_name_pattern, write_text_atomic
from tinygpt.config import RunConfig
from tinygpt.config_parsing import config_from_dict
from tinygpt.directories import (
    LOCK_FILE,
    DirectoryLock,
    check_output_dir,
    read_regular_file,
    regular_file_size,
    remove_stale_temporaries,
)
from tinygpt.errors import CheckpointError

RUN_FORMAT = "tinygpt-run"
FORMAT_VERSION = 1  # of run.json and of a checkpoint's meta.json
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS_DIR = "checkpoints"
MAX_JSON_BYTES = 16 << 20  # run.json, config.json, meta.json hold kilobytes; /dev/zero is endless
MAX_TOKENIZER_BYTES = 1 << 30  # the largest vocabularies' JSON is tens of megabytes
# what a killed write leaves: the `.NAME.tmp-*` files and folders of atomic_files (a
# checkpoint's step folder, a `last` link, config.json, metrics.jsonl), and the `.tmp-step-*`
# folders that tinygpt wrote checkpoints into before publish_directory
STALE_TEMPORARIES = (temporary_name_pattern(), ".tmp-*")
MAX_NAMED_CHANGES = 3  # changed fields an error message names


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Creating and locking


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a `--out` that holds a run or anything else, before any work is done."""
    if (run_dir / RUN_FILE).exists():
        raise CheckpointError(
            f"{run_dir} already holds a run; continue it with `tinygpt train --resume "
            f"{run_dir}` or choose another --out"
        )
    check_output_dir(run_dir)


def create_run_dir(
    run_dir: Path, config_json: str, tokenizer_json: str, data_info: dict
) -> DirectoryLock:
    """Start a new run in `run_dir`, refusing to touch anything already there. Returns the
    run's lock, held: the caller trains the run, and no other process may meanwhile.

    run.json, the mark of a run, is written last, and a failure removes what was written, so a
    run directory is either complete or absent (as empty as it was)."""
    check_new_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run(run_dir)
    run_info = {"format": RUN_FORMAT, "version": FORMAT_VERSION, **data_info}
    written: list[Path] = []
    try:
        check_new_run_dir(run_dir)  # again under the lock: another process may have been first
        for name, text in ((CONFIG_FILE, config_json), (TOKENIZER_FILE, tokenizer_json)):
            written.append(run_dir / name)
            write_text_atomic(run_dir / name, text)
        written.append(run_dir / CHECKPOINTS_DIR)
        (run_dir / CHECKPOINTS_DIR).mkdir()
        write_text_atomic(run_dir / RUN_FILE, json.dumps(run_info, indent=2) + "\n")
    except BaseException:
        _remove_quietly(written)
        lock.release()
        raise
    return lock


def _remove_quietly(paths: list[Path]) -> None:
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)


def lock_run(run_dir: Path) -> DirectoryLock:
    """The run's lock, or a one-line refusal naming the process that holds it: two processes
    on one run would write the same checkpoints and metrics lines."""
    lock = DirectoryLock(run_dir / LOCK_FILE)
    if not lock.try_acquire():
        raise CheckpointError(
            f"{run_dir} is in use by another tinygpt process ({lock.describe_holder()}); "
            "wait for it to finish or stop it, then try again"
        )
    return lock


def remove_run_leftovers(run_dir: Path) -> None:
    """Delete the temporaries of writes that were killed or failed (a full disk): they hold
    space and nothing else. Call it holding the run's lock."""
    remove_stale_temporaries(run_dir, STALE_TEMPORARIES)
    remove_stale_temporaries(run_dir / CHECKPOINTS_DIR, STALE_TEMPORARIES)


def describe_write_failure(run_dir: Path, err: OSError) -> str:
    """`could not write FILE (No space left on device); the last checkpoint, step-N, is intact:
    ...`: which file failed, and what is safe."""
    failed = f"{err.filename}" if err.filename else "a file of the run"
    reason = err.strerror or (str(err.args[0]) if err.args else type(err).__name__)
    last = run_dir / CHECKPOINTS_DIR / "last"
    if last.is_symlink():
        state = f"the last checkpoint, {os.readlink(last)}, is intact"
    else:
        state = "no checkpoint was saved yet, and resuming starts the run from step 0"
    return (
        f"could not write {failed} ({reason}); {state}: fix the cause (free disk "
        f"space), then continue with `tinygpt train --resume {run_dir}`"
    )


# ----------------------------------------------------------------------------------------------
# Reading


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The run's run.json; a clear error if `run_dir` is not a tinygpt run."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; give the --out of a run")
    info = read_json_object(
        run_file(run_dir, RUN_FILE), what=f"{run_dir} is not a tinygpt run directory"
    )
    if info.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{run_dir} is not a tinygpt run directory (run.json is foreign)")
    if info.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written by run format {info.get('version')}, this tinygpt reads "
            f"{FORMAT_VERSION}"
        )
    return info


def read_run_config_dict(run_dir: Path) -> dict[str, Any]:
    """config.json of a run, as JSON: what `config_from_dict` validates."""
    read_run_info(run_dir)
    return read_json_object(
        run_file(run_dir, CONFIG_FILE), what=f"{run_dir} has no readable config.json"
    )


def read_run_config(run_dir: Path) -> RunConfig:
    return config_from_dict(read_run_config_dict(run_dir))


def run_tokenizer_path(run_dir: Path) -> Path:
    """The run's tokenizer.json, checked to be a regular file inside the run of a sane size
    before a tokenizer loader reads it."""
    path = run_file(run_dir, TOKENIZER_FILE)
    regular_file_size(
        path, MAX_TOKENIZER_BYTES, f"{run_dir} has no usable tokenizer", CheckpointError
    )
    return path


def run_file(run_dir: Path, name: str) -> Path:
    """`run_dir/name`, resolved; refused if a link leads it outside the run."""
    return inside(run_dir / name, run_dir.resolve(), f"{name} of {run_dir}")


def inside(path: Path, root: Path, what: str) -> Path:
    """`path` with its links resolved, refused unless it stays under `root` (resolved): a link
    inside a run must not load another run's files."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise CheckpointError(
            f"{what} leads outside {root} (to {resolved}); a run only reads its own files, "
            "so remove the link"
        )
    return resolved


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a regular file of at most MAX_JSON_BYTES."""
    data = read_regular_file(path, MAX_JSON_BYTES, what, CheckpointError)
    try:
        document = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{what} ({path.name} is not valid JSON)") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{what} ({path.name} is not a JSON object)")
    return document


def describe_changes(before: object, after: object) -> str:
    """`n_layer 2 -> 3, dropout 0.1 -> 0.0`: the fields that differ between two configs (both
    dataclasses; a nested one's fields by dotted name, `train.learning_rate`), the first few:
    what a refusal to reuse or resume a run names."""
    old = _flatten(dataclasses.asdict(before))  # type: ignore[call-overload]
    new = _flatten(dataclasses.asdict(after))  # type: ignore[call-overload]
    changes = [
        f"{key} {old.get(key)} -> {value}" for key, value in new.items() if old.get(key) != value
    ]
    more = ", ..." if len(changes) > MAX_NAMED_CHANGES else ""
    return ", ".join(changes[:MAX_NAMED_CHANGES]) + more


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
