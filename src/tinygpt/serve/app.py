"""An OpenAI-compatible HTTP server for one trained run: `/v1/completions`,
`/v1/chat/completions` (both streamable as server-sent events), `/v1/models`, `/health`, and a
chat page at `/`.

Every mistake a client can make answers 4xx with OpenAI's error body
`{"error": {"message", "type", "param", "code"}}`, so OpenAI clients raise their usual errors.
Sampling defaults (temperature, top_k, top_p) are the run's `sample` config, as other servers
take a model's generation config. Generation runs in one worker thread (see `worker.py`); the
bodies of the answers are built in `responses.py`.

A reply may pass the model's context, and a completion prompt may be longer than it: decoding
slides as `tinygpt sample` does (see `tinygpt.generate.decode`), so `max_tokens` is bounded
only by `MAX_TOKENS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from tinygpt.config import RunConfig
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.generate.chat import Turn, fit_prompt, prompt_format_for
from tinygpt.generate.engine import GenerationSettings
from tinygpt.model.gpt import GPT
from tinygpt.serve.page import CHAT_PAGE
from tinygpt.serve.responses import ChatChoice, CompletionChoice, Reply, TokenTexts
from tinygpt.serve.schemas import (
    MAX_PROMPT_TOKENS,
    MAX_STOPS,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    Prompt,
    SamplingFields,
)
from tinygpt.serve.worker import MAX_BATCH, Choice, GenerationWorker, ServerBusy, Ticket
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
    `max_batch` choices together and keeps up to `max_waiting` more in its queue. A request may
    ask for at most `max_waiting` choices (prompts times n): more could never fit the queue."""
    worker = GenerationWorker(model, tokenizer, max_waiting, max_batch)
    block_size = config.model.block_size
    created = int(time.time())
    chat_format = prompt_format_for(tokenizer)
    token_texts = TokenTexts(tokenizer)
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

    def check_choices(prompts: int, n: int) -> None:
        if prompts * n > max_waiting:
            asked = f"{prompts} prompts times n={n}" if prompts > 1 else f"n={n}"
            raise APIError(
                400,
                f"{asked} asks for {prompts * n} choices; this server gives at most "
                f"{max_waiting} per request",
                "n",
            )

    def settings_for(
        body: SamplingFields, max_tokens: int, stops: tuple[str, ...], logprobs: int | None
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
            presence_penalty=_given(body.presence_penalty, 0.0),
            frequency_penalty=_given(body.frequency_penalty, 0.0),
            stop=stops,
            seed=body.seed,
            logprobs=logprobs,
            precision=sample.precision,
        )

    async def respond(
        reply: Reply, ticket: Ticket, body: SamplingFields, request: Request
    ) -> Response:
        if body.stream:
            return _event_stream(reply.chunks(ticket, _includes_usage(body)))
        return JSONResponse(await _collect(reply, ticket, request))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body)
        n = body.n or 1
        check_choices(len(_prompt_list(body.prompt)), n)
        prompts = _completion_prompts(body.prompt, tokenizer)
        echo = bool(body.echo)
        max_tokens = _max_tokens(body.max_tokens, DEFAULT_COMPLETION_TOKENS, echo)
        settings = settings_for(body, max_tokens, _stops(body), body.logprobs)
        scored = body.logprobs if echo else None  # with echo, the prompt's logprobs too
        choices, writers = [], []
        for text, ids in prompts:  # prompt-major, as OpenAI numbers the choices
            for j in range(n):
                choices.append(Choice(ids, settings, scored, seed_offset=j))
                writers.append(
                    CompletionChoice(token_texts, body.logprobs, text if echo else None, ids)
                )
        ticket = worker.submit(choices)
        prompt_tokens = sum(len(ids) for _, ids in prompts)
        reply = Reply(
            "cmpl", "text_completion", "text_completion", model_name, writers, prompt_tokens
        )
        return await respond(reply, ticket, body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body)
        n = body.n or 1
        check_choices(1, n)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        turns, message = _turns(body.messages)
        alone = len(chat_format.render([], message, tokenizer))
        if alone > block_size:
            raise APIError(
                400,
                f"the last message takes {alone} tokens with its markers, more than the "
                f"model's context of {block_size}; shorten it",
                "messages",
                "context_length_exceeded",
            )
        max_tokens = _max_tokens(_chat_max_tokens(body), block_size // 2, echo=False)
        # the history leaves the reply its tokens where the message allows; a longer reply slides
        budget = block_size - min(max_tokens, block_size - alone)
        prompt_ids, dropped = fit_prompt(
            turns, message, tokenizer, budget, cut_long_message=False, render=chat_format.render
        )
        if dropped:
            log.info("left out the %d oldest of %d turns to fit the context", dropped, len(turns))
        top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        stops = (*_stops(body), *chat_format.stops)
        settings = settings_for(body, max_tokens, stops, top_logprobs)
        ticket = worker.submit([Choice(prompt_ids, settings, seed_offset=j) for j in range(n)])
        writers = [ChatChoice(token_texts, top_logprobs) for _ in range(n)]
        reply = Reply(
            "chatcmpl", "chat.completion", "chat.completion.chunk", model_name, writers,
            len(prompt_ids),
        )  # fmt: skip
        return await respond(reply, ticket, body, request)

    return app


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _max_tokens(requested: int | None, default: int, echo: bool) -> int:
    """The requested reply budget or the default. The reply may pass the context: it slides
    (see `tinygpt.generate.decode`), as `tinygpt sample` does."""
    if requested is None:
        return default
    if requested == 0 and not echo:
        raise APIError(
            400,
            "max_tokens=0 generates nothing; give 1 or more (or echo: true to score the prompt)",
            "max_tokens",
        )
    return requested


def _chat_max_tokens(body: ChatCompletionRequest) -> int | None:
    """max_completion_tokens, OpenAI's newer name, or max_tokens; both only if they agree."""
    given = {body.max_tokens, body.max_completion_tokens} - {None}
    if len(given) > 1:
        raise APIError(
            400,
            f"max_tokens={body.max_tokens} and max_completion_tokens="
            f"{body.max_completion_tokens} disagree; give one of them",
            "max_completion_tokens",
        )
    return given.pop() if given else None


def _prompt_list(prompt: Prompt) -> list[Any]:
    """The prompts a completion request holds: a text, a list of texts, token ids (as OpenAI
    takes them: what an evaluation harness that tokenizes for itself sends) or a list of those."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def _completion_prompts(prompt: Prompt, tokenizer: Tokenizer) -> list[tuple[str, list[int]]]:
    """(text, token ids) of every prompt of `_prompt_list`."""
    prompts = _prompt_list(prompt)
    if not prompts:
        raise APIError(400, "prompt is an empty list; give at least one prompt", "prompt")
    texts_and_ids = []
    for one in prompts:
        if not one:
            raise APIError(
                400, "prompt is empty; give at least one character (or token) to continue",
                "prompt",
            )  # fmt: skip
        if isinstance(one, str):
            texts_and_ids.append((one, tokenizer.encode(one)))
        else:
            texts_and_ids.append((tokenizer.decode(_checked_ids(one, tokenizer)), list(one)))
    for _, ids in texts_and_ids:
        if len(ids) > MAX_PROMPT_TOKENS:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this server reads at most {MAX_PROMPT_TOKENS}",
                "prompt",
                "context_length_exceeded",
            )
    return texts_and_ids


def _checked_ids(ids: list[int], tokenizer: Tokenizer) -> list[int]:
    outside = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if outside:
        raise APIError(
            400,
            f"prompt token id {outside[0]} is outside the vocabulary; give ids from 0 to "
            f"{tokenizer.vocab_size - 1}",
            "prompt",
        )
    return ids


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
    location = _location(error)
    if union := _union_forms(errors, location):  # a field of several types: name them all
        param, forms = union
        return APIError(400, f"{param} has the wrong type; give {' or '.join(forms)}", param)
    param = ".".join(location) or None
    if error.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON ({error.get('msg')})")
    if error.get("type") == "extra_forbidden":
        return APIError(400, f"unknown field {param!r}; this server does not support it", param)
    if param is None:
        return APIError(400, f"the body must be a JSON object ({error.get('msg')})")
    return APIError(400, f"{param}: {error.get('msg')}", param)


def _location(error: dict[str, Any]) -> list[str]:
    return [str(part) for part in error.get("loc", ()) if part != "body"]


def _union_forms(errors: Any, location: list[str]) -> tuple[str, list[str]] | None:
    """(field, the forms it accepts) where the first error is in one form of a union field:
    pydantic puts the form in the location (`prompt.str`, `prompt.list[int].0`), one error per
    form; None for any other error."""
    for index, part in enumerate(location):
        if part in ("str", "int", "float", "bool") or "[" in part:
            head = location[:index]
            forms = {
                other[index]: None
                for other in map(_location, errors)
                if other[:index] == head and len(other) > index
            }
            return ".".join(head), list(forms)
    return None


# ----------------------------------------------------------------------------------------------
# Running

KEEP_ALIVE_SECONDS = 5  # uvicorn's default; here also before a connection's first request
BACKLOG = 128  # connections the kernel holds until they are accepted
MAX_CONNECTIONS = 1000  # served at once; uvicorn answers 503 to requests past it


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is one clear error before the server starts."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port number; give 1 to 65535 (0: any free one)")
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
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


class IdleClosingH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, also closing connections that sit idle before a request.

    uvicorn starts its keep-alive timer only once a response is sent, so a client that connects
    and sends nothing (or half a request) held its file descriptor forever: 21,000 of them
    exhausted the file limit, and then no request got in. Here the timer also runs from the
    connection's start, and again after every piece of an unfinished request head."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._close_when_idle()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self._close_when_idle()  # no request under way: its head is not complete yet

    def _close_when_idle(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


class RepeatedErrorFilter(logging.Filter):
    """Lets the first record that starts with `prefix` through, then at most one a minute,
    which says how many were left out. Out of file descriptors, asyncio logs a traceback at
    every accept it retries, and uvicorn a line for every request past its concurrency limit:
    140 MB of log in a minute, for one condition."""

    def __init__(self, prefix: str, interval_seconds: float = 60.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_seconds = interval_seconds
        self.last_shown: float | None = None
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        now = time.monotonic()
        if self.last_shown is not None and now - self.last_shown < self.interval_seconds:
            self.left_out += 1
            return False
        if self.left_out:
            record.msg, record.args = f"{message} ({self.left_out} more left out of the log)", ()
        self.last_shown, self.left_out = now, 0
        return True


# (logger, the start of a message it repeats while a condition lasts)
REPEATED_ERRORS = (
    ("asyncio", "socket.accept() out of system resource"),
    ("uvicorn.error", "Exceeded concurrency limit."),
)


def quiet_repeated_errors() -> None:
    """Install a RepeatedErrorFilter for each of REPEATED_ERRORS, once per process."""
    for name, prefix in REPEATED_ERRORS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "prefix", None) == prefix for f in logger.filters):
            logger.addFilter(RepeatedErrorFilter(prefix))


def connection_limit() -> int:
    """Connections served at once: MAX_CONNECTIONS, or half the process's file limit where that
    is lower (the other half holds the model's files, the log, and connections past the limit
    until they are answered 503 and closed)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // 2))


def make_server(
    app: FastAPI,
    log_level: str = "info",
    keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
    max_connections: int | None = None,
) -> uvicorn.Server:
    """uvicorn, with its limits set: idle connections closed after `keep_alive_seconds`,
    `max_connections` served at once (default: `connection_limit()`), and errors that repeat
    while a condition lasts logged once a minute."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        access_log=False,
        http=IdleClosingH11Protocol,
        timeout_keep_alive=keep_alive_seconds,  # type: ignore[arg-type]  (a float works)
        limit_concurrency=max_connections or connection_limit(),
        backlog=BACKLOG,
    )
    quiet_repeated_errors()
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
