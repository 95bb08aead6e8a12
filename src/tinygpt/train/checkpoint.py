"""Run directories and checkpoints: atomic writes, checksums, and loading without code execution.

Layout of a run directory::

    RUN_DIR/
      run.json          marks a tinygpt run; what data it was trained on
      config.json       the resolved RunConfig
      tokenizer.json
      metrics.jsonl     one JSON object per log line and per evaluation
      checkpoints/
        step-0000500/   model.safetensors, train_state.pt, meta.json (sizes and sha256 of both)
        last -> step-0000500
        best -> step-0000250

A checkpoint is written into a temporary directory, fsynced, and renamed into place; only then
do the `last`/`best` symlinks move (an atomic `os.replace` of a symlink). A kill at any moment
leaves `last` pointing at a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tinygpt.atomic_files import fsync_directory, write_synced, write_text_atomic
from tinygpt.config import RunConfig, config_from_dict
from tinygpt.errors import CheckpointError
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

RUN_FORMAT = "tinygpt-run"
CHECKPOINT_FORMAT = "tinygpt-checkpoint"
FORMAT_VERSION = 1
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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# Run directories


def create_run_dir(run_dir: Path, config_json: str, tokenizer_json: str, data_info: dict) -> None:
    """Start a new run in `run_dir`, refusing to touch anything already there."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if (run_dir / "run.json").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; continue it with `tinygpt train --resume "
                f"{run_dir}` or choose another --out"
            )
        raise CheckpointError(f"{run_dir} exists and is not empty; choose another --out")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.json", config_json)
    write_text_atomic(run_dir / "tokenizer.json", tokenizer_json)
    run_info = {"format": RUN_FORMAT, "version": FORMAT_VERSION, **data_info}
    write_text_atomic(run_dir / "run.json", json.dumps(run_info, indent=2) + "\n")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """The run's run.json; a clear error if `run_dir` is not a tinygpt run."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; give the --out of a run")
    info = read_json_object(run_dir / "run.json", what=f"{run_dir} is not a tinygpt run directory")
    if info.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{run_dir} is not a tinygpt run directory (run.json is foreign)")
    if info.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir} was written by run format {info.get('version')}, this tinygpt reads "
            f"{FORMAT_VERSION}"
        )
    return info


def read_run_config_dict(run_dir: Path) -> dict[str, Any]:
    read_run_info(run_dir)
    return read_json_object(run_dir / "config.json", what=f"{run_dir} has no readable config.json")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{what} (no {path.name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{what} ({path.name} is not valid JSON)") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{what} ({path.name} is not a JSON object)")
    return document


# ----------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    extra_meta: dict[str, Any],
    is_best: bool,
) -> Path:
    """Write the checkpoint of `step`, point `last` (and `best` if `is_best`) at it, and delete
    checkpoints that neither pointer names any more."""
    checkpoints = run_dir / "checkpoints"
    target = checkpoints / f"step-{step:07d}"
    if not _is_complete(target):
        _write_checkpoint_dir(target, step, model, train_state, extra_meta)
    if is_best:
        _point(checkpoints, "best", target.name)
    _point(checkpoints, "last", target.name)
    _remove_unreferenced(checkpoints)
    return target


def _write_checkpoint_dir(
    target: Path, step: int, model: nn.Module, train_state: dict[str, Any], extra: dict[str, Any]
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
        **extra,
    }
    temporary = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    for name, data in (
        (MODEL_FILE, model_bytes),
        (STATE_FILE, state_bytes),
        (META_FILE, (json.dumps(meta, indent=2) + "\n").encode()),
    ):
        write_synced(temporary / name, data)
    fsync_directory(temporary)
    if target.exists():  # an incomplete leftover of an earlier crash
        shutil.rmtree(target)
    os.replace(temporary, target)
    fsync_directory(target.parent)


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
    temporary = checkpoints / f".{pointer}.tmp-{os.getpid()}"
    if temporary.is_symlink():
        temporary.unlink()
    temporary.symlink_to(target_name)
    os.replace(temporary, checkpoints / pointer)
    fsync_directory(checkpoints)


def _remove_unreferenced(checkpoints: Path) -> None:
    kept = {os.readlink(checkpoints / p) for p in POINTERS if (checkpoints / p).is_symlink()}
    for entry in checkpoints.iterdir():
        if entry.name.startswith("step-") and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def _is_complete(directory: Path) -> bool:
    return (directory / META_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(
    run_dir: Path, which: str = "last", with_train_state: bool = True
) -> Checkpoint:
    """Load and verify a checkpoint. `which` is `last`, `best`, or a step directory name."""
    read_run_info(run_dir)
    directory = run_dir / "checkpoints" / which
    if not directory.exists():
        hint = "it has no checkpoint yet" if which in POINTERS else f"there is no {which}"
        raise CheckpointError(f"cannot load checkpoint {which!r} of {run_dir}: {hint}")
    directory = directory.resolve()
    meta = read_json_object(directory / META_FILE, what=f"checkpoint {directory} is incomplete")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory} is not a tinygpt checkpoint")
    model_bytes = _read_verified(directory, MODEL_FILE, meta)
    try:
        model_state = load_safetensors(model_bytes)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{directory / MODEL_FILE} cannot be read: {err}") from None
    train_state = None
    if with_train_state:
        state_bytes = _read_verified(directory, STATE_FILE, meta)
        # weights_only: tensors and plain containers only, never arbitrary pickled code
        train_state = torch.load(io.BytesIO(state_bytes), weights_only=True, map_location="cpu")
    return Checkpoint(directory, int(meta["step"]), model_state, train_state, meta)


def _read_verified(directory: Path, name: str, meta: dict[str, Any]) -> bytes:
    expected = meta.get("files", {}).get(name)
    try:
        data = (directory / name).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {directory} is missing {name}") from None
    if expected is None or len(data) != expected["bytes"] or sha256_of(data) != expected["sha256"]:
        raise CheckpointError(
            f"checkpoint {directory / name} is corrupted (size or sha256 differs from "
            f"{META_FILE}); restore it, or delete the run's checkpoints and train again"
        )
    return data


def load_weights_into(model: nn.Module, model_state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by `_unique_tensors`; tied parameters come back through their twin."""
    try:
        result = model.load_state_dict(model_state, strict=False)
    except RuntimeError as err:  # size mismatch: the config.json shape is not the saved one
        first_line = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"checkpoint does not match the model shape: {first_line}") from None
    tied = {name for name in result.missing_keys if _is_tied(model, name)}
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise CheckpointError(
            "checkpoint does not match the model shape in config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(result.unexpected_keys)[:3]})"
        )


def _is_tied(model: nn.Module, name: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    unique = dict(model.named_parameters())
    return name in params and name not in unique


def load_model_from_run(
    run_dir: Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, RunConfig]:
    """The trained model (in eval mode), its tokenizer and its config, ready to generate."""
    config = config_from_dict(read_run_config_dict(run_dir))
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    if tokenizer.vocab_size > config.model.vocab_size:
        raise CheckpointError(
            f"{run_dir / 'tokenizer.json'} has {tokenizer.vocab_size} tokens but the model has "
            f"{config.model.vocab_size}; the tokenizer file does not belong to this run"
        )
    checkpoint = load_checkpoint(run_dir, which, with_train_state=False)
    model = GPT(config.model)
    load_weights_into(model, checkpoint.model_state)
    return model.to(device).eval(), tokenizer, config
