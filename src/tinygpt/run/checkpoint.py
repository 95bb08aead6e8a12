"""Saving checkpoints: a step folder that appears whole, and the `last`/`best` links to it.

    RUN_DIR/checkpoints/
      step-0000500/   model.safetensors, train_state.pt, meta.json (sizes and sha256 of both)
      last -> step-0000500
      best -> step-0000250

A step folder is written through `atomic_files.publish_directory` (a temporary sibling, fsynced,
renamed into place); only then do the `last`/`best` links move (an atomic `os.replace` of a
link). A kill at any moment leaves `last` pointing at a complete checkpoint; the temporary it
leaves is removed the next time the run is locked (`remove_run_leftovers`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from tinygpt.atomic_files import (
    fsync_directory,
    publish_directory,
    temporary_name_pattern,
    write_synced,
)
from tinygpt.errors import CheckpointError
from tinygpt.run.directory import (
    CHECKPOINTS_DIR,
    FORMAT_VERSION,
    describe_write_failure,
    sha256_of,
)

CHECKPOINT_FORMAT = "tinygpt-checkpoint"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
POINTERS = ("last", "best")


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    step: int
    model_state: dict[str, torch.Tensor]
    train_state: dict[str, Any] | None  # None when only the weights were asked for
    meta: dict[str, Any]


def checkpoint_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run got as far as its first checkpoint (a `last` pointer, even a broken one,
    counts: a broken one must be reported, not taken for a fresh run)."""
    checkpoints = run_dir / CHECKPOINTS_DIR
    return (checkpoints / "last").is_symlink() or (checkpoints / "last").exists()


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    summary: dict[str, Any],
    is_best: bool,
    keep_recent: int = 0,
) -> Path:
    """Write the checkpoint of `step`, point `last` (and `best` if `is_best`) at it, and delete
    the checkpoints that neither pointer names and that are not among the `keep_recent` most
    recent. `summary` is what meta.json records of the training besides the files (the best
    validation loss so far). A failed write (a full disk) is one CheckpointError naming the
    file, and leaves no temporary behind."""
    checkpoints = run_dir / CHECKPOINTS_DIR
    target = checkpoints / checkpoint_dir_name(step)
    try:
        if not _is_complete(target):
            _write_checkpoint_dir(target, step, model, train_state, summary)
        if is_best:
            _point(checkpoints, "best", target.name)
        _point(checkpoints, "last", target.name)
    except OSError as err:
        raise CheckpointError(describe_write_failure(run_dir, err)) from None
    _remove_unreferenced(checkpoints, keep_recent)
    return target


def _write_checkpoint_dir(
    target: Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    model_bytes = save_safetensors(_unique_tensors(model))
    buffer = io.BytesIO()
    torch.save(train_state, buffer)
    state_bytes = buffer.getvalue()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "files": {
            MODEL_FILE: {"bytes": len(model_bytes), "sha256": sha256_of(model_bytes)},
            STATE_FILE: {"bytes": len(state_bytes), "sha256": sha256_of(state_bytes)},
        },
        **summary,
    }
    files = {
        MODEL_FILE: model_bytes,
        STATE_FILE: state_bytes,
        META_FILE: (json.dumps(meta, indent=2) + "\n").encode(),
    }

    def write(temporary: Path) -> None:
        for name, data in files.items():
            with _naming(target / name):  # the name the user will look for
                write_synced(temporary / name, data)

    # an incomplete folder of an earlier crash is replaced (publish_directory's default)
    with _naming(target):
        publish_directory(target, write)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an OSError the file it happened to (a failed write() does not say)."""
    try:
        yield
    except OSError as err:
        if not err.filename:
            err.filename = str(path)
        raise


def _unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied parameters stored once (safetensors refuses shared memory)."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors


def _point(checkpoints: Path, pointer: str, target_name: str) -> None:
    """Move the link `pointer` to `target_name`: a new link beside it, renamed over it."""
    prefix = temporary_name_pattern(pointer).removesuffix("*")
    temporary = checkpoints / f"{prefix}{os.getpid()}"
    if temporary.is_symlink():
        temporary.unlink()
    with _naming(checkpoints / pointer):
        temporary.symlink_to(target_name)
        os.replace(temporary, checkpoints / pointer)
        fsync_directory(checkpoints)


def _remove_unreferenced(checkpoints: Path, keep_recent: int = 0) -> None:
    """Delete the step directories that no pointer names, but the `keep_recent` newest."""
    steps = sorted(entry.name for entry in checkpoints.iterdir() if entry.name.startswith("step-"))
    kept = {os.readlink(checkpoints / p) for p in POINTERS if (checkpoints / p).is_symlink()}
    kept.update(steps[-keep_recent:] if keep_recent > 0 else [])
    for name in steps:
        if name not in kept:
            shutil.rmtree(checkpoints / name, ignore_errors=True)


def _is_complete(directory: Path) -> bool:
    return (directory / META_FILE).is_file()
