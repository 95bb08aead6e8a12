import json
import re

import pytest
from cli_helpers import assert_one_line_error, run_cli
from finetune.conftest import TINY_BASE

from tinygpt.cli import main


def field_flags(fields: dict[str, str]) -> list[str]:
    return [part for name, value in fields.items() for part in (f"--{name}", value)]


def test_finetune_then_sample_and_eval_the_new_run(
    capsys, base_run, new_text, tmp_path, finetune_fields
):
    out_dir = tmp_path / "tuned"
    code, out, err = run_cli(
        capsys,
        "finetune",
        base_run,
        "--data",
        new_text,
        "--out",
        out_dir,
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--lora-targets",
        "qkv,attn.proj,fc",
        *field_flags(finetune_fields),
    )
    assert code == 0, err
    summary = re.search(r"trainable ([\d,]+) of ([\d,]+) parameters \((\d+\.\d\d)%\)", out)
    assert summary, out
    trainable, total = (int(summary.group(i).replace(",", "")) for i in (1, 2))
    # rank 4 on qkv (32 -> 96), attn.proj (32 -> 32), fc (32 -> 128) of 2 blocks
    assert trainable == 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128)) and trainable < total
    assert "LoRA r=4 on 6 modules: blocks.{0,1}.attn.qkv, blocks.{0,1}.attn.proj, " in out
    assert "finished at step 30" in out and f"tinygpt sample {out_dir}" in out
    assert (out_dir / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out_dir / "config.json").read_text())
    assert config["train"]["max_iters"] == 30
    assert config["train"]["lr_decay_iters"] == 0  # the base run's 2000 would not decay at all
    assert config["data"]["source"] == str((out_dir / "data").resolve())

    code, out, err = run_cli(
        capsys, "sample", out_dir, "--prompt", "All:", "--max-new-tokens", "20", "--seed", "1"
    )
    assert code == 0, err
    assert out.startswith("All:") and len(out) == len("All:") + 20 + 1

    code, out, err = run_cli(capsys, "eval", out_dir, "--out", tmp_path / "eval")
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["loss"] > 0


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (
            ["--lora-targets", "q_proj,v_proj"],
            [
                "q_proj,v_proj match no Linear module; give names such as qkv, proj, fc, lm_head",
                "blocks.{0,1}.attn.qkv",
                "blocks.{0,1}.mlp.fc",
            ],
        ),
        (["--lora-r", "0"], ["--lora-r 0 must be greater than 0"]),
        (["--lora-r", "two"], ["--lora-r", "invalid int value"]),
        (["--tokenizer", "gpt2"], ["--tokenizer", "base run's tokenizer"]),
        (["--optimizer", "muon"], ["--optimizer muon", "LoRA adapters train with AdamW"]),
    ],
)
def test_mistakes_are_one_line_errors(capsys, base_run, new_text, tmp_path, flags, fragments):
    code, _, err = run_cli(
        capsys, "finetune", base_run, "--data", new_text, "--out", tmp_path / "t", *flags
    )
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "t").exists()


def test_a_missing_base_run_is_a_one_line_error(capsys, new_text, tmp_path):
    code, _, err = run_cli(
        capsys, "finetune", tmp_path / "nope", "--data", new_text, "--out", tmp_path / "t"
    )
    assert_one_line_error(code, err, "nope", "does not exist")


def test_finetune_needs_data(capsys, base_run, tmp_path):
    code, _, err = run_cli(capsys, "finetune", base_run, "--out", tmp_path / "t")
    assert_one_line_error(code, err, "--data SOURCE")


def test_an_occupied_out_is_refused(capsys, base_run, new_text, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("mine")
    code, _, err = run_cli(
        capsys, "finetune", base_run, "--data", new_text, "--out", tmp_path / "t"
    )
    assert_one_line_error(code, err, "not empty")


def test_a_base_run_trained_with_muon_finetunes_its_adapters_with_adamw(
    capsys, small_text_file, new_text, tmp_path
):
    base = tmp_path / "muon-base"
    argv = ["train", "--data", small_text_file, "--out", base, *TINY_BASE, "--optimizer", "muon"]
    assert main([str(a) for a in argv]) == 0
    code, _, err = run_cli(
        capsys, "finetune", base, "--data", new_text, "--out", tmp_path / "t", "--max_iters", "2"
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["train"]["optimizer"] == "adamw"
