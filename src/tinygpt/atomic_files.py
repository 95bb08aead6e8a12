"""Writes that a crash cannot half-do: a temporary file beside the target, fsync, rename.

Every file or folder tinygpt writes for later reading (checkpoints, token files, tokenizers,
downloads, exported models) goes through here, so a reader sees the old one or the new one,
never a truncated mix. Temporaries are named `.NAME.tmp-*`, so they can be recognised and
cleaned up after a kill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def open_atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file that becomes `path` only when the block ends without an exception."""
    path = Path(path)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.chmod(temp_name, 0o644)  # mkstemp makes it owner-only
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
        fsync_directory(path.parent)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with open_atomic(path) as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync a file inside a directory that will itself be renamed into place."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    """Make renames inside `path` durable (POSIX syncs a directory's entries separately); a
    no-op where directories cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def temporary_name_pattern(name: str = "*") -> str:
    """The glob of the temporaries this module makes beside `name`."""
    return f".{name}.tmp-*"


def publish_directory(
    target: Path,
    write: Callable[[Path], None],
    keep_existing: Callable[[Path], bool] = lambda existing: False,
) -> bool:
    """Fill a hidden temporary sibling with `write(temporary)`, then rename it to `target`:
    readers see every file or none. Returns whether it was published.

    A `target` already there is replaced unless `keep_existing(target)` says it is as good as
    ours (another process finished the same work first), in which case ours is dropped. The
    caller checks beforehand that replacing it loses nothing of the user's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = temporary_name_pattern(target.name).removesuffix("*")
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    temporary.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        write(temporary)
        fsync_directory(temporary)
        if target.exists() or target.is_symlink():
            if keep_existing(target):
                return False
            _remove(target)
        try:
            os.replace(temporary, target)
        except OSError:
            if target.exists() and keep_existing(target):  # a concurrent writer won the race
                return False
            raise
        fsync_directory(target.parent)
        return True
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone when renamed; freed when not


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
