"""An OpenAI-compatible HTTP server for one trained run: `create_app` builds the FastAPI app.

Every mistake a client can make answers 4xx with OpenAI's error body (`api_errors.py`), so
OpenAI clients raise their usual errors. The endpoints are in `routes.py`, over one
`ServerState` kept in `app.state`; generation runs in one worker thread (`worker.py`); the
uvicorn server that runs the app, with its limits on connections, is in `server.py`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from tinygpt.config import RunConfig
from tinygpt.generate.chat import prompt_format_for
from tinygpt.model.gpt import GPT
from tinygpt.serve.api_errors import add_error_handlers
from tinygpt.serve.responses import TokenTexts
from tinygpt.serve.routes import ServerState, router
from tinygpt.serve.worker import MAX_BATCH, GenerationWorker
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)


def create_app(
    model: GPT,
    tokenizer: Tokenizer,
    config: RunConfig,
    model_name: str,
    max_waiting: int = 64,
    max_batch: int = MAX_BATCH,
) -> FastAPI:
    """The app; its lifespan starts and stops the generation thread, which decodes up to
    `max_batch` choices together and keeps up to `max_waiting` more in its queue. A request may
    ask for at most `max_waiting` choices (prompts times n): more could never fit the queue."""
    state = ServerState(
        worker=GenerationWorker(model, tokenizer, max_waiting, max_batch),
        tokenizer=tokenizer,
        config=config,
        model_name=model_name,
        max_waiting=max_waiting,
        created=int(time.time()),
        chat_format=prompt_format_for(tokenizer),
        token_texts=TokenTexts(tokenizer),
    )
    if config.data.format != "dialog":
        log.warning(
            "%s was trained on plain text, not the dialog format; chat replies may not read "
            "like a chat",
            model_name,
        )
    app = FastAPI(title="tinygpt", lifespan=_run_worker, docs_url=None, redoc_url=None)
    app.state.server = state
    add_error_handlers(app)
    app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _run_worker(app: FastAPI) -> AsyncIterator[None]:
    """The generation thread runs while the app serves."""
    worker = app.state.server.worker
    worker.start()
    yield
    worker.stop()
