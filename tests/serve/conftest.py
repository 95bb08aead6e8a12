"""One server for the tests of this folder: a chat model trained for seconds on DailyDialog,
served by uvicorn in a background thread, its forward pass slowed on demand (`slowdown`)."""

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from cli_helpers import DAILYDIALOG, TINY_DIALOG, serving

from tinygpt.cli import main
from tinygpt.config import RunConfig
from tinygpt.model.gpt import GPT
from tinygpt.run.load import load_model_from_run
from tinygpt.serve.app import create_app
from tinygpt.serve.server import bind_socket, make_server
from tinygpt.tokenizers.base import Tokenizer

SERVED_MODEL_NAME = "tiny-chat"


class Slowdown:
    """Seconds every forward pass sleeps: makes a generation long enough to walk away from."""

    seconds = 0.0


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT, Tokenizer, RunConfig]:
    """A chat model trained for seconds on DailyDialog: what the server serves."""
    run_dir = tmp_path_factory.mktemp("runs") / "dialog"
    assert main(["train", "--data", str(DAILYDIALOG), "--out", str(run_dir), *TINY_DIALOG]) == 0
    return load_model_from_run(run_dir, "best", "cpu")


@pytest.fixture(scope="session")
def server(served: tuple[GPT, Tokenizer, RunConfig]) -> Iterator[str]:
    """The base URL of a server for the `served` model."""
    model, tokenizer, config = served
    forward = model.forward

    def slow_forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(Slowdown.seconds)
        return forward(*args, **kwargs)

    model.forward = slow_forward  # type: ignore[method-assign]
    app = create_app(model, tokenizer, config, SERVED_MODEL_NAME)
    uvicorn_server = make_server(app, log_level="warning")
    with serving(uvicorn_server, bind_socket("127.0.0.1", 0)) as url:
        yield url


@pytest.fixture
def model_name() -> str:
    """The id the server serves its model under."""
    return SERVED_MODEL_NAME


@pytest.fixture
def slowdown() -> Iterator[type[Slowdown]]:
    """Set `slowdown.seconds` to slow every forward pass; back to full speed after the test."""
    yield Slowdown
    Slowdown.seconds = 0.0


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=60)
