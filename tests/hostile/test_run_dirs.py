"""Hostile cases against run directories, checkpoints and prepared data (issue 12).

Links out of a run and to endless files, lies in meta.json and train_state.pt, absurd sizes in
config.json, folders of someone else's files given as --out, runs killed before their first
checkpoint, a full disk, and two processes at once. Each of these once ended in a traceback, a
hang, lost data, another run's weights or a run that could be neither resumed nor restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch
from cli_helpers import TINY, assert_one_line_error, run_cli

from tinygpt.atomic_files import temporary_name_pattern
from tinygpt.config import DataConfig, ModelConfig, RunConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.data.prepare import dataset_key, prepare_dataset
from tinygpt.data.sources import open_corpus
from tinygpt.directories import DirectoryLock, sibling_lock_file
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.directory import create_run_dir, lock_run
from tinygpt.run.load import load_checkpoint, load_model_from_run
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.train import loop, start
from tinygpt.train.start import resume_run, start_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RUN = {
    "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0, "batch_size": 4,
    "max_iters": 2, "eval_interval": 2, "eval_iters": 2, "log_interval": 1,
}  # fmt: skip


def tiny_config(source: Path, **fields: object) -> RunConfig:
    return apply_overrides(RunConfig(), {"source": str(source), **TINY_RUN, **fields})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, small_text_file: Path) -> Path:
    """A finished tiny run: checkpoints step-0000000 and step-0000002 (last, and best)."""
    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    start_run(tiny_config(small_text_file), run_dir).fit()
    return run_dir


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run to tamper with (its links copied as links)."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory: pytest.TempPathFactory, small_text_file: Path) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare_dataset(DataConfig(source=str(small_text_file), workers=1), out_dir=out)
    return out


@pytest.fixture
def data_copy(prepared_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(prepared_data, copy)
    return copy


@contextlib.contextmanager
def address_space_capped(extra: int = 1 << 30) -> Iterator[None]:
    """A regression that reads /dev/zero or allocates without bound fails with MemoryError
    within `extra` more bytes, instead of taking the machine's memory (16 GB in 21 s). CPU
    only: starting CUDA under the cap would fail for its own reasons."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    in_use = int(status.split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (in_use + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def rewrite_json(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Endless files and links out of the run


def make_endless(path: Path, kind: str) -> None:
    """Replace `path` by a link to /dev/zero, or by a /dev/zero device node of its own."""
    path.unlink()
    if kind == "link":
        path.symlink_to("/dev/zero")
        return
    try:
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("creating a device node needs root")


@pytest.mark.parametrize("kind", ["link", "device"])
@pytest.mark.parametrize(
    "name",
    [
        "run.json",
        "config.json",
        "tokenizer.json",
        "checkpoints/last/meta.json",
        "checkpoints/last/model.safetensors",
    ],
)
def test_an_endless_file_in_a_run_is_refused_before_it_is_read(run_copy, name, kind):
    make_endless(run_copy / name, kind)
    with address_space_capped(), pytest.raises(CheckpointError) as error:
        load_model_from_run(run_copy, "last")
    assert "not a regular file" in str(error.value) or "leads outside" in str(error.value)


@pytest.mark.parametrize("kind", ["link", "device"])
def test_an_endless_train_state_is_refused_before_it_is_read(run_copy, kind):
    make_endless(run_copy / "checkpoints" / "last" / "train_state.pt", kind)
    with address_space_capped(), pytest.raises(CheckpointError):
        load_checkpoint(run_copy, "last")


@pytest.mark.parametrize("kind", ["link", "device"])
def test_an_endless_metrics_file_is_one_line(capsys, run_copy, kind):
    make_endless(run_copy / "metrics.jsonl", kind)
    with address_space_capped():
        code, _, err = run_cli(capsys, "plot", run_copy)
    assert_one_line_error(code, err, "metrics.jsonl")


def test_a_last_link_into_another_run_is_refused(run_copy, trained_run):
    last = run_copy / "checkpoints" / "last"
    last.unlink()
    last.symlink_to(trained_run.resolve() / "checkpoints" / "step-0000002")
    with pytest.raises(CheckpointError, match="leads outside"):
        load_checkpoint(run_copy, "last")


