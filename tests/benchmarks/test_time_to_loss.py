"""benchmarks/time_to_loss.py end to end at a budget of seconds: its three reports appear."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "time_to_loss.py"


@pytest.mark.slow  # a few seconds of training and two whole-split evaluations
def test_a_tiny_budget_writes_the_table_the_json_and_the_plot(tmp_path):
    """In a child process, as a user runs it: the benchmark sets up logging for itself."""
    out = tmp_path / "ttl"
    command = [
        sys.executable, str(SCRIPT), "--budgets", "0.02", "--seeds", "1", "--eval-every", "0.5",
        "--timed-steps", "3", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = (out / "time_to_loss.md").read_text()
    assert "baby-shakespeare" in table and "min to 1.90" in table
    document = json.loads((out / "time_to_loss.json").read_text())
    evaluations = [e for cell in document["cells"] for run in cell["runs"] for e in run["evals"]]
    assert evaluations and all(e["val_loss"] > 0 for e in evaluations)
    assert (out / "time_to_loss.png").stat().st_size > 0


STORY = (
    "Once upon a time, a little cat named Tom found a red ball in the garden. He played with "
    "it all day and was very happy. "
)


@pytest.mark.slow  # two tiny runs, one with a BPE trained first, and their samples
def test_another_baseline_and_data_give_bits_per_byte_and_samples(tmp_path):
    """--baseline, --data with its own validation folder, a recipe of another tokenizer: the
    table compares them in bits per byte, and every evaluation's sample starts at the prompt."""
    data = tmp_path / "stories"
    (data / "train").mkdir(parents=True)
    (data / "validation").mkdir()
    (data / "train" / "stories.txt").write_text(STORY * 300, encoding="utf-8")
    (data / "validation" / "stories.txt").write_text(STORY.replace("Tom", "Tim") * 40, "utf-8")
    bpe = tmp_path / "bpe.toml"
    bpe.write_text(
        'preset = "baby-shakespeare"\n[data]\ntokenizer = "bpe"\ntokenizer_vocab_size = 320\n'
    )
    out = tmp_path / "ttl"
    command = [
        sys.executable, str(SCRIPT), "--baseline", "baby-shakespeare", "--recipes", str(bpe),
        "--data", str(data), "--thresholds", "", "--sample-tokens", "8",
        "--budgets", "0.02", "--seeds", "1", "--eval-every", "0.5",
        "--timed-steps", "3", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = (out / "time_to_loss.md").read_text()
    assert "min to" not in table
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()}
    header = rows["recipe"]
    per_byte, delta = header.index("bits/byte"), header.index("Δ bits/byte")
    assert float(rows["baby-shakespeare"][per_byte]) > 0 and rows["baby-shakespeare"][delta] == "-"
    assert float(rows["bpe"][per_byte]) > 0 and rows["bpe"][delta].startswith(("+", "-"))
    document = json.loads((out / "time_to_loss.json").read_text())
    val_bytes = len((STORY.replace("Tom", "Tim") * 40).encode())  # the whole file, as it is
    assert {cell["val_bytes"] for cell in document["cells"]} == {val_bytes}
    samples = [
        e["sample"] for cell in document["cells"] for run in cell["runs"] for e in run["evals"]
    ]
    assert samples and all(s.startswith("\n") for s in samples)  # baby-shakespeare's prompt
    assert "## bpe, 0.02 min, seed 0" in (out / "time_to_loss_samples.md").read_text()
