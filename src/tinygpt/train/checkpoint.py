"""Run directories and checkpoints: atomic writes, checksums, and loading without code execution.

Layout of a run directory::

    RUN_DIR/
      run.json          marks a tinygpt run; what data it was trained on
      config.json       the resolved RunConfig
      tokenizer.json
      metrics.jsonl     one JSON object per log line and per evaluation
      .lock             held (fcntl) by the one process training the run
      checkpoints/
        step-0000500/   model.safetensors, train_state.pt, meta.json (sizes and sha256 of both)
        last -> step-0000500
        best -> step-0000250

A checkpoint is written into a temporary directory, fsynced, and renamed into place; only then
do the `last`/`best` symlinks move (an atomic `os.replace` of a symlink). A kill at any moment
leaves `last` pointing at a complete checkpoint; the temporary it leaves is removed the next
time the run is locked.

Reading trusts nothing in the directory: every file must be a regular file inside the run (a
link to `/dev/zero` or into another run is refused before a byte is read), of the size meta.json
records, and config.json must describe the weights' shape before the model is allocated.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tinygpt.atomic_files import fsync_directory, write_synced, write_text_atomic
from tinygpt.config import ModelConfig, RunConfig, config_from_dict
from tinygpt.directories import (
    LOCK_FILE,
    DirectoryLock,
    check_output_dir,
    read_regular_file,
    regular_file_size,
    remove_stale_temporaries,
)
from tinygpt.errors import CheckpointError
from tinygpt.model.gpt import GPT
from tinygpt.runtime import LOADING_BYTES_PER_ELEMENT, check_model_fits
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

RUN_FORMAT = "tinygpt-run"
CHECKPOINT_FORMAT = "tinygpt-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
POINTERS = ("last", "best")
MAX_JSON_BYTES = 16 << 20  # run.json, config.json, meta.json hold kilobytes; /dev/zero is endless
MAX_TOKENIZER_BYTES = 1 << 30  # the largest vocabularies' JSON is tens of megabytes
# what a killed write leaves: a checkpoint's `.tmp-step-*` directory, a pointer's `.last.tmp-*`
# link, and the `.NAME.tmp-*` files of atomic_files (config.json, metrics.jsonl)
STALE_TEMPORARIES = (".tmp-*", ".*.tmp-*")


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
        written.append(run_dir / "checkpoints")
        (run_dir / "checkpoints").mkdir()
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
    remove_stale_temporaries(run_dir / "checkpoints", STALE_TEMPORARIES)


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
    read_run_info(run_dir)
    return read_json_object(
        run_file(run_dir, CONFIG_FILE), what=f"{run_dir} has no readable config.json"
    )


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


# ----------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    extra_meta: dict[str, Any],
    is_best: bool,
    keep_recent: int = 0,
) -> Path:
    """Write the checkpoint of `step`, point `last` (and `best` if `is_best`) at it, and delete
    the checkpoints that neither pointer names and that are not among the `keep_recent` most
    recent. A failed write (a full disk) is one CheckpointError naming the file, and leaves no
    temporary behind."""
    checkpoints = run_dir / "checkpoints"
    target = checkpoints / f"step-{step:07d}"
    try:
        if not _is_complete(target):
            _write_checkpoint_dir(target, step, model, train_state, extra_meta)
        if is_best:
            _point(checkpoints, "best", target.name)
        _point(checkpoints, "last", target.name)
    except OSError as err:
        raise CheckpointError(describe_write_failure(run_dir, err)) from None
    _remove_unreferenced(checkpoints, keep_recent)
    return target


def describe_write_failure(run_dir: Path, err: OSError) -> str:
    """`could not write FILE (No space left on device); the last checkpoint, step-N, is intact:
    ...`: which file failed, and what is safe."""
    failed = f"{err.filename}" if err.filename else "a file of the run"
    reason = err.strerror or (str(err.args[0]) if err.args else type(err).__name__)
    last = run_dir / "checkpoints" / "last"
    if last.is_symlink():
        state = f"the last checkpoint, {os.readlink(last)}, is intact"
    else:
        state = "no checkpoint was saved yet, and resuming starts the run from step 0"
    return (
        f"could not write {failed} ({reason}); {state}: fix the cause (free disk "
        f"space), then continue with `tinygpt train --resume {run_dir}`"
    )


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
    try:
        with _naming(target):
            temporary.mkdir(parents=True)
        for name, data in (
            (MODEL_FILE, model_bytes),
            (STATE_FILE, state_bytes),
            (META_FILE, (json.dumps(meta, indent=2) + "\n").encode()),
        ):
            with _naming(target / name):  # the name the user will look for
                write_synced(temporary / name, data)
        with _naming(target):
            fsync_directory(temporary)
            if target.exists():  # an incomplete leftover of an earlier crash
                shutil.rmtree(target)
            os.replace(temporary, target)
            fsync_directory(target.parent)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone when renamed; freed when not


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
    temporary = checkpoints / f".{pointer}.tmp-{os.getpid()}"
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


# ----------------------------------------------------------------------------------------------
# Loading


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run got as far as its first checkpoint (a `last` pointer, even a broken one,
    counts: a broken one must be reported, not taken for a fresh run)."""
    checkpoints = run_dir / "checkpoints"
    return (checkpoints / "last").is_symlink() or (checkpoints / "last").exists()


def load_checkpoint(
    run_dir: Path, which: str = "last", with_train_state: bool = True
) -> Checkpoint:
    """Load and verify a checkpoint. `which` is `last`, `best`, or a step directory name."""
    read_run_info(run_dir)
    directory = _checkpoint_directory(run_dir, which)
    meta_path = inside(directory / META_FILE, directory, f"{META_FILE} of checkpoint {directory}")
    meta = read_json_object(meta_path, what=f"checkpoint {directory} is incomplete")
    step, files = _checked_meta(meta, directory)
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


def _checkpoint_directory(run_dir: Path, which: str) -> Path:
    """The step directory `which` names, resolved: a direct child of the run's own
    checkpoints/ folder, whatever links lead there."""
    requested = run_dir / "checkpoints" / which
    if not requested.exists():
        if requested.is_symlink():
            hint = f"it points at {os.readlink(requested)}, which does not exist"
        elif which in POINTERS:
            hint = "it has no checkpoint yet"
        else:
            hint = f"there is no {which}"
        raise CheckpointError(f"cannot load checkpoint {which!r} of {run_dir}: {hint}")
    checkpoints = run_dir.resolve() / "checkpoints"
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


def load_model_from_run(
    run_dir: Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, RunConfig]:
    """The trained model (in eval mode), its tokenizer and its config, ready to generate."""
    config = config_from_dict(read_run_config_dict(run_dir))
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
