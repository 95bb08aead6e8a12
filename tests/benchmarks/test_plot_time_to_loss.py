"""benchmarks/plot_time_to_loss.py: time_to_loss JSON files of separate invocations become one
plot, and a file that is not one is a one-line error."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "plot_time_to_loss.py"
MEASURED = ROOT / "benchmarks" / "results" / "time_to_loss_60min.json"


def plot(*arguments: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_measured_runs_become_one_png(tmp_path):
    out = tmp_path / "curves.png"
    done = plot(MEASURED, MEASURED, "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_that_is_not_json_is_one_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    done = plot(broken, "--out", tmp_path / "curves.png")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "time_to_loss JSON" in done.stderr
    assert not (tmp_path / "curves.png").exists()
