from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY
from torch import nn

from tinygpt.cli import main

TINY_BASE = [
    *TINY, "--max_iters", "10", "--eval_interval", "5", "--workers", "1",
    "--threads", "1",  # tiny matmuls on a shared 2-core machine: more threads only wait
]  # fmt: skip

# fast fine-tuning: a few steps at a high rate, no warm-up, preparation in this process
FINETUNE_FIELDS = {
    "max_iters": "30",
    "warmup_iters": "0",
    "learning_rate": "1e-2",
    "min_lr": "1e-3",
    "eval_interval": "15",
    "eval_iters": "2",
    "log_interval": "10",
    "batch_size": "8",
    "workers": "1",
    "threads": "1",
}


@pytest.fixture(scope="session")
def base_run(
    tmp_path_factory: pytest.TempPathFactory, small_text_file: Path, isolated_cache
) -> Path:
    """A character-level run of 10 steps on the head of TinyShakespeare."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    argv = ["train", "--data", str(small_text_file), "--out", str(run_dir), *TINY_BASE]
    assert main(argv) == 0
    return run_dir


@pytest.fixture(scope="session")
def new_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exchange, repeated: narrower text than the base run saw, in characters it knows."""
    path = tmp_path_factory.mktemp("new") / "speak.txt"
    path.write_text(
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        * 200,
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def finetune_fields() -> dict[str, str]:
    return dict(FINETUNE_FIELDS)


@pytest.fixture(autouse=True, scope="session")
def restore_torch_threads() -> Iterator[None]:
    """`--threads 1` sets torch's thread count for the whole process; give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def randomise_adapters() -> Callable[[nn.Module], None]:
    """Sets every LoRA tensor to a seeded random value: B starts at zero, which would make every
    test of a merge or of a saved adapter pass trivially."""

    def randomise(model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if ".lora_" in name:
                    parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))

    return randomise
