"""Loading a run's checkpoints, verified before use, and without running code.

Every file is read only once it is a regular file inside its checkpoint of the size meta.json
records, and its sha256 matches; train_state.pt is unpickled with `weights_only`; config.json
must describe the weights' shapes before the model is allocated.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from tinygpt.config import ModelConfig, RunConfig
from tinygpt.directories import read_regular_file
from tinygpt.errors import CheckpointError
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import (
    CHECKPOINT_FORMAT,
    META_FILE,
    MODEL_FILE,
    POINTERS,
    STATE_FILE,
    Checkpoint,
)
from tinygpt.run.directory import (
    CHECKPOINTS_DIR,
    inside,
    read_json_object,
    read_run_config,
    read_run_info,
    run_tokenizer_path,
    sha256_of,
)
from tinygpt.runtime import LOADING_BYTES_PER_ELEMENT, check_model_fits
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer


def load_model_from_run(
    run_dir: Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, RunConfig]:
    """The trained model (in eval mode), its tokenizer and its config, ready to generate."""
    config = read_run_config(run_dir)
    tokenizer = load_tokenizer(run_tokenizer_path(run_dir))
    if tokenizer.vocab_size > config.model.vocab_size:
        raise CheckpointError(
            f"{run_dir / 'tokenizer.json'} has {tokenizer.vocab_size} tokens but the model has "
            f"{config.model.vocab_size}; the tokenizer file does not belong to this run"
        )
    check_model_fits(
        config.model,
        torch.device(device),
        LOADING_BYTES_PER_ELEMENT,
        fix=f"is {run_dir / 'config.json'} the run's own?",
    )
    checkpoint = load_checkpoint(run_dir, which, with_train_state=False)
    check_config_matches_weights(config.model, checkpoint.model_state, run_dir)
    model = GPT(config.model)
    load_weights_into(model, checkpoint.model_state)
    return model.to(device).eval(), tokenizer, config


def load_checkpoint(
    run_dir: Path, which: str = "last", with_train_state: bool = True
) -> Checkpoint:
    """Load and verify a checkpoint. `which` is `last`, `best`, or a step directory name."""
    directory, meta = read_checkpoint_meta(run_dir, which)
    step, files = meta["step"], meta["files"]
    model_bytes = _read_verified(directory, MODEL_FILE, files)
    try:
        model_state = load_safetensors(model_bytes)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{directory / MODEL_FILE} cannot be read: {err}") from None
    train_state = None
    if with_train_state:
        train_state = _load_train_state(
            directory / STATE_FILE, _read_verified(directory, STATE_FILE, files)
        )
    return Checkpoint(directory, step, model_state, train_state, meta)


def read_checkpoint_meta(run_dir: Path, which: str) -> tuple[Path, dict[str, Any]]:
    """The step directory `which` names and its meta.json, checked to hold a step and each
    file's size and sha256; the weights are not read."""
    read_run_info(run_dir)
    directory = _checkpoint_directory(run_dir, which)
    meta_path = inside(directory / META_FILE, directory, f"{META_FILE} of checkpoint {directory}")
    meta = read_json_object(meta_path, what=f"checkpoint {directory} is incomplete")
    _checked_meta(meta, directory)
    return directory, meta


def _checkpoint_directory(run_dir: Path, which: str) -> Path:
    """The step directory `which` names, resolved: a direct child of the run's own
    checkpoints/ folder, whatever links lead there."""
    requested = run_dir / CHECKPOINTS_DIR / which
    if not requested.exists():
        if requested.is_symlink():
            hint = f"it points at {os.readlink(requested)}, which does not exist"
        elif which in POINTERS:
            hint = "it has no checkpoint yet"
        else:
            hint = f"there is no {which}"
        raise CheckpointError(f"cannot load checkpoint {which!r} of {run_dir}: {hint}")
    checkpoints = run_dir.resolve() / CHECKPOINTS_DIR
    directory = inside(requested, checkpoints, f"checkpoint {which!r} of {run_dir}")
    if directory.parent != checkpoints or not directory.is_dir():
        raise CheckpointError(
            f"cannot load checkpoint {which!r} of {run_dir}: give last, best or a step-N folder"
        )
    return directory


