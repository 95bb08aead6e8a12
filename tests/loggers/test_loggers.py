"""`train --logger tensorboard|wandb`: what a run logs reads back through each tool's own
reader, matching metrics.jsonl; drawing the samples leaves training exact."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from tinygpt.loggers import open_loggers

TRAIN = [*TINY, "--max_iters", "20", "--eval_interval", "10", "--sample.max_new_tokens", "40"]


def metrics_of(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for line in lines if (record := json.loads(line))["kind"] == kind]


def train(capsys, run_dir: Path, *flags: str) -> None:
    code, _, err = run_cli(capsys, "train", "--out", run_dir, *TRAIN, *flags)
    assert code == 0, err


def test_tensorboard_events_hold_the_metrics_and_a_sample_per_evaluation(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    # a high learning rate: the weights change enough in 20 steps to change the sample
    train(
        capsys, run_dir, "--logger", "tensorboard", "--learning_rate", "0.02", "--warmup_iters", "0"
    )
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()

    train_records, eval_records = metrics_of(run_dir, "train"), metrics_of(run_dir, "eval")
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in train_records]
    val = [(e.step, e.value) for e in events.Scalars("eval/val_loss")]
    assert val == [(r["step"], pytest.approx(r["val_loss"])) for r in eval_records]
    for tag in ("train/learning_rate", "speed/tokens_per_second", "speed/mfu"):
        assert len(events.Scalars(tag)) == len(train_records)
    samples = events.Tensors("sample/text_summary")
    assert [s.step for s in samples] == [0, 10, 20]
    texts = [s.tensor_proto.string_val[0].decode() for s in samples]
    assert all(len(text.strip()) > 20 for text in texts)
    assert texts[0] != texts[-1]  # drawn from the weights of each evaluation


def test_drawing_samples_leaves_training_exact(capsys, tmp_path):
    """Samples draw from their own generator: with dropout (which draws from the training
    stream) the losses are the same with and without the logger."""
    train(capsys, tmp_path / "plain", "--dropout", "0.2")
    train(capsys, tmp_path / "logged", "--dropout", "0.2", "--logger", "tensorboard")

    def losses(run: str) -> list[tuple[float, float]]:
        return [(r["train_loss"], r["val_loss"]) for r in metrics_of(tmp_path / run, "eval")]

    assert losses("plain") == losses("logged")


def test_wandb_offline_run_holds_the_history_and_config(capsys, tmp_path, monkeypatch):
    import wandb_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    train(capsys, run_dir, "--logger", "wandb")
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert run_file.name == f"run-{run_id}.wandb"

    rows = wandb_records.history(run_file)
    logged_val = [(row["_step"], row["eval/val_loss"]) for row in rows if "eval/val_loss" in row]
    assert logged_val == [
        (r["step"], pytest.approx(r["val_loss"])) for r in metrics_of(run_dir, "eval")
    ]
    logged_loss = [(row["_step"], row["train/loss"]) for row in rows if "train/loss" in row]
    assert logged_loss == [
        (r["step"], pytest.approx(r["loss"])) for r in metrics_of(run_dir, "train")
    ]
    assert sum("sample/path" in row for row in rows) == 3
    config = wandb_records.config(run_file)
    assert config["train"]["logger"] == "wandb" and config["model"]["n_embd"] == 32

    # a resumed run goes on in the same W&B run
    code, _, err = run_cli(capsys, "train", "--resume", run_dir, "--max_iters", "30")
    assert code == 0, err
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(path.name.endswith(run_id) for path in runs)


def test_a_missing_logger_package_is_one_line_and_makes_no_run(capsys, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else find_spec(name, *a),
    )
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", *TRAIN, "--logger", "wandb")
    assert_one_line_error(code, err, "--logger wandb", "pip install 'tinygpt[wandb]'")
    assert not (tmp_path / "run").exists()


def test_wandb_that_cannot_start_is_one_line(capsys, tmp_path, monkeypatch):
    import wandb
    import wandb.errors

    def refuse(**_: object) -> None:
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", *TRAIN, "--logger", "wandb")
    assert_one_line_error(code, err, "api_key not configured", "WANDB_MODE=offline", "--resume")
    # what the error says to do works: the run it made resumes, logging offline
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--logger", "wandb")
    assert code == 0, err
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_only_rank_0_logs():
    config = SimpleNamespace(train=SimpleNamespace(logger="tensorboard"))
    other_rank = SimpleNamespace(config=config, context=SimpleNamespace(is_main=False))
    assert open_loggers(other_rank) == []  # type: ignore[arg-type]
