"""Directories tinygpt writes into: never one that holds what tinygpt did not write there, and
never by two processes at once.

`check_output_dir` is the one test every `--out` passes before anything is computed or written:
the folder is absent, empty, or holds only the files that command writes. A thesis folder
given as `--out` by mistake is refused, not replaced.

`read_regular_file` reads what a directory holds only if it is a regular file of a sane size: a
link to `/dev/zero` in a run or a prepared folder would otherwise be read until memory runs out.

`DirectoryLock` is an exclusive `fcntl.flock` on a lock file. The kernel drops it when its
process ends, `kill -9` included, so a lock is never stale and never needs breaking by hand.
A lock file that others may wait on is never deleted: a waiter would then hold the old file's
lock while a newcomer locks a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import logging
import os
import shutil
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tinygpt.errors import ConfigError, TinyGPTError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"  # inside a run directory
MAX_NAMED_ENTRIES = 3  # foreign entries an error message names


def default_cache_dir() -> Path:
    """Downloads, prepared datasets and measured matmul peaks live here; TINYGPT_CACHE_DIR
    moves it (tests, clusters)."""
    configured = os.environ.get("TINYGPT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tinygpt"


def check_output_dir(directory: Path, own: Iterable[str] = (), flag: str = "--out") -> None:
    """Refuse `directory` unless it is absent, empty, or every entry in it matches one of the
    `own` glob patterns (the files the command itself writes there; its lock file always)."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{flag} {directory} is a file, not a folder; give a folder path")
    if not directory.exists():
        return
    patterns = (*own, LOCK_FILE, ".*.tmp-*")
    foreign = sorted(
        entry.name
        for entry in directory.iterdir()
        if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns)
    )
    if foreign:
        named = ", ".join(foreign[:MAX_NAMED_ENTRIES])
        more = ", ..." if len(foreign) > MAX_NAMED_ENTRIES else ""
        raise ConfigError(
            f"{flag} {directory} is not empty and holds files tinygpt did not write there "
            f"({named}{more}); choose a new or empty folder"
        )


def sibling_lock_file(directory: Path) -> Path:
    """The lock of a directory that appears by a rename (prepared data): it cannot live inside."""
    directory = directory.absolute()
    return directory.with_name(f".{directory.name}.lock")


@dataclass
class _Held:
    descriptor: int
    holders: int


# lock files this process holds: a second lock of the same file in the same process shares the
# first (flock would refuse it, and one process never races itself)
_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


class DirectoryLock:
    """An exclusive lock on `path`, held from `acquire` until `release` or process exit."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.is_held = False

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; False (at once) if one does."""
        return self._acquire(blocking=False)

    def acquire(self, waiting_for: str) -> None:
        """Take the lock, waiting for another process to release it (said once in the log:
        `waiting_for` names what it is doing)."""
        if self._acquire(blocking=False):
            return
        log.info("waiting for %s (%s)", waiting_for, self.describe_holder())
        self._acquire(blocking=True)

    def release(self) -> None:
        if not self.is_held:
            return
        self.is_held = False
        with _held_guard:
            held = _held[self.path]
            held.holders -= 1
            if held.holders == 0:
                del _held[self.path]
                os.close(held.descriptor)  # drops the flock

    def describe_holder(self) -> str:
        """`pid 1234` of the process holding the lock, as it wrote it, or `another process`."""
        try:
            pid = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            pid = ""
        return f"pid {pid}" if pid.isdigit() else "another process"

    def __del__(self) -> None:  # a lock dropped unreleased is released, as a closed file would be
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> DirectoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire(self, blocking: bool) -> bool:
        if self.is_held:
            return True
        with _held_guard:
            if self.path in _held:
                _held[self.path].holders += 1
                self.is_held = True
                return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return False
        except BaseException:
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        with _held_guard:
            _held[self.path] = _Held(descriptor, 1)
        self.is_held = True
        return True


def remove_stale_temporaries(directory: Path, patterns: Iterable[str]) -> list[str]:
    """Delete the entries of `directory` matching `patterns`: temporaries that a killed or
    failed write left. Only safe under the directory's lock (no writer is alive)."""
    removed: list[str] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d leftover temporary file(s) in %s", len(removed), directory)
    return removed


def regular_file_size(path: Path, limit: int, what: str, error: type[TinyGPTError]) -> int:
    """The size of `path`, refused (as `error("what (why)")`) unless it is a regular file of at
    most `limit` bytes: a device, a FIFO or a link to `/dev/zero` would be read forever."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise error(f"{what} (no {path.name})") from None
    except OSError as err:
        raise error(f"{what} ({path.name}: {err.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        raise error(f"{what} ({path} is not a regular file)")
    if status.st_size > limit:
        raise error(f"{what} ({path} has {status.st_size:,} bytes, more than {limit:,})")
    return status.st_size


def read_regular_file(path: Path, limit: int, what: str, error: type[TinyGPTError]) -> bytes:
    """The bytes of `path`, checked as `regular_file_size` checks it."""
    size = regular_file_size(path, limit, what, error)
    with open(path, "rb") as handle:
        # the size found, not the limit: a buffer is allocated for what is asked
        data = handle.read(size + 1)  # never more, even if the file grows meanwhile
    if len(data) > size:
        raise error(f"{what} ({path} grew past {size:,} bytes while being read)")
    return data