def _checked_meta(meta: dict[str, Any], directory: Path) -> tuple[int, dict[str, dict]]:
    """The step and the files' records of a meta.json, every field of the right type."""
    where = f"{directory / META_FILE}"
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{directory} is not a tinygpt checkpoint ({where} is foreign)")
    step, files = meta.get("step"), meta.get("files")
    if not _is_count(step):
        raise CheckpointError(f"{where} is malformed: step {step!r} is not a whole number >= 0")
    if not isinstance(files, dict):
        raise CheckpointError(f"{where} is malformed: it lists no files")
    for name in (MODEL_FILE, STATE_FILE):
        record = files.get(name)
        if not (
            isinstance(record, dict)
            and _is_count(record.get("bytes"))
            and isinstance(record.get("sha256"), str)
        ):
            raise CheckpointError(
                f"{where} is malformed: {name} needs a size in bytes and a sha256"
            )
    return step, files


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_verified(directory: Path, name: str, files: dict[str, dict]) -> bytes:
    """The file's bytes, read only once its type and size agree with meta.json."""
    expected = files[name]
    path = inside(directory / name, directory, f"{name} of checkpoint {directory}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {directory} is missing {name}")
    corrupted = (
        f"checkpoint {directory / name} is corrupted (size or sha256 differs from {META_FILE}); "
        "restore it, or delete the run's checkpoints and train again"
    )
    data = read_regular_file(path, expected["bytes"], corrupted, CheckpointError)
    if len(data) != expected["bytes"] or sha256_of(data) != expected["sha256"]:
        raise CheckpointError(corrupted)
    return data


def _load_train_state(path: Path, data: bytes) -> dict[str, Any]:
    """Tensors and plain containers only (weights_only): pickled code is never run, and a file
    holding any is one line, not torch's advice to switch the protection off."""
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # a foreign pickle fails in many ways (UnpicklingError, EOFError, ...)
        raise CheckpointError(
            f"{path} holds something other than tensors and plain containers, so it was not "
            "loaded; it was not written by tinygpt: restore it from the run's own checkpoint"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is malformed: it holds a {type(state).__name__}, not a dict")
    return state


def load_weights_into(model: nn.Module, model_state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by `save_checkpoint` (tied parameters stored once); tied parameters
    come back through their twin."""
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


def check_config_matches_weights(
    model_config: ModelConfig, model_state: dict[str, torch.Tensor], run_dir: Path
) -> None:
    """Before the model is allocated, config.json must describe the saved weights' shapes: a
    config.json edited to block_size 10**12 is one line, not an allocator's traceback.

    The layer count is checked first, from the weights' names, so that the shape-only model
    built on the meta device to compare with is never absurdly deep."""
    saved_layers = {m.group(1) for name in model_state if (m := re.match(r"blocks\.(\d+)\.", name))}
    if model_config.n_layer != len(saved_layers):
        raise CheckpointError(
            f"{run_dir}/config.json says n_layer={model_config.n_layer} but the checkpoint has "
            f"{len(saved_layers)} layers; config.json does not belong to these weights"
        )
    with torch.device("meta"):
        shapes = GPT(model_config)
    for name, tensor in shapes.state_dict().items():  # the model's order: embeddings first
        saved = model_state.get(name)
        if saved is not None and tuple(saved.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{run_dir}/config.json does not match the checkpoint: {name} is "
                f"{tuple(saved.shape)} in the checkpoint but {tuple(tensor.shape)} by config.json"
            )


def checkpoint_identity(run_dir: Path, which: str, prefix: str = "") -> dict[str, Any]:
    """What a run started from another's weights records of them: the run, the checkpoint,
    and the sha256 of its weights and tokenizer (keys prefixed with `prefix`)."""
    directory, meta = read_checkpoint_meta(run_dir, which)
    identity = {
        "run": str(run_dir.resolve()),
        "checkpoint": directory.name,
        "step": int(meta["step"]),
        "model_sha256": meta["files"][MODEL_FILE]["sha256"],
        "tokenizer_sha256": sha256_of(run_tokenizer_path(run_dir).read_bytes()),
    }
    return {prefix + key: value for key, value in identity.items()}
