"""A tiny trained run, shared by the tests of the commands that read one."""

import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY

from tinygpt.cli import main


@pytest.fixture(scope="session")
def trained_run_once(tmp_path_factory, small_text_file) -> Path:
    """A tiny run, trained once for all the command tests; each test gets a copy (`trained_run`)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    argv = ["train", "--data", small_text_file, "--out", run_dir, *TINY,
            "--max_iters", "10", "--eval_interval", "5"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    return run_dir


@pytest.fixture
def trained_run(trained_run_once, tmp_path) -> Path:
    """A copy of the trained run, links kept as links, that the test may damage."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run_once, run_dir, symlinks=True)
    return run_dir
