"""Training under torchrun, on the CPU with gloo and 2 processes, against one process.

One chain of runs serves the tests (a torchrun start costs ~10 s on 2 cores): 2 DDP ranks to
step 2, resumed as 2 FSDP ranks with gradient checkpointing to step 4, resumed on 1 process to
step 6; beside it one process with the same global batch does the same three stages. Dropout is
off and everything runs in fp32, so the two agree to float rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tinygpt.cli import main
from tinygpt.config_parsing import resolve_train_config
from tinygpt.data.memmap import BatchSampler
from tinygpt.run.load import load_checkpoint
from tinygpt.run.metrics import read_metrics
from tinygpt.train.start import resume_run, start_run

FIELDS = {
    "device": "cpu",
    "dtype": "float32",
    "block_size": 16,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "dropout": 0.0,
    "batch_size": 8,  # global: 4 rows on each of 2 ranks
    "gradient_accumulation_steps": 2,
    "warmup_iters": 1,
    "learning_rate": 3e-3,
    "min_lr": 3e-4,
    "eval_interval": 2,
    "eval_iters": 2,
    "log_interval": 1,
    "max_iters": 2,
}
TOLERANCE = 1e-5


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "tinygpt.cli", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def flags(fields: dict[str, Any]) -> list[str]:
    return [word for name, value in fields.items() for word in (f"--{name}", str(value))]


def state_at(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir, "last").model_state


def assert_close_states(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=TOLERANCE)


def evals(run_dir: Path) -> list[tuple[int, float, float]]:
    return [
        (r["step"], r["train_loss"], r["val_loss"])
        for r in read_metrics(run_dir)
        if r["kind"] == "eval"
    ]


@pytest.fixture(scope="module")
def reference(small_text_file, tmp_path_factory, isolated_cache) -> dict[str, Any]:
    """One process, global batch 8, the three stages of the distributed chain, configured as
    `tinygpt train` configures it (the default preset under the flags)."""
    run_dir = tmp_path_factory.mktemp("single") / "run"
    config = resolve_train_config(None, None, {"source": str(small_text_file), **FIELDS})
    start_run(config, run_dir).fit()
    states = {2: state_at(run_dir)}
    for step in (4, 6):
        resume_run(run_dir, {"max_iters": step}).fit()
        states[step] = state_at(run_dir)
    return {"dir": run_dir, "states": states}


@pytest.fixture(scope="module")
def ddp_run(reference, small_text_file, tmp_path_factory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun("--out", str(run_dir), "--data", str(small_text_file), *flags(FIELDS))
    assert done.returncode == 0, done.stderr[-3000:]
    listing = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    return {"dir": run_dir, "state": state_at(run_dir), "stderr": done.stderr, "listing": listing}


@pytest.fixture(scope="module")
def fsdp_run(ddp_run) -> dict[str, Any]:
    run_dir = ddp_run["dir"]
    fields = {"max_iters": 4, "distributed": "fsdp", "gradient_checkpointing": "true"}
    done = torchrun("--resume", str(run_dir), *flags(fields))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"dir": run_dir, "state": state_at(run_dir), "stderr": done.stderr}


@pytest.mark.slow  # torchrun: two processes, ~10 s a start on 2 cores
def test_two_ranks_of_batch_b_train_like_one_rank_of_batch_2b(reference, ddp_run):
    assert_close_states(ddp_run["state"], reference["states"][2])
    expected, actual = evals(reference["dir"])[:2], evals(ddp_run["dir"])[:2]
    assert [e[0] for e in actual] == [0, 2]
    np.testing.assert_allclose(np.array(actual), np.array(expected), rtol=0, atol=TOLERANCE)


@pytest.mark.slow  # torchrun: two processes, ~10 s a start on 2 cores
def test_the_checkpoint_holds_the_plain_model_and_optimizer(reference, ddp_run):
    checkpoint = load_checkpoint(ddp_run["dir"], "last")
    single = load_checkpoint(reference["dir"], "last")
    assert not any(name.startswith("module.") for name in checkpoint.model_state)
    assert "lm_head.weight" not in checkpoint.model_state  # tied, stored once as in one process
    saved, plain = checkpoint.train_state["optimizer"], single.train_state["optimizer"]
    assert saved["state"].keys() == plain["state"].keys()
    assert len(checkpoint.train_state["rng_torch_ranks"]) == 2


@pytest.mark.slow  # torchrun: two processes, ~10 s a start on 2 cores
def test_only_rank_zero_writes_files_metrics_and_logs(ddp_run):
    assert ddp_run["listing"] == [
        ".lock",  # rank 0's lock on the run (the other ranks take none)
        "checkpoints",
        "checkpoints/best",
        "checkpoints/last",
        "checkpoints/step-0000002",
        "checkpoints/step-0000002/meta.json",
        "checkpoints/step-0000002/model.safetensors",
        "checkpoints/step-0000002/train_state.pt",
        "config.json",
        "metrics.jsonl",
        "run.json",
        "tokenizer.json",
    ]
    lines = (ddp_run["dir"] / "metrics.jsonl").read_text().splitlines()
    steps = [(r["kind"], r["step"]) for r in map(json.loads, lines)]
    assert len(steps) == len(set(steps))
    assert ddp_run["stderr"].count("step 2 | train") == 1  # rank 1 logs nothing at INFO


@pytest.mark.slow  # torchrun: two processes, ~10 s a start on 2 cores
def test_fsdp_with_gradient_checkpointing_continues_a_ddp_checkpoint(reference, fsdp_run):
    assert_close_states(fsdp_run["state"], reference["states"][4])
    expected, actual = evals(reference["dir"]), evals(fsdp_run["dir"])
    assert [e[0] for e in actual] == [0, 2, 4]
    np.testing.assert_allclose(np.array(actual), np.array(expected[:3]), rtol=0, atol=TOLERANCE)
    saved = json.loads((fsdp_run["dir"] / "config.json").read_text())["train"]
    assert saved["distributed"] == "fsdp" and saved["gradient_checkpointing"] is True


@pytest.mark.slow  # torchrun: two processes, ~10 s a start on 2 cores
def test_a_two_rank_checkpoint_resumes_on_one_process(reference, fsdp_run):
    trainer = resume_run(fsdp_run["dir"], {"max_iters": 6, "distributed": "ddp"})
    assert trainer.progress.step == 4
    assert trainer.fit().step == 6
    assert_close_states(state_at(fsdp_run["dir"]), reference["states"][6])


def test_a_batch_size_that_does_not_divide_across_ranks_is_a_one_line_error(
    small_text_file, tmp_path, monkeypatch, capsys
):
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    argv = ["train", "--out", str(tmp_path / "run"), "--data", str(small_text_file)]
    assert main([*argv, *flags({**FIELDS, "batch_size": 7})]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "batch_size=7" in error and "2 ranks" in error and "multiple of 2" in error
    assert not (tmp_path / "run").exists()


def test_ranks_read_disjoint_slices_of_the_one_process_batch():
    tokens = np.arange(1000, dtype=np.uint16)
    whole = BatchSampler(tokens, 8, 6, seed=3)
    ranks = [BatchSampler(tokens, 8, 6, seed=3, rank=r, world_size=3) for r in range(3)]
    for _ in range(2):
        x, y = whole.next_batch()
        parts = [sampler.next_batch() for sampler in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert all(torch.equal(s.get_state(), whole.get_state()) for s in ranks)