def test_a_checkpoints_folder_linked_to_another_run_is_refused(run_copy, trained_run):
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").symlink_to(trained_run.resolve() / "checkpoints")
    with pytest.raises(CheckpointError, match="leads outside"):
        load_model_from_run(run_copy, "best")


def test_a_checkpoint_path_out_of_the_run_is_one_line(capsys, run_copy, trained_run):
    other = os.path.relpath(trained_run / "checkpoints" / "step-0000002", run_copy / "checkpoints")
    code, _, err = run_cli(capsys, "sample", run_copy, "--checkpoint", other)
    assert_one_line_error(code, err, "leads outside")


def test_a_run_reached_through_a_link_still_loads(trained_run, tmp_path):
    (tmp_path / "latest").symlink_to(trained_run)
    model, _, _ = load_model_from_run(tmp_path / "latest", "last")
    assert model.config.n_layer == 2


# ----------------------------------------------------------------------------------------------
# Lies in meta.json, train_state.pt and config.json


STATE = "train_state.pt"


def replace_train_state(run_dir: Path, state: object) -> None:
    """Write `state` as the last checkpoint's train_state.pt, with meta.json updated to match:
    what a tamperer who knows the format does."""
    directory = (run_dir / "checkpoints" / "last").resolve()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    (directory / "train_state.pt").write_bytes(data)
    record = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    rewrite_json(directory / "meta.json", lambda meta: meta["files"].__setitem__(STATE, record))


META_LIES: dict[str, Callable[[dict[str, Any]], object]] = {
    "no step": lambda meta: meta.pop("step"),
    "step as text": lambda meta: meta.update(step="two"),
    "files as a list": lambda meta: meta.update(files=[]),
    "size as text": lambda meta: meta["files"]["model.safetensors"].update(bytes="many"),
    "a petabyte": lambda meta: meta["files"]["model.safetensors"].update(bytes=10**15),
    "no sha256": lambda meta: meta["files"]["train_state.pt"].pop("sha256"),
    "no record": lambda meta: meta["files"].pop("model.safetensors"),
    "foreign format": lambda meta: meta.update(format="safetensors"),
}


@pytest.mark.parametrize("lie", META_LIES.values(), ids=META_LIES.keys())
def test_a_lying_checkpoint_meta_json_is_one_line(capsys, run_copy, lie):
    rewrite_json(run_copy / "checkpoints" / "last" / "meta.json", lie)
    code, _, err = run_cli(capsys, "sample", run_copy, "--checkpoint", "last")
    assert_one_line_error(code, err, "meta.json")


class RunsCode:
    """Unpickling this runs a command: what weights_only=True exists to refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_train_state_with_pickled_code_is_one_line_and_never_runs(capsys, run_copy, tmp_path):
    marker = tmp_path / "code-ran"
    replace_train_state(run_copy, {"progress": RunsCode(marker)})
    code, _, err = run_cli(capsys, "train", "--resume", run_copy)
    assert_one_line_error(code, err, "train_state.pt", "not loaded")
    assert "weights_only" not in err
    assert not marker.exists()


def own_train_state(run_dir: Path) -> dict[str, Any]:
    state = load_checkpoint(run_dir, "last").train_state
    assert state is not None
    return state


STATE_LIES: dict[str, Callable[[dict[str, Any]], object]] = {
    "empty": lambda state: {},
    "a list": lambda state: [1, 2, 3],
    "progress as text": lambda state: {**state, "progress": "step 2"},
    "step as text": lambda state: {**state, "progress": {**state["progress"], "step": "2"}},
    "an unknown counter": lambda state: {**state, "progress": {**state["progress"], "x": 1}},
    "no optimizer": lambda state: {k: v for k, v in state.items() if k != "optimizer"},
    "rng as a list": lambda state: {**state, "rng_torch": [1, 2, 3]},
    "another step": lambda state: {**state, "progress": {**state["progress"], "step": 7}},
}


@pytest.mark.parametrize("lie", STATE_LIES.values(), ids=STATE_LIES.keys())
def test_a_train_state_of_another_structure_is_one_checkpoint_error(run_copy, lie):
    replace_train_state(run_copy, lie(own_train_state(run_copy)))
    with pytest.raises(CheckpointError, match=r"train_state\.pt"):
        resume_run(run_copy)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("block_size", 10**12, "block_size=1000000000000"),
        ("n_layer", 10**9, "n_layer=1000000000"),
        ("n_embd", 10**6, "n_embd=1000000"),
        ("vocab_size", 10**12, "vocab_size=1000000000000"),
        ("block_size", 64, "wpe.weight"),  # small enough to build: the shapes are compared
        ("n_layer", 3, "n_layer=3"),
    ],
)
def test_a_config_json_with_absurd_sizes_is_one_line(capsys, run_copy, field, value, named):
    rewrite_json(run_copy / "config.json", lambda config: config["model"].update({field: value}))
    with address_space_capped():
        code, _, err = run_cli(capsys, "sample", run_copy, "--device", "cpu", "--max-new-tokens", 1)
    assert_one_line_error(code, err, named)


def test_a_rope_config_json_too_big_for_memory_is_refused_before_allocating(tmp_path):
    """RoPE's tables are not saved: only the memory check stops block_size 10**12."""
    tokenizer = CharTokenizer.train("to be or not to be")
    model_config = ModelConfig(
        vocab_size=tokenizer.vocab_size, position="rope", block_size=16, n_layer=2, n_head=2,
        n_embd=32,
    )  # fmt: skip
    run_dir = tmp_path / "rope"
    config = RunConfig(model=model_config, data=DataConfig(source="unused"))
    create_run_dir(run_dir, config.to_json(), json.dumps(tokenizer.to_dict()), {}).release()
    save_checkpoint(run_dir, 0, GPT(model_config), {}, {}, is_best=True)
    rewrite_json(run_dir / "config.json", lambda saved: saved["model"].update(block_size=10**12))
    with address_space_capped(), pytest.raises(ConfigError, match=r"config\.json the run's own"):
        load_model_from_run(run_dir)


