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
