"""An OpenAI-compatible HTTP server for one trained run: `/v1/completions`,
`/v1/chat/completions` (both streamable as server-sent events), `/v1/models`, `/health`, and a
chat page at `/`.

Every mistake a client can make answers 4xx with OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise their usual errors.
Sampling defaults (temperature, top_k, top_p) are the run's `sample` config, as other servers
take a model's generation config. Generation runs in one worker thread (see `worker.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinygpt.config import RunConfig
from tinygpt.errors import ConfigError, DataError, TinyGPTError
from tinygpt.generate.chat import ReplyTrimmer, Turn, fit_prompt, prompt_format_for
from tinygpt.generate.engine import GenerationSettings
from tinygpt.model.gpt import GPT
from tinygpt.serve.page import CHAT_PAGE
from tinygpt.serve.schemas import (
    MAX_STOPS,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
)
from tinygpt.serve.worker import MAX_BATCH, Finished, GenerationWorker, Job, ServerBusy
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions


class APIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}


class _ClientGone(Exception):
    pass


def create_app(
    model: GPT,
    tokenizer: Tokenizer,
    config: RunConfig,
    model_name: str,
    max_waiting: int = 64,
    max_batch: int = MAX_BATCH,
) -> FastAPI:
    """The app; its lifespan starts and stops the generation thread, which decodes up to
    `max_batch` requests together and keeps up to `max_waiting` more in its queue."""
    worker = GenerationWorker(model, tokenizer, max_waiting, max_batch)
    block_size = config.model.block_size
    created = int(time.time())
    chat_format = prompt_format_for(tokenizer)
    if config.data.format != "dialog":
        log.warning(
            "%s was trained on plain text, not the dialog format; chat replies may not read "
            "like a chat",
            model_name,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="tinygpt", lifespan=lifespan, docs_url=None, redoc_url=None)
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(CHAT_PAGE)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "running": worker.running,
            "waiting": worker.waiting,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "tinygpt",
            "context_length": block_size,
        }
        return {"object": "list", "data": [entry]}

    def check_model(body: SamplingFields) -> None:
        if body.model is not None and body.model != model_name:
            message = f"the model {body.model!r} does not exist; this server has {model_name!r}"
            raise APIError(404, message, param="model", code="model_not_found")

    def settings_for(
        body: SamplingFields, max_tokens: int, stops: tuple[str, ...]
    ) -> GenerationSettings:
        min_tokens = body.min_tokens or 0
        if min_tokens > max_tokens:
            raise APIError(
                400, f"min_tokens={min_tokens} is above max_tokens={max_tokens}", "min_tokens"
            )
        sample = config.sample
        return GenerationSettings(
            max_new_tokens=max_tokens,
            min_new_tokens=min_tokens,
            temperature=_given(body.temperature, sample.temperature),
            top_k=_given(body.top_k, sample.top_k),
            top_p=_given(body.top_p, sample.top_p),
            repetition_penalty=_given(body.repetition_penalty, 1.0),
            stop=stops,
            seed=body.seed,
            precision=sample.precision,
        )

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body)
        if not body.prompt:
            raise APIError(
                400, "prompt is empty; give at least one character to continue", "prompt"
            )
        prompt_ids = tokenizer.encode(body.prompt)
        room = block_size - len(prompt_ids)
        max_tokens = _max_tokens(
            body.max_tokens, DEFAULT_COMPLETION_TOKENS, room, block_size, "prompt"
        )
        if len(prompt_ids) + max_tokens > block_size:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens and max_tokens is {max_tokens}, more "
                f"than the model's context of {block_size} tokens; shorten the prompt or lower "
                "max_tokens",
                "prompt",
                "context_length_exceeded",
            )
        settings = settings_for(body, max_tokens, _stops(body))
        job = worker.submit(prompt_ids, settings)
        reply = _Reply("cmpl", "text_completion", model_name)
        if body.stream:
            return _event_stream(reply.completion_events(job, _includes_usage(body)))
        text, finished = await _collect(job, request, lambda piece: piece)
        return JSONResponse(reply.completion(text, finished))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body)
        turns, message = _turns(body.messages)
        alone = len(chat_format.render([], message, tokenizer))
        room = block_size - alone
        max_tokens = _max_tokens(body.max_tokens, block_size // 2, room, block_size, "messages")
        try:
            prompt_ids, dropped = fit_prompt(
                turns,
                message,
                tokenizer,
                block_size - max_tokens,
                cut_long_message=False,
                render=chat_format.render,
            )
        except DataError as err:
            raise APIError(400, str(err), "messages", "context_length_exceeded") from None
        if dropped:
            log.info("left out the %d oldest of %d turns to fit the context", dropped, len(turns))
        settings = settings_for(body, max_tokens, (*_stops(body), *chat_format.stops))
        job = worker.submit(prompt_ids, settings)
        reply = _Reply("chatcmpl", "chat.completion", model_name)
        if body.stream:
            return _event_stream(reply.chat_events(job, _includes_usage(body)))
        trimmer = ReplyTrimmer()
        text, finished = await _collect(job, request, trimmer.push)
        return JSONResponse(reply.chat(text, finished))

    return app


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _max_tokens(
    requested: int | None, default: int, room: int, block_size: int, prompt_param: str
) -> int:
    """The requested reply budget, checked against the context, or the default clipped to fit."""
    if requested is not None:
        if requested > block_size:
            raise APIError(
                400,
                f"max_tokens={requested} is above the model's context of {block_size} tokens",
                "max_tokens",
            )
        return requested
    if room < 1:
        raise APIError(
            400,
            f"the prompt fills the model's context of {block_size} tokens; shorten it",
            prompt_param,
            "context_length_exceeded",
        )
    return min(default, room)


def _stops(body: SamplingFields) -> tuple[str, ...]:
    stops = body.stop_strings()
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop has {len(stops)} strings; give at most {MAX_STOPS}", "stop")
    if any(not stop for stop in stops):
        raise APIError(400, "stop has an empty string; give non-empty text", "stop")
    return stops


def _includes_usage(body: SamplingFields) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _turns(messages: list[ChatMessage]) -> tuple[list[Turn], str]:
    """(user, assistant) turns and the new user message. System messages are left out: the
    dialog format has no place for them. Consecutive messages of one role are joined."""
    spoken: list[tuple[str, str]] = []
    for message in messages:
        if message.role not in ("user", "assistant"):
            continue
        text = " ".join(message.text().split())  # a newline would read as a turn separator
        if spoken and spoken[-1][0] == message.role:
            spoken[-1] = (message.role, f"{spoken[-1][1]} {text}".strip())
        else:
            spoken.append((message.role, text))
    if not spoken or spoken[-1][0] != "user":
        raise APIError(
            400, "the last message must be the user's: the model replies to it", "messages"
        )
    if not spoken[-1][1]:
        raise APIError(400, "the last user message is empty; give some text", "messages")
    turns: list[Turn] = []
    user = ""
    for role, text in spoken[:-1]:
        if role == "user":
            user = text
        else:
            turns.append((user, text))
            user = ""
    return turns, spoken[-1][1]


async def _collect(
    job: Job, request: Request, transform: Callable[[str], str]
) -> tuple[str, Finished]:
    """The whole text of a job; a client that disconnects while it waits cancels the job."""

    async def watch_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.events.put_nowait(_ClientGone())

    watcher = asyncio.create_task(watch_disconnect())
    parts: list[str] = []
    try:
        async for event in job.stream():
            if isinstance(event, Finished):
                return "".join(parts), event
            parts.append(transform(event))
    except _ClientGone:
        raise APIError(499, "the client closed the request", kind="client_closed") from None
    finally:
        watcher.cancel()
    raise AssertionError("a job stream ends with Finished")


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


class _Reply:
    """The JSON bodies of one response, in OpenAI's shapes."""

    def __init__(self, id_prefix: str, kind: str, model_name: str) -> None:
        self.head = {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model_name,
        }

    def completion(self, text: str, finished: Finished) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "finish_reason": finished.finish_reason}
        return {**self.head, "choices": [{**choice, "logprobs": None}], "usage": _usage(finished)}

    def chat(self, text: str, finished: Finished) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finished.finish_reason,
            "logprobs": None,
        }
        return {**self.head, "choices": [choice], "usage": _usage(finished)}

    async def completion_events(self, job: Job, include_usage: bool) -> AsyncIterator[dict]:
        async for event in job.stream():
            if isinstance(event, Finished):
                yield self._chunk({"text": "", "finish_reason": event.finish_reason})
                if include_usage:
                    yield {**self.head, "choices": [], "usage": _usage(event)}
            else:
                yield self._chunk({"text": event, "finish_reason": None})

    async def chat_events(self, job: Job, include_usage: bool) -> AsyncIterator[dict]:
        self.head["object"] = "chat.completion.chunk"
        yield self._chunk({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        trimmer = ReplyTrimmer()
        async for event in job.stream():
            if isinstance(event, Finished):
                yield self._chunk({"delta": {}, "finish_reason": event.finish_reason})
                if include_usage:
                    yield {**self.head, "choices": [], "usage": _usage(event)}
            elif text := trimmer.push(event):
                yield self._chunk({"delta": {"content": text}, "finish_reason": None})

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "choices": [{"index": 0, **choice, "logprobs": None}]}


def _usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


# ----------------------------------------------------------------------------------------------
# Errors: always OpenAI's shape, never a bare 500 for a client's mistake


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return _validation_error(err.errors()).response()

    @app.exception_handler(TinyGPTError)
    async def tinygpt_error(request: Request, err: TinyGPTError) -> JSONResponse:
        return APIError(400, str(err)).response()

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, err: ServerBusy) -> JSONResponse:
        return APIError(503, str(err), kind="server_error", code="server_busy").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail)).response()


def _validation_error(errors: Any) -> APIError:
    """The first of pydantic's errors, as one line that names the field."""
    error = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON ({error.get('msg')})")
    if error.get("type") == "extra_forbidden":
        return APIError(400, f"unknown field {param!r}; this server does not support it", param)
    if param is None:
        return APIError(400, f"the body must be a JSON object ({error.get('msg')})")
    return APIError(400, f"{param}: {error.get('msg')}", param)


# ----------------------------------------------------------------------------------------------
# Running


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is one clear error before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({err.strerror}); choose another --port or --host"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI, log_level: str = "info") -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3, access_log=False)
    )


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