# ----------------------------------------------------------------------------------------------
# Prepared data whose meta.json lies, or whose ids are past the vocabulary


def set_first_token(path: Path, value: int) -> None:
    tokens = np.memmap(path, dtype="<u2", mode="r+")
    tokens[0] = value
    tokens.flush()


DATA_LIES: dict[str, tuple[Callable[[Path], object], str]] = {
    "an id past the vocabulary": (lambda d: set_first_token(d / "train.bin", 60000), "token id"),
    "a smaller vocab_size": (
        lambda d: rewrite_json(d / "meta.json", lambda m: m.update(vocab_size=10)),
        "meta.json records a char tokenizer of 10",
    ),
    "uint32 for uint16 files": (
        lambda d: rewrite_json(
            d / "meta.json",
            lambda m: m.update(
                dtype="uint32", train_tokens=m["train_tokens"] // 2, val_tokens=m["val_tokens"] // 2
            ),
        ),
        "token id",
    ),
    "a dtype that is no token type": (
        lambda d: rewrite_json(d / "meta.json", lambda m: m.update(dtype="float64")),
        "float64",
    ),
    "a dtype that is a number": (
        lambda d: rewrite_json(d / "meta.json", lambda m: m.update(dtype=5)),
        "dtype",
    ),
    "more tokens than the file": (
        lambda d: rewrite_json(d / "meta.json", lambda m: m.update(train_tokens=10**9)),
        "meta.json says",
    ),
    "a count as text": (
        lambda d: rewrite_json(d / "meta.json", lambda m: m.update(val_tokens="many")),
        "unreadable",
    ),
    "meta.json linked to /dev/zero": (lambda d: make_endless(d / "meta.json", "link"), "regular"),
}


@pytest.mark.parametrize(("lie", "named"), DATA_LIES.values(), ids=DATA_LIES.keys())
def test_lying_prepared_data_is_refused_before_a_run_is_created(
    capsys, data_copy, tmp_path, lie, named
):
    lie(data_copy)
    with address_space_capped():
        code, _, err = run_cli(
            capsys, "train", "--data", data_copy, "--out", tmp_path / "r", *TINY, "--device", "cpu"
        )
    assert_one_line_error(code, err, named)
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# --out folders that hold someone else's files


def out_commands(run: Path, text: Path, out: Path) -> dict[str, list[object]]:
    return {
        "prepare": ["prepare", text, "--out", out],
        "train": ["train", "--data", text, "--out", out, *TINY, "--max_iters", "1"],
        "eval": ["eval", run, "--out", out],
        "attention": ["attention", run, "--prompt", "to be", "--out", out],
        "compare": ["compare", "baby-shakespeare", "--out", out, "--tokens", "1000"],
        "export": ["export", run, "--format", "hf", "--out", out],
        "import-hf": ["import-hf", run, "--out", out],
        "finetune": ["finetune", run, "--data", text, "--out", out],
    }


