"""What several test files need to drive the `tinygpt` command and its dialog runs."""

from pathlib import Path

from tinygpt.cli import main

# DailyDialog's validation file in shared/data, beside the checkout
DAILYDIALOG = (
    Path(__file__).resolve().parents[2] / "shared/data/dailydialog/validation/"
    "dialogues_validation.txt"
)
# a model and run that train in a second on any text
TINY = [
    "--block_size", "16", "--n_layer", "2", "--n_head", "2", "--n_embd", "32",
    "--batch_size", "4", "--eval_iters", "2", "--log_interval", "5",
]  # fmt: skip
# a dialog run that trains in seconds
TINY_DIALOG = [
    "--format", "dialog", "--max_documents", "150", "--block_size", "64", "--n_layer", "2",
    "--n_head", "2", "--n_embd", "32", "--batch_size", "8", "--eval_iters", "2",
    "--max_iters", "20", "--eval_interval", "10", "--log_interval", "10",
]  # fmt: skip


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Exit code 2, one `tinygpt: error:` line holding every fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("tinygpt: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
