"""Hostile clients of `tinygpt serve`: numbers out of range, too many choices, idle connections,
a flood of errors while out of file descriptors. Each got a 500, an in-stream error, a stuck
server or a log that grew by 140 MB a minute; each must get a 400 or a server that keeps serving.
The servers here serve a tiny untrained model: these tests are about the server, not the text.
"""

import asyncio
import contextlib
import errno
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import torch
from cli_helpers import serving

from tinygpt.config import ModelConfig, RunConfig
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.serve.app import create_app
from tinygpt.serve.server import (
    RepeatedErrorFilter,
    bind_socket,
    make_server,
    quiet_repeated_errors,
)
from tinygpt.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?:\n")
MAX_WAITING = 16  # the most choices a request may ask for
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., str]]:
    """Starts servers of a tiny model with the limits given; stops them all at the end."""
    torch.manual_seed(0)
    model_config = ModelConfig(
        vocab_size=TOKENIZER.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0
    )
    model = GPT(model_config).eval()
    with contextlib.ExitStack() as running:

        def start(keep_alive_seconds: float, max_connections: int) -> str:
            app = create_app(model, TOKENIZER, RunConfig(model=model_config), "tiny", MAX_WAITING)
            server = make_server(app, "error", keep_alive_seconds, max_connections)
            return running.enter_context(serving(server, bind_socket("127.0.0.1", 0)))

        yield start


@pytest.fixture(scope="module")
def server(start_server: Callable[..., str]) -> str:
    return start_server(keep_alive_seconds=60, max_connections=8)


def post(server: str, path: str, body: dict[str, Any] | str) -> httpx.Response:
    """POST a JSON body; a str is sent as it is (JSON with NaN, say)."""
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{server}/v1/{path}", content=content, headers=headers, timeout=60)


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [2**63, 2**64, -1, 10**30, 1e30, "7", 1.5])
@pytest.mark.parametrize("path", ["completions", "chat/completions"])
def test_a_seed_outside_0_to_2_63_is_a_400_streamed_or_not(
    server: str, path: str, seed: object, stream: bool
):
    """Once a 500, or, streamed, a 200 with a server_error inside the stream."""
    prompt = {"prompt": "Hi"} if path == "completions" else {"messages": HI}
    body = {**prompt, "max_tokens": 2, "seed": seed, "stream": stream}
    error = error_of(post(server, path, body))
    assert error["param"] == "seed"


@pytest.mark.parametrize("seed", [0, 2**63 - 1])
def test_the_seeds_at_the_ends_of_the_range_are_served(server: str, seed: int):
    body = {"prompt": "Hi", "max_tokens": 3, "seed": seed, "n": 2}
    reply = post(server, "completions", body)
    assert reply.status_code == 200, reply.text
    again = post(server, "completions", body).json()
    assert [c["text"] for c in reply.json()["choices"]] == [c["text"] for c in again["choices"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "NaN"),
        ("top_p", "Infinity"),
        ("presence_penalty", "-Infinity"),
        ("frequency_penalty", "NaN"),
        ("repetition_penalty", "Infinity"),
        ("max_tokens", "1e400"),
        ("max_tokens", str(10**30)),
        ("min_tokens", str(10**30)),
        ("n", str(10**30)),
        ("top_k", "-1"),
        ("logprobs", "-1"),
        ("logprobs", "100"),
    ],
)
def test_numbers_out_of_range_or_not_finite_are_a_400(server: str, field: str, value: str):
    body = f'{{"prompt": "Hi", "{field}": {value}}}'
    assert error_of(post(server, "completions", body))["param"] == field


@pytest.mark.parametrize(
    ("prompt", "n", "named"),
    [("Hi", MAX_WAITING + 1, f"n={MAX_WAITING + 1}"), (["Hi"] * 9, 2, "9 prompts times n=2")],
)
def test_too_many_choices_are_a_400_naming_the_limit(
    server: str, prompt: object, n: int, named: str
):
    error = error_of(post(server, "completions", {"prompt": prompt, "n": n, "max_tokens": 1}))
    assert error["param"] == "n"
    assert named in error["message"] and f"at most {MAX_WAITING} per request" in error["message"]
    assert post(server, "completions", {"prompt": prompt, "n": 1, "max_tokens": 1}).is_success


@pytest.mark.parametrize("ids", [[-1], [TOKENIZER.vocab_size], [1, 2**70]])
def test_prompt_token_ids_outside_the_vocabulary_are_a_400(server: str, ids: list[int]):
    error = error_of(post(server, "completions", {"prompt": [ids], "max_tokens": 1}))
    assert error["param"] == "prompt"


