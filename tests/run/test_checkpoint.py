import os
from pathlib import Path

import pytest
import torch
from cli_helpers import saved_step_names

from tinygpt import atomic_files
from tinygpt.atomic_files import temporary_name_pattern
from tinygpt.config_parsing import apply_overrides
from tinygpt.errors import CheckpointError
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.load import load_checkpoint, load_weights_into
from tinygpt.train.start import start_run


@pytest.fixture
def trainer(tiny_run_config, tmp_path):
    return start_run(tiny_run_config, tmp_path / "run")


def test_checkpoint_round_trips_weights_and_train_state(trainer):
    trainer.train_step()
    save_checkpoint(trainer.run_dir, 1, trainer.model, trainer.train_state(), {}, is_best=True)
    loaded = load_checkpoint(trainer.run_dir, "last")
    assert loaded.step == 1
    assert "lm_head.weight" not in loaded.model_state  # tied: stored once
    fresh = start_run_copy(trainer)
    load_weights_into(fresh.model, loaded.model_state)
    for (name, a), b in zip(
        trainer.model.state_dict().items(), fresh.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.train_state["progress"]["step"] == 1
    assert (trainer.run_dir / "checkpoints" / "best").resolve() == loaded.directory


def start_run_copy(trainer):
    from tinygpt.data.prepare import prepare_dataset
    from tinygpt.train.loop import Trainer

    return Trainer(trainer.config, trainer.run_dir, prepare_dataset(trainer.config.data))


def test_only_the_checkpoints_named_by_last_and_best_are_kept(trainer):
    checkpoints = trainer.run_dir / "checkpoints"
    assert saved_step_names(trainer, 2) == ["step-0000000", "step-0000002"]
    assert os.readlink(checkpoints / "best") == "step-0000000"
    assert os.readlink(checkpoints / "last") == "step-0000002"


def test_keep_checkpoints_also_keeps_the_newest(tiny_run_config, tmp_path):
    trainer = start_run(apply_overrides(tiny_run_config, {"keep_checkpoints": "2"}), tmp_path / "r")
    names = saved_step_names(trainer, 4)
    assert names == ["step-0000000", "step-0000003", "step-0000004"]
    assert os.readlink(trainer.run_dir / "checkpoints" / "best") == "step-0000000"


def test_a_crash_in_the_middle_of_a_write_leaves_the_previous_checkpoint_loadable(
    trainer, monkeypatch
):
    trainer.save()
    trainer.train_step()

    def crash(*args, **kwargs):
        raise OSError("simulated power cut")

    monkeypatch.setattr(atomic_files, "fsync_directory", crash)  # as publish_directory renames
    with pytest.raises(CheckpointError, match=r"step-0000001.*power cut.*step-0000000, is intact"):
        trainer.save()
    monkeypatch.undo()
    assert load_checkpoint(trainer.run_dir, "last").step == 0
    # its space is freed
    assert not list((trainer.run_dir / "checkpoints").glob(temporary_name_pattern()))
    trainer.save()
    assert load_checkpoint(trainer.run_dir, "last").step == 1


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
@pytest.mark.parametrize("file_name", ["model.safetensors", "train_state.pt"])
def test_a_damaged_checkpoint_is_refused(trainer, damage, file_name):
    directory = trainer.save()
    path = directory / file_name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=r"corrupted|missing"):
        load_checkpoint(trainer.run_dir, "last")


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a tinygpt run"):
        load_checkpoint(tmp_path / "foreign")


def test_train_state_is_loaded_without_executing_pickled_code(trainer, monkeypatch):
    directory = trainer.save()
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    load_checkpoint(trainer.run_dir, "last")
    assert calls and all(k.get("weights_only") is True for k in calls)
    assert directory.name == "step-0000000"
