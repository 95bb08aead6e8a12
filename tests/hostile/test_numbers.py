"""Out-of-range numbers on the command line, in a --config file and in a run's config.json:
each gets one line and exit 2, never a traceback, and nothing is created."""

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from tinygpt.cli import main

TRAIN = ["train", "--out", "{tmp}/r"]
RUN = "{tmp}/no-run"  # every number below is refused before a run is read

SEEDS = [
    ([*TRAIN, "--seed", "1e30"], ["seed=1000000000000000019884624838656", "2**63 - 1"]),
    ([*TRAIN, "--seed", str(2**64)], [f"seed={2**64}"]),
    ([*TRAIN, "--seed", str(2**63)], [f"seed={2**63}"]),
    ([*TRAIN, "--seed", "-1"], ["seed=-1"]),
    ([*TRAIN, "--sample_seed", "-5"], ["sample_seed=-5"]),
    (["sample", RUN, "--seed", str(2**64)], [f"--seed {2**64} must be a whole number from 0"]),
    (["sample", RUN, "--seed", "1e30"], ["--seed 1e30 must be"]),
    (["sample", RUN, "--seed", "-1"], ["--seed -1 must be"]),
    (["sample", RUN, "--seed", "0.5"], ["--seed='0.5' must be a whole number"]),
    (["chat", RUN, "--seed", str(2**64)], [f"--seed {2**64}"]),
]
PORTS = [
    (["serve", RUN, "--port", "99999"], ["--port 99999 must be at most 65535"]),
    (["serve", RUN, "--port", "65536"], ["--port 65536 must be at most 65535"]),
    (["serve", RUN, "--port", "-1"], ["--port -1 must be at least 0"]),
    (["serve", RUN, "--port", "http"], ["--port='http' must be a whole number"]),
]
SIZES = [
    ([*TRAIN, "--n_embd", "1000000", "--n_head", "1"], ["n_embd=1000000", "GiB, more than"]),
    ([*TRAIN, "--block_size", "1e12"], ["block_size=1000000000000", "GiB, more than"]),
    ([*TRAIN, "--n_layer", "1e9"], ["n_layer=1000000000", "GiB"]),
    ([*TRAIN, "--vocab_size", "1e13"], ["vocab_size=10000000000000", "GiB, more than"]),
    ([*TRAIN, "--position", "rope", "--block_size", "1e12"], ["GiB, more than"]),
    ([*TRAIN, "--block_size", "0"], ["block_size=0 must be greater than 0"]),
    ([*TRAIN, "--n_embd", "-8"], ["n_embd=-8"]),
    ([*TRAIN, "--n_layer", "2.5"], ["n_layer='2.5' must be a whole number"]),
]
BATCHES = [
    ([*TRAIN, "--batch_size", "0"], ["batch_size=0 must be greater than 0"]),
    ([*TRAIN, "--batch-size", "-1"], ["batch_size=-1"]),
    ([*TRAIN, "--gradient_accumulation_steps", "0"], ["gradient_accumulation_steps=0"]),
    (["eval", RUN, "--batch-size", "0"], ["--batch-size 0 must be at least 1"]),
    (["eval", RUN, "--batch_size", "-3"], ["--batch-size -3 must be at least 1"]),
    (["eval", RUN, "--max-dialogs", "-1"], ["--max-dialogs -1 must be at least 0"]),
    (["serve", RUN, "--max-batch", "0"], ["--max-batch 0 must be at least 1"]),
]
TOKENS = [
    (["sample", RUN, "--max-new-tokens", "-1"], ["--max-new-tokens -1 must be at least 0"]),
    (["sample", RUN, "--min-new-tokens", "-1"], ["--min-new-tokens -1 must be at least 0"]),
    (["sample", RUN, "--num-beams", "0"], ["--num-beams 0 must be at least 1"]),
    (["sample", RUN, "--num-samples", "0"], ["--num-samples 0 must be at least 1"]),
    (["sample", RUN, "--top-k", "-1"], ["--top-k -1 must be at least 0"]),
    (["chat", RUN, "--max-new-tokens", "0"], ["--max-new-tokens 0 must be at least 1"]),
    ([*TRAIN, "--max_iters", "0"], ["max_iters=0 must be greater than 0"]),
    ([*TRAIN, "--epochs", "-1"], ["epochs=-1.0 must not be negative"]),
    ([*TRAIN, "--warmup_iters", "-1"], ["warmup_iters=-1 must not be negative"]),
    ([*TRAIN, "--warmup_iters", "500", "--max_iters", "100"], ["warmup_iters=500 is not below"]),
]
REALS = [
    (["sample", RUN, "--temperature", "nan"], ["--temperature='nan' must be a finite number"]),
    (["sample", RUN, "--temperature", "inf"], ["must be a finite number"]),
    (["sample", RUN, "--temperature", "-1"], ["--temperature -1 must be at least 0"]),
    (["chat", RUN, "--top-p", "0"], ["--top-p 0 must be greater than 0"]),
    (["sample", RUN, "--top_p", "1.5"], ["--top-p 1.5 must be at most 1"]),
    (["sample", RUN, "--repetition-penalty", "0"], ["--repetition-penalty 0 must be greater"]),
    (["sample", RUN, "--length-penalty=-inf"], ["must be a finite number"]),
    ([*TRAIN, "--learning_rate", "nan"], ["learning_rate='nan' must be a finite number"]),
    ([*TRAIN, "--dropout", "1"], ["dropout=1.0 must be in [0, 1)"]),
]
COMPARE = [
    (["compare", "gptiny", "--out", "{tmp}/c", "--seeds", "0", "--tokens", "1e3"], ["at least 1"]),
    (["compare", "gptiny", "--out", "{tmp}/c", "--minutes", "0"], ["--minutes 0 must be greater"]),
    (["compare", "gptiny", "--out", "{tmp}/c", "--minutes", "inf"], ["finite"]),
    (["compare", "gptiny", "--out", "{tmp}/c", "--tokens", "-5"], ["--tokens -5 must be greater"]),
]


