"""`tinygpt train --init-from`: a new run from a run's or a transformers model's weights, with
their shape and tokenizer, a fresh optimizer and its own text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, assert_one_line_error, run_cli

from tinygpt.run.load import load_checkpoint, load_model_from_run

SHORT = [*TINY, "--eval_interval", "10", "--warmup_iters", "0"]


def train(capsys, *argv: object) -> None:
    code, _, err = run_cli(capsys, "train", *argv)
    assert code == 0, err


def evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for line in lines if (record := json.loads(line))["kind"] == "eval"]


@pytest.fixture
def source_run(capsys, tmp_path, small_text_file) -> Path:
    run_dir = tmp_path / "source"
    train(capsys, "--out", run_dir, "--data", small_text_file, *SHORT, "--max_iters", 30,
          "--learning_rate", 0.01)  # fmt: skip
    return run_dir


def test_step_0_loss_is_the_source_loss_on_the_same_text(capsys, tmp_path, source_run,
                                                           small_text_file):  # fmt: skip
    new = tmp_path / "new"
    train(capsys, "--init-from", source_run, "--out", new, "--data", small_text_file, *SHORT,
          "--max_iters", 20, "--learning_rate", 3e-3)  # fmt: skip
    source_best = min(evals(source_run), key=lambda record: record["val_loss"])
    first = evals(new)[0]
    assert first["step"] == 0
    # the same text, seed and evaluation batches: the very numbers the source's best step had
    assert (first["train_loss"], first["val_loss"]) == (
        source_best["train_loss"],
        source_best["val_loss"],
    )
    assert evals(new)[-1]["val_loss"] != first["val_loss"]  # every weight trains on
    info = json.loads((new / "run.json").read_text())
    assert info["init_from"]["run"] == str(source_run.resolve())
    assert info["init_from"]["step"] == source_best["step"]
    config = json.loads((new / "config.json").read_text())
    assert config["train"]["learning_rate"] == 3e-3  # the new recipe, a fresh schedule
    assert (new / "data" / "train.bin").is_file()  # its text, in the source's tokens
    # a run like any other: it resumes
    code, _, err = run_cli(capsys, "train", "--resume", new, "--max_iters", 30)
    assert code == 0, err
    assert load_checkpoint(new, "last").step == 30


def test_a_transformers_gpt2_trains_on_and_samples(capsys, tmp_path, source_run, small_text_file):
    """A GPT2LMHeadModel made and saved by transformers, with a tokenizer transformers saved
    (the source run's, exported, so that it is one tinygpt reads)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    code, _, err = run_cli(capsys, "export", source_run, "--out", tmp_path / "exported")
    assert code == 0, err
    hf_dir = tmp_path / "hf"
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "exported")
    hf_tokenizer.save_pretrained(hf_dir)
    torch.manual_seed(0)
    hf_config = GPT2Config(vocab_size=len(hf_tokenizer), n_positions=32, n_embd=32, n_layer=2,
                           n_head=2, bos_token_id=None, eos_token_id=None)  # fmt: skip
    hf_model = GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(hf_dir)

    run_dir = tmp_path / "run"
    train(capsys, "--init-from", hf_dir, "--out", run_dir, "--data", small_text_file,
          "--block_size", 32, "--batch_size", 4, "--eval_iters", 2, "--max_iters", 10,
          "--eval_interval", 10, "--warmup_iters", 0, "--keep_checkpoints", 2)  # fmt: skip
    step_0, tokenizer, _ = load_model_from_run(run_dir, "step-0000000")
    ids = tokenizer.encode("First Citizen: speak, speak.")
    with torch.no_grad():
        difference = step_0(torch.tensor([ids])) - hf_model(torch.tensor([ids])).logits
    assert difference.abs().max().item() < 1e-4  # it started from the model's own weights
    assert evals(run_dir)[-1]["val_loss"] < evals(run_dir)[0]["val_loss"]
    code, out, err = run_cli(capsys, "sample", run_dir, "--prompt", "First", "--max-new-tokens", 8)
    assert code == 0, err
    assert out.startswith("First") and len(out.strip()) > len("First")


def test_a_shape_override_is_one_line_and_makes_no_run(capsys, tmp_path, source_run):
    code, _, err = run_cli(
        capsys, "train", "--init-from", source_run, "--out", tmp_path / "new", "--n_layer", 4
    )
    assert_one_line_error(code, err, "--n_layer 4", "keeps its model shape", "n_layer 2")
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(
        capsys, "train", "--init-from", source_run, "--out", tmp_path / "new", "--tokenizer", "bpe"
    )
    assert_one_line_error(code, err, "--tokenizer bpe", "tokenizes with its tokenizer")
    assert not (tmp_path / "new").exists()


def test_what_is_neither_a_run_nor_a_model_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "train", "--init-from", tmp_path, "--out", tmp_path / "new", *SHORT
    )
    assert_one_line_error(code, err, "not a tinygpt run", "nor a Hugging Face model")


def test_init_from_with_resume_is_refused(capsys, tmp_path, source_run):
    code, _, err = run_cli(capsys, "train", "--resume", source_run, "--init-from", source_run)
    assert_one_line_error(code, err, "--resume continues a run as it was")


def test_init_from_under_torchrun_is_one_line(capsys, tmp_path, source_run, monkeypatch):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    code, _, err = run_cli(capsys, "train", "--init-from", source_run, "--out", tmp_path / "new")
    assert_one_line_error(code, err, "--init-from starts a run in one process", "--resume")
    assert not (tmp_path / "new").exists()
