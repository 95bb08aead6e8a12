"""The endpoints, each a module-level function of its request and the server's state:
`/v1/completions` and `/v1/chat/completions` (both streamable as server-sent events),
`/v1/models`, `/health`, and the chat page at `/`.

The state (`ServerState`: the model's worker, tokenizer, run config and limits) is built once by
`create_app` and kept in `app.state`; each route receives it through `Depends(server_state)`.
The prompts a request holds are read and checked in `prompts.py`, the bodies of the answers are
built in `responses.py`, and generation runs in the worker thread (`worker.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from tinygpt.config import RunConfig
from tinygpt.errors import TinyGPTError
from tinygpt.generate.chat import PromptFormat, fit_prompt
from tinygpt.serve.api_errors import APIError
from tinygpt.serve.page import CHAT_PAGE
from tinygpt.serve.prompts import (
    chat_turns,
    checked_stops,
    completion_prompts,
    generation_settings,
    includes_usage,
    prompt_list,
    reply_budget,
    requested_chat_budget,
)
from tinygpt.serve.responses import ChatChoice, CompletionChoice, Reply, TokenTexts
from tinygpt.serve.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from tinygpt.serve.worker import Choice, GenerationWorker, Ticket
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


@dataclass(frozen=True)
class ServerState:
    """What every route reads: one served run and the limits the server was started with."""

    worker: GenerationWorker
    tokenizer: Tokenizer
    config: RunConfig
    model_name: str
    max_waiting: int  # the most choices (prompts times n) one request may ask for
    created: int  # Unix time the server started: /v1/models' `created`
    chat_format: PromptFormat
    token_texts: TokenTexts

    @property
    def block_size(self) -> int:
        return self.config.model.block_size

    def check_model(self, body: SamplingFields) -> None:
        if body.model is not None and body.model != self.model_name:
            message = (
                f"the model {body.model!r} does not exist; this server has {self.model_name!r}"
            )
            raise APIError(404, message, param="model", code="model_not_found")

    def check_choices(self, prompts: int, n: int) -> None:
        """More choices than the queue holds could never be served."""
        if prompts * n > self.max_waiting:
            asked = f"{prompts} prompts times n={n}" if prompts > 1 else f"n={n}"
            raise APIError(
                400,
                f"{asked} asks for {prompts * n} choices; this server gives at most "
                f"{self.max_waiting} per request",
                "n",
            )


def server_state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]
router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(CHAT_PAGE)


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    worker = state.worker
    return {
        "status": "ok",
        "model": state.model_name,
        "running": worker.running,
        "waiting": worker.waiting,
    }


@router.get("/v1/models")
async def models(state: State) -> dict[str, Any]:
    entry = {
        "id": state.model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "tinygpt",
        "context_length": state.block_size,
    }
    return {"object": "list", "data": [entry]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: State) -> Response:
    state.check_model(body)
    n = body.n or 1
    state.check_choices(len(prompt_list(body.prompt)), n)
    prompts = completion_prompts(body.prompt, state.tokenizer)
    echo = bool(body.echo)
    max_tokens = reply_budget(body.max_tokens, DEFAULT_COMPLETION_TOKENS, echo)
    settings = generation_settings(
        body, state.config.sample, max_tokens, checked_stops(body), body.logprobs
    )
    scored = body.logprobs if echo else None  # with echo, the prompt's logprobs too
    choices, writers = [], []
    for text, ids in prompts:  # prompt-major, as OpenAI numbers the choices
        for j in range(n):
            choices.append(Choice(ids, settings, scored, seed_offset=j))
            writers.append(
                CompletionChoice(state.token_texts, body.logprobs, text if echo else None, ids)
            )
    ticket = state.worker.submit(choices)
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    reply = Reply(
        "cmpl", "text_completion", "text_completion", state.model_name, writers, prompt_tokens
    )
    return await _respond(reply, ticket, body, request)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: State) -> Response:
    state.check_model(body)
    n = body.n or 1
    state.check_choices(1, n)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    turns, message = chat_turns(body.messages)
    tokenizer, block_size, chat_format = state.tokenizer, state.block_size, state.chat_format
    alone = len(chat_format.render([], message, tokenizer))
    if alone > block_size:
        raise APIError(
            400,
            f"the last message takes {alone} tokens with its markers, more than the "
            f"model's context of {block_size}; shorten it",
            "messages",
            "context_length_exceeded",
        )
    max_tokens = reply_budget(requested_chat_budget(body), block_size // 2, echo=False)
    # the history leaves the reply its tokens where the message allows; a longer reply slides
    budget = block_size - min(max_tokens, block_size - alone)
    prompt_ids, dropped = fit_prompt(
        turns, message, tokenizer, budget, cut_long_message=False, render=chat_format.render
    )
    if dropped:
        log.info("left out the %d oldest of %d turns to fit the context", dropped, len(turns))
    top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
    stops = (*checked_stops(body), *chat_format.stops)
    settings = generation_settings(body, state.config.sample, max_tokens, stops, top_logprobs)
    ticket = state.worker.submit([Choice(prompt_ids, settings, seed_offset=j) for j in range(n)])
    writers = [ChatChoice(state.token_texts, top_logprobs) for _ in range(n)]
    reply = Reply(
        "chatcmpl", "chat.completion", "chat.completion.chunk", state.model_name, writers,
        len(prompt_ids),
    )  # fmt: skip
    return await _respond(reply, ticket, body, request)


async def _respond(
    reply: Reply, ticket: Ticket, body: SamplingFields, request: Request
) -> Response:
    if body.stream:
        return _event_stream(reply.chunks(ticket, includes_usage(body)))
    return JSONResponse(await _collect(reply, ticket, request))


class _ClientGone(Exception):
    pass


async def _collect(reply: Reply, ticket: Ticket, request: Request) -> dict[str, Any]:
    """The whole response; a client that disconnects while it waits cancels the request."""

    async def watch_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        ticket.events.put_nowait((-1, _ClientGone()))

    watcher = asyncio.create_task(watch_disconnect())
    try:
        return await reply.whole(ticket)
    except _ClientGone:
        raise APIError(499, "the client closed the request", kind="client_closed") from None
    finally:
        watcher.cancel()


def _event_stream(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except TinyGPTError as err:  # the status line is sent already: report in the stream
            yield f"data: {json.dumps(APIError(400, str(err)).body())}\n\n"
        except Exception:
            log.exception("generation failed mid-stream")
            failed = APIError(500, "generation failed; see the server log", kind="server_error")
            yield f"data: {json.dumps(failed.body())}\n\n"
        yield "data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type="text/event-stream", headers=headers)