@pytest.mark.parametrize(
    ("argv", "fragments"), SEEDS + PORTS + SIZES + BATCHES + TOKENS + REALS + COMPARE
)
def test_an_out_of_range_number_is_one_line_and_creates_nothing(capsys, tmp_path, argv, fragments):
    code, _, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert_one_line_error(code, err, *fragments)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_text_file) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    argv = ["train", "--data", small_text_file, "--out", run_dir, *TINY]
    assert main([str(a) for a in [*argv, "--max_iters", "2", "--eval_interval", "2"]]) == 0
    return run_dir


@pytest.mark.parametrize("field", ["block_size", "n_embd", "n_layer"])
@pytest.mark.parametrize(
    "command", [["sample"], ["chat"], ["eval"], ["serve"], ["attention", "--prompt", "x"]]
)
def test_a_run_whose_config_json_asks_for_too_much_memory_is_one_line(
    capsys, tmp_path, tiny_run, field, command
):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, symlinks=True)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"].update({field: 10**12, "n_head": 1})
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, command[0], run_dir, *command[1:])
    assert_one_line_error(code, err, f"{field}=1000000000000", "GiB, more than")


def test_a_config_file_asking_for_too_much_memory_is_one_line(capsys, tmp_path):
    (tmp_path / "big.toml").write_text("[model]\nblock_size = 1_000_000_000_000\n")
    code, _, err = run_cli(
        capsys, "train", "--config", tmp_path / "big.toml", "--out", tmp_path / "r"
    )
    assert_one_line_error(code, err, "block_size=1000000000000", "GiB, more than")
    assert not (tmp_path / "r").exists()


def test_an_allocation_the_estimate_misses_is_one_line(
    capsys, monkeypatch, tmp_path, small_text_file
):
    """The shape check trusts free memory; when the allocator still fails, one line."""
    monkeypatch.setattr("tinygpt.runtime.free_memory", lambda device: 2**80)
    argv = ["--n_embd", "200000", "--n_head", "1", "--n_layer", "1", "--block_size", "8"]
    code, _, err = run_cli(
        capsys, "train", "--data", small_text_file, "--out", tmp_path / "r", *argv
    )
    assert_one_line_error(code, err, "out of memory", "GiB asked of the CPU allocator")
