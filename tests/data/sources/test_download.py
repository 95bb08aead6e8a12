"""http(s) sources from a local server (sources/download.py)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinygpt.config import DataConfig
from tinygpt.data.sources import open_corpus
from tinygpt.errors import DataError


@dataclass
class Server:
    base_url: str
    requests: list[str] = field(default_factory=list)


CORPUS = "To be, or not to be: that is the question.\n" * 100


def downloaded_text(url: str) -> str:
    """The one document of a URL source without separators: the downloaded text."""
    (document,) = open_corpus(DataConfig(source=url)).documents("train")
    return document


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path != "/corpus.txt":
                self.send_error(404, "Not Found")
                return
            body = CORPUS.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_url_is_downloaded_once_and_reused(server: Server, cache_dir: Path):
    url = f"{server.base_url}/corpus.txt"
    first = open_corpus(DataConfig(source=url))
    second = open_corpus(DataConfig(source=url))
    assert list(first.documents("train")) == list(second.documents("train")) == [CORPUS]
    assert first.origin == url
    assert server.requests == ["/corpus.txt"]
    downloads = sorted(p.name for p in (cache_dir / "downloads").iterdir())
    assert len(downloads) == 2
    assert downloads[0].endswith("-corpus.txt")
    record = json.loads((cache_dir / "downloads" / downloads[1]).read_text(encoding="utf-8"))
    assert record["url"] == url
    assert record["sha256"] == hashlib.sha256(CORPUS.encode("utf-8")).hexdigest()
    assert record["bytes"] == len(CORPUS.encode("utf-8"))
    assert "downloaded_at" in record


def test_url_corpus_is_downloaded_once(server: Server):
    url = f"{server.base_url}/corpus.txt"
    corpus = open_corpus(DataConfig(source=url))
    assert list(corpus.documents("train")) == [CORPUS]
    assert corpus.origin == url
    assert open_corpus(DataConfig(source=url)).fingerprint == corpus.fingerprint
    assert server.requests == ["/corpus.txt"]


def test_a_corrupted_download_is_fetched_again(server: Server, cache_dir: Path):
    url = f"{server.base_url}/corpus.txt"
    open_corpus(DataConfig(source=url))
    (cached,) = (cache_dir / "downloads").glob("*-corpus.txt")
    cached.write_text("truncated", encoding="utf-8")
    assert downloaded_text(url) == CORPUS
    assert len(server.requests) == 2


def test_http_404_raises_a_data_error(server: Server, cache_dir: Path):
    url = f"{server.base_url}/missing.txt"
    with pytest.raises(DataError, match="HTTP 404 Not Found") as err:
        open_corpus(DataConfig(source=url))
    assert url in str(err.value)
    assert not list((cache_dir / "downloads").iterdir())  # no partial file left behind


def test_unreachable_server_raises_a_data_error():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match="could not download"):
        open_corpus(DataConfig(source=f"http://127.0.0.1:{port}/corpus.txt"))


def test_a_broken_download_resumes_where_it_stopped(cache_dir: Path):
    """The first answer breaks off halfway; the second attempt asks only for the rest."""
    body = CORPUS.encode("utf-8")
    ranges: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ranges.append(self.headers.get("Range"))
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if ranges[-1] else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if len(ranges) == 1:
                self.wfile.write(body[: len(body) // 2])  # then hang up
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/corpus.txt"
        with pytest.raises(DataError, match="run again to resume"):
            open_corpus(DataConfig(source=url))
        assert downloaded_text(url) == CORPUS
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert ranges == [None, f"bytes={len(body) // 2}-"]
    sidecar = next((cache_dir / "downloads").glob("*.json"))
    assert json.loads(sidecar.read_text())["sha256"] == hashlib.sha256(body).hexdigest()