@pytest.mark.parametrize("command", out_commands(Path(), Path(), Path()).keys())
def test_a_folder_of_someone_elses_files_is_never_written_into(
    capsys, trained_run, small_text_file, tmp_path, command
):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    argv = out_commands(trained_run, small_text_file, out)[command]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "not empty", "thesis.tex")
    assert os.listdir(out) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "three years of work"


@pytest.mark.parametrize("command", ["prepare", "eval"])
def test_an_out_that_is_a_file_is_one_line_and_leaves_nothing(
    capsys, trained_run, small_text_file, tmp_path, command
):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    code, _, err = run_cli(capsys, *out_commands(trained_run, small_text_file, out)[command])
    assert_one_line_error(code, err, "is a file")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no work folder, no lock
    assert out.read_text() == "mine"


def test_prepare_out_dot_is_one_line(capsys, small_text_file, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "prepare", small_text_file, "--out", ".")
    assert_one_line_error(code, err, "not empty")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_prepare_removes_the_temporaries_a_killed_prepare_left(capsys, small_text_file, tmp_path):
    leftover = tmp_path / ".data.tmp-k1ll3d"
    leftover.mkdir()
    (leftover / "train.bin").write_bytes(b"\0" * 1000)
    code, _, err = run_cli(capsys, "prepare", small_text_file, "--out", tmp_path / "data")
    assert code == 0, err
    assert not leftover.exists()


# ----------------------------------------------------------------------------------------------
# Runs that end before their first checkpoint


def test_a_block_size_past_the_validation_split_fails_before_the_model_or_run_exist(
    capsys, small_text_file, tmp_path, monkeypatch
):
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(loop, "GPT", no_model)
    val_tokens = 4000  # the last tenth of the 40,000 characters
    code, _, err = run_cli(capsys, "train", "--data", small_text_file, "--out", tmp_path / "r",
                           *TINY, "--block_size", val_tokens)  # fmt: skip
    assert_one_line_error(code, err, "val split", f"--block_size {val_tokens - 1}")
    assert not (tmp_path / "r").exists()


def test_a_run_created_then_killed_is_resumed_from_step_0(small_text_file, tmp_path):
    start_run(tiny_config(small_text_file), tmp_path / "run")  # killed before fit
    assert (tmp_path / "run" / "run.json").exists()
    result = resume_run(tmp_path / "run").fit()
    assert (result.stop_reason, result.step) == ("completed", 2)


def test_sigterm_while_a_train_command_starts_exits_like_ctrl_c(
    capsys, small_text_file, tmp_path, monkeypatch
):
    def default_action(signum: int, frame: object) -> None:
        raise AssertionError("SIGTERM was not handled: it would have killed the process")

    def terminated(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    previous = signal.signal(signal.SIGTERM, default_action)
    monkeypatch.setattr(start, "start_run", terminated)
    try:
        code, _, err = run_cli(capsys, "train", "--data", small_text_file, "--out", tmp_path / "r")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err


def test_resume_removes_what_killed_writes_left(run_copy):
    checkpoints = run_copy / "checkpoints"
    (checkpoints / ".tmp-step-0000004-99999").mkdir()
    (checkpoints / ".tmp-step-0000004-99999" / "model.safetensors").write_bytes(b"\0" * 1000)
    (checkpoints / ".last.tmp-99999").symlink_to("step-0000004")
    (run_copy / ".config.json.tmp-abc123").write_text("{")
    resume_run(run_copy, {"max_iters": "2"})
    leftovers = [p.name for p in (*checkpoints.iterdir(), *run_copy.iterdir()) if ".tmp-" in p.name]
    assert leftovers == []


# ----------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, where the test may mount one (root); skipped otherwise."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small disk with")
    command = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or 'not root'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, leave: int) -> None:
    """Write `path` until its filesystem has about `leave` bytes free."""
    stats = os.statvfs(path.parent)
    size = max(0, stats.f_bavail * stats.f_frsize - leave)
    with contextlib.suppress(OSError), open(path, "wb") as handle:
        handle.write(b"\0" * size)