@pytest.mark.parametrize("prompt", [5, [["a"]], [1, "a"], {"text": "Hi"}])
def test_a_prompt_of_the_wrong_type_is_a_400_naming_the_accepted_forms(server: str, prompt: object):
    error = error_of(post(server, "completions", {"prompt": prompt}))
    assert error["param"] == "prompt"  # not pydantic's "prompt.str" for the first form tried
    assert "str or list[str] or list[int] or list[list[int]]" in error["message"]


def test_a_prompt_past_the_most_the_server_reads_is_a_400(server: str):
    error = error_of(post(server, "completions", {"prompt": "a" * 65_537, "max_tokens": 1}))
    assert error["code"] == "context_length_exceeded" and "65536" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_echo_returns_the_prompt_before_the_completion(server: str, stream: bool):
    body = {"prompt": ["Hi", "Yo"], "max_tokens": 3, "echo": True, "seed": 1, "stream": stream}
    response = post(server, "completions", body)
    assert response.status_code == 200, response.text
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        chunks = [json.loads(event) for event in events if event != "[DONE]"]
        texts = ["", ""]
        for chunk in chunks:
            texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
    else:
        texts = [choice["text"] for choice in response.json()["choices"]]
    alone = post(server, "completions", {**body, "echo": False, "stream": False}).json()
    assert texts == ["Hi" + alone["choices"][0]["text"], "Yo" + alone["choices"][1]["text"]]


def closed_by_the_server(connection: socket.socket) -> bool:
    """Whether the server closes `connection` (within a generous 30 s: not a timing test)."""
    connection.settimeout(30)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_connections_are_closed_and_a_request_still_gets_in(
    start_server: Callable[..., str],
):
    """21,000 connections that never sent a byte were held forever and used up the file
    limit. Now each is closed after the keep-alive timeout, even before its first request,
    and so is one that sent half a request head."""
    server = start_server(keep_alive_seconds=0.5, max_connections=20)
    host, port = httpx.URL(server).host, httpx.URL(server).port
    idle = [socket.create_connection((host, port)) for _ in range(50)]
    half = socket.create_connection((host, port))
    half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    try:
        assert all(closed_by_the_server(connection) for connection in [*idle, half])
    finally:
        for connection in [*idle, half]:
            connection.close()
    response = post(server, "completions", {"prompt": "Hi", "max_tokens": 2})
    assert response.status_code == 200, response.text


def test_requests_past_the_connection_limit_get_a_503_until_connections_close(
    start_server: Callable[..., str],
):
    server = start_server(keep_alive_seconds=60, max_connections=4)
    host, port = httpx.URL(server).host, httpx.URL(server).port
    idle = [socket.create_connection((host, port)) for _ in range(4)]
    try:
        assert post(server, "completions", {"prompt": "Hi", "max_tokens": 1}).status_code == 503
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 30  # the server notices the closed connections
    while (
        response := post(server, "completions", {"prompt": "Hi", "max_tokens": 1})
    ).status_code == 503:
        assert time.monotonic() < deadline, "the closed connections still count"
        time.sleep(0.05)
    assert response.status_code == 200, response.text


def test_running_out_of_file_descriptors_is_logged_once_not_per_attempt(
    caplog: pytest.LogCaptureFixture,
):
    """Out of file descriptors, asyncio logs a traceback every time it retries accept(); the
    log grew by 140 MB in a minute. The server lets the first through, then one a minute."""
    quiet_repeated_errors()
    quiet_repeated_errors()  # installing twice adds no second filter
    (installed,) = [
        f for f in logging.getLogger("asyncio").filters if isinstance(f, RepeatedErrorFilter)
    ]
    installed.last_shown = None  # as at the server's start, whatever ran before in this process

    async def fail_to_accept(times: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(times):  # what asyncio's _accept_connection does on EMFILE
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
            )

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(fail_to_accept(50))
    logged = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(logged) == 1
    assert installed.left_out == 49


def test_a_repeated_error_is_let_through_again_after_the_interval_saying_how_many_were_left_out():
    quiet = RepeatedErrorFilter("boom", interval_seconds=0.0)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    quiet.left_out = 3
    assert quiet.filter(record)
    assert record.getMessage() == "boom now (3 more left out of the log)"
    other = logging.LogRecord("x", logging.ERROR, __file__, 1, "something else", (), None)
    assert RepeatedErrorFilter("boom").filter(other)


@pytest.mark.parametrize("port", [99999, 65536, -1])
def test_a_port_outside_0_to_65535_is_one_clear_error(port: int):
    """Once an OverflowError traceback."""
    with pytest.raises(ConfigError, match=f"--port {port} is not a port number"):
        bind_socket("127.0.0.1", port)
