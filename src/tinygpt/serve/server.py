"""The uvicorn server of `tinygpt serve`, with the limits a public port needs: a listening
socket bound before the model loads (a taken port is one clear error), idle connections closed
before their first request, a cap on connections served at once, and errors that repeat while a
condition lasts (out of file descriptors) logged once a minute instead of at every retry.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from tinygpt.errors import ConfigError

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
    """The base URL clients reach `sock` at (an IPv6 host in brackets, as URLs write it)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