def test_a_full_disk_is_one_line_and_resume_frees_what_a_killed_write_left(
    small_disk, small_text_file
):
    run_dir = small_disk / "run"
    trainer = start_run(tiny_config(small_text_file, max_iters=4), run_dir)
    trainer.save(is_best=True)
    trainer.train_step()
    fill(small_disk / "filler", leave=64 << 10)
    with pytest.raises(CheckpointError) as error:
        trainer.save()
    message = str(error.value)
    assert "step-0000001" in message and "No space left on device" in message
    assert "the last checkpoint, step-0000000, is intact" in message
    assert not list((run_dir / "checkpoints").glob(temporary_name_pattern()))
    trainer.run_lock.release()

    # a write killed on a full disk leaves its temporary; the disk stays full without the filler
    (small_disk / "filler").unlink()
    leftover = run_dir / "checkpoints" / ".step-0000001.tmp-x1y2z3"
    older_leftover = run_dir / "checkpoints" / ".tmp-step-0000001-99999"  # tinygpt <= 0.1's name
    older_leftover.mkdir()
    leftover.mkdir()
    fill(leftover / "train_state.pt", leave=64 << 10)
    result = resume_run(run_dir).fit()
    assert (result.stop_reason, result.step) == ("completed", 4)
    assert not leftover.exists() and not older_leftover.exists()


# ----------------------------------------------------------------------------------------------
# Two processes at once


PREPARE_INTO_CACHE = (
    "import logging, sys\n"
    "from tinygpt.config import DataConfig\n"
    "from tinygpt.data.prepare import prepare_dataset\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "print(prepare_dataset(DataConfig(source=sys.argv[1], workers=1)).directory)\n"
)


def python(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_preparing_one_cache_entry_both_succeed(small_text_file, tmp_path):
    cache = {"TINYGPT_CACHE_DIR": str(tmp_path / "cache")}
    processes = [python("-c", PREPARE_INTO_CACHE, small_text_file, env=cache) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    directories = {out.strip() for out, _ in results}
    assert len(directories) == 1
    assert (Path(directories.pop()) / "meta.json").is_file()


def line_appears(stream: IO[str], fragment: str, seconds: float) -> bool:
    """Whether a line holding `fragment` comes within `seconds`: read on a thread, so that a
    process that never writes it fails the test instead of hanging it."""
    found = threading.Event()

    def read() -> None:
        for line in iter(stream.readline, ""):
            if fragment in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    return found.wait(seconds)


def test_a_second_process_waits_for_a_cache_entry_being_prepared(small_text_file, tmp_path):
    cache = tmp_path / "cache"
    config = DataConfig(source=str(small_text_file), workers=1)
    entry = cache / "prepared" / dataset_key(open_corpus(config, cache).fingerprint, config)
    lock = DirectoryLock(sibling_lock_file(entry))
    assert lock.try_acquire()
    try:
        env = {"TINYGPT_CACHE_DIR": str(cache)}
        process = python("-c", PREPARE_INTO_CACHE, small_text_file, env=env)
        assert process.stderr is not None
        waited = line_appears(process.stderr, "waiting for", seconds=120)
        assert waited and process.poll() is None  # it logged and blocks on the lock
    finally:
        lock.release()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert Path(out.strip()) == entry


def test_prepare_into_an_out_folder_being_written_is_refused(small_text_file, tmp_path):
    out = tmp_path / "data"
    with DirectoryLock(sibling_lock_file(out)) as lock:
        assert lock.try_acquire()
        process = python("-m", "tinygpt.cli", "prepare", small_text_file, "--out", out)
        _, err = process.communicate(timeout=300)
    assert_one_line_error(process.returncode, err, "being prepared", f"pid {os.getpid()}")
    assert not out.exists()


@pytest.mark.slow
def test_a_second_process_on_a_run_in_use_is_refused_in_one_line(run_copy):
    metrics = (run_copy / "metrics.jsonl").read_text()
    with lock_run(run_copy):
        process = python("-m", "tinygpt.cli", "train", "--resume", run_copy, "--max_iters", 4)
        _, err = process.communicate(timeout=300)
    assert_one_line_error(process.returncode, err, "in use", f"pid {os.getpid()}")
    assert (run_copy / "metrics.jsonl").read_text() == metrics
