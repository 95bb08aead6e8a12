"""What several test files need to drive the `tinygpt` command, its dialog runs, its server
and its checkpoints."""

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinygpt.cli import main
from tinygpt.serve.server import url_of

# DailyDialog's validation file in shared/data beside the checkout (1,000 dialogues); without
# it, the 50 dialogues of tests/fixtures, written for the tests
SHARED_DAILYDIALOG = (
    Path(__file__).resolve().parents[2] / "shared/data/dailydialog/validation/"
    "dialogues_validation.txt"
)
FIXTURE_DAILYDIALOG = (
    Path(__file__).resolve().parent / "fixtures/dialogs/dailydialog/train/dialogues_train.txt"
)
DAILYDIALOG = SHARED_DAILYDIALOG if SHARED_DAILYDIALOG.is_file() else FIXTURE_DAILYDIALOG
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


def tinygpt_command(*args: object) -> list[str]:
    """The real binary's command line, run in a new process (`python -m tinygpt.cli`)."""
    return [sys.executable, "-m", "tinygpt.cli", *map(str, args)]


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


@contextlib.contextmanager
def serving(server: Any, sock: socket.socket) -> Iterator[str]:
    """The uvicorn `server` answering on `sock` in a thread; its URL while the block runs."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def saved_step_names(trainer: Any, steps: int) -> list[str]:
    """Save step 0 as the best, then train and save `steps` times; the step folders kept."""
    trainer.save(is_best=True)
    for _ in range(steps):
        trainer.train_step()
        trainer.save()
    checkpoints = trainer.run_dir / "checkpoints"
    return sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-"))
