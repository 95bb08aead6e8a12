"""`tinygpt presets`, `prepare`, `train` and `plot`."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli, tinygpt_command

from tinygpt.config_parsing import resolve_train_config
from tinygpt.errors import ConfigError


def test_presets_lists_one_line_each(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "baby-shakespeare",
        "shakespeare-fast",
        "gptiny",
        "tinygpt-char",
        "tinystories-small",
        "dialog-chatbot",
        "baseline-tinystories",
        "gqa-tinystories",
        "hybrid-tinystories",
        "modern-tinystories",
        "tinystories-fast",
    ]


def test_plot_writes_a_png(capsys, trained_run):
    code, out, _ = run_cli(capsys, "plot", trained_run)
    assert code == 0
    png = Path(out.strip())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_with_a_changed_model_shape_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "train", "--resume", trained_run, "--n_embd", "64")
    assert_one_line_error(code, err, "model shape", "n_embd 32 -> 64")


def test_training_into_an_existing_run_changes_nothing(capsys, trained_run, small_text_file):
    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "train", "--data", small_text_file, "--out", trained_run)
    assert_one_line_error(code, err, "already holds a run")
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before


def test_config_file_sits_between_preset_and_flags(capsys, tmp_path, small_text_file):
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[data]\nsource = "{small_text_file}"\n[train]\nmax_iters = 4\n'
        "eval_interval = 2\nlearning_rate = 0.002\n"
    )
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        toml,
        "--out",
        tmp_path / "r",
        *TINY,
        "--learning_rate",
        "0.003",
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train"]["max_iters"] == 4  # from the file
    assert saved["train"]["learning_rate"] == 0.003  # the flag wins
    assert saved["model"]["n_embd"] == 32 and saved["preset"] == "baby-shakespeare"


def start_endless_training(run_dir: Path, text: Path, eval_interval: int) -> subprocess.Popen:
    command = tinygpt_command(
        "train", "--data", text, "--out", run_dir, *TINY,
        "--max_iters", 100_000, "--eval_interval", eval_interval,
    )  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until_logged(run_dir: Path, step: int, timeout: float = 120) -> None:
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while not (metrics.exists() and f'"step": {step},' in metrics.read_text()):
        assert time.monotonic() < deadline, f"step {step} was never logged"
        time.sleep(0.05)


def last_checkpoint_step(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())["step"]


def resume_to(run_dir: Path, max_iters: int) -> subprocess.CompletedProcess:
    command = tinygpt_command("train", "--resume", run_dir, "--max_iters", max_iters)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes_the_run(tmp_path, small_text_file):
    """The real binary: SIGINT mid-run saves a checkpoint and exits 130; --resume completes."""
    run_dir = tmp_path / "run"
    process = start_endless_training(run_dir, small_text_file, eval_interval=50)
    wait_until_logged(run_dir, 60)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "resume with: tinygpt train --resume" in out
    step = last_checkpoint_step(run_dir)
    assert step >= 60  # saved where it stopped, not at the last evaluation (50)
    resumed = resume_to(run_dir, step + 20)
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished at step {step + 20}" in resumed.stdout


@pytest.mark.slow
def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(tmp_path, small_text_file):
    run_dir = tmp_path / "run"
    process = start_endless_training(run_dir, small_text_file, eval_interval=20)
    wait_until_logged(run_dir, 70)
    process.kill()
    process.communicate()
    step = last_checkpoint_step(run_dir)
    assert step >= 60 and step % 20 == 0
    resumed = resume_to(run_dir, step + 5)
    assert resumed.returncode == 0, resumed.stderr


def test_prepare_then_train_and_sample_with_a_trained_bpe(capsys, tmp_path, small_text_file):
    data = tmp_path / "prepared"
    code, out, err = run_cli(capsys, "prepare", small_text_file, "--out", data,
                             "--tokenizer", "bpe", "--tokenizer_vocab_size", "400")  # fmt: skip
    assert code == 0, err
    assert "train with: tinygpt train --data" in out
    assert {p.name for p in data.iterdir()} >= {"train.bin", "val.bin", "tokenizer.json"}
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--tokenizer", "bpe", "--out",
                           run_dir, *TINY, "--max_iters", "4", "--eval_interval", "2")  # fmt: skip
    assert code == 0, err
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["vocab_size"] == 400
    code, out, err = run_cli(
        capsys, "sample", run_dir, "--prompt", "KING", "--max-new-tokens", "20"
    )
    assert code == 0 and out.startswith("KING"), err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--tokenizer", "wordpiece"], ["tokenizer='wordpiece'"]),
        (["--tokenizer", "bpe", "--tokenizer_vocab_size", "10"], ["tokenizer_vocab_size=10"]),
        (["--text_field", "body"], ["body"]),
    ],
)
def test_bad_prepare_input_exits_2_with_one_line(capsys, tmp_path, argv, fragments):
    source = tmp_path / "records.jsonl"
    source.write_text('{"text": "hello there"}\n{"text": "general kenobi"}\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "prepare", source, "--out", tmp_path / "out", *argv)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_epochs_and_max_iters_given_together_conflict(capsys, tmp_path):
    argv = ["train", "--out", tmp_path / "r", "--epochs", "2", "--max_iters", "10"]
    assert_one_line_error(*run_cli(capsys, *argv)[::2], "both epochs=2 and max_iters=10")
    assert not (tmp_path / "r").exists()


def test_resume_refuses_epochs(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path, "--epochs", "3")
    assert_one_line_error(code, err, "give --max_iters")


def test_the_memory_check_counts_fsdps_shards(monkeypatch):
    """Under torchrun, FSDP keeps a quarter of the training state on each of 4 ranks."""
    config = resolve_train_config("gptiny", None, {"device": "cpu"})
    elements = config.model.tensor_elements()
    monkeypatch.setattr("tinygpt.runtime.free_memory", lambda device: 8 * elements)  # < 16 B
    monkeypatch.setenv("WORLD_SIZE", "4")
    from tinygpt.train.start import check_training_fits

    check_training_fits(resolve_train_config("gptiny", None, {"distributed": "fsdp"}))
    with pytest.raises(ConfigError, match="GiB, more than"):
        check_training_fits(config)  # ddp: every rank holds it all
