"""benchmarks/budget_sweep.py end to end on the CPU: step times measured, then each recipe
trained for the steps its time fits in a budget of seconds, scored on the whole val split."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "budget_sweep.py"
TINY = """preset = "baby-shakespeare"
[model]
n_layer = 1
n_embd = 32
n_head = 2
block_size = 32
[train]
batch_size = 4
{extra}
"""


@pytest.mark.slow  # two child processes import torch; a pool of one trains two tiny recipes
def test_measured_step_times_become_each_recipes_steps(tmp_path):
    recipes = []
    for name, extra in [("plain", ""), ("muon", 'optimizer = "muon"')]:
        recipes.append(tmp_path / f"{name}.toml")
        recipes[-1].write_text(TINY.format(extra=extra))
    times = tmp_path / "times.json"
    measure = [sys.executable, str(SCRIPT), "measure", "--recipes", ",".join(map(str, recipes)),
               "--threads", "1", "--out", str(times)]  # fmt: skip
    done = subprocess.run(measure, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    seconds = {name: record["seconds"] for name, record in json.loads(times.read_text()).items()
               if name != "_cpu"}  # fmt: skip
    assert set(seconds) == {"plain", "muon"} and all(s > 0 for s in seconds.values())
    out = tmp_path / "sweep"
    train = [sys.executable, str(SCRIPT), "train", "--step-times", str(times), "--minutes",
             "0.005", "--out", str(out)]  # fmt: skip
    done = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "budget_sweep.json").read_text())["results"]
    for result in results:
        assert result["steps"] == max(1, int(0.3 // seconds[result["recipe"]]))
        assert result["curve"][-1][0] == result["steps"] and result["curve"][-1][1] > 0
    assert "| plain |" in (out / "budget_sweep.md").read_text()
