from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinygpt.config import DataConfig
from tinygpt.data.sources import default_cache_dir, open_corpus, read_source, split_documents
from tinygpt.errors import DataError

TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the local test server must be reached directly
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return cache


def test_default_cache_dir_follows_the_environment(cache_dir: Path):
    assert default_cache_dir() == cache_dir


def test_builtin_tinyshakespeare_is_the_recorded_corpus():
    source = read_source("tinyshakespeare")
    assert len(source.text) == 1_115_394
    assert source.sha256 == TINYSHAKESPEARE_SHA256
    assert source.text.startswith("First Citizen:\n")
    assert "tinyshakespeare" in source.origin


def test_builtin_corpus_matches_the_shared_copy(shared_data: Path):
    expected = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert read_source("tinyshakespeare").text == expected


def test_local_file_is_read_unchanged_except_for_a_bom(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    text = "line one\r\nline two\n\ttabs and é  \n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    source = read_source(str(path))
    assert source.text == text
    assert source.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert source.origin == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b" \n\t\n", "only whitespace"),
        (b"text\x00\x01\x02 more", "looks binary"),
        (b"caf\xc3\xa9 and caf\xe9", "not valid UTF-8 (bad byte at offset 13)"),
        (b"\xef\xbb\xbfcaf\xe9", "not valid UTF-8 (bad byte at offset 6)"),
    ],
)
def test_bad_local_files_raise_a_data_error(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_source(str(path))
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_directory_raises_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="is a directory"):
        read_source(str(tmp_path))


@pytest.mark.parametrize(
    "content",
    [None, b"", b" \n", b"a\x00b", b"caf\xc3\xa9 caf\xe9", b"\xef\xbb\xbfcaf\xe9", b"caf\xc3"],
    ids=["missing", "empty", "whitespace", "binary", "latin1", "bom-latin1", "cut-character"],
)
def test_open_corpus_reports_bad_files_as_read_source_does(tmp_path: Path, content: bytes | None):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as expected:
        read_source(str(path))
    message = str(expected.value).split(";")[0]  # the fix hint lists more source kinds
    with pytest.raises(DataError, match=re.escape(message)):
        open_corpus(DataConfig(source=str(path)))


@pytest.mark.parametrize(
    ("text", "documents"),
    [
        ("one text\n\nwith paragraphs\n", ["one text\n\nwith paragraphs\n"]),
        ("<|endoftext|>\na\n<|endoftext|>\n\n<|endoftext|>\nb", ["a", "b"]),
        ("a\n  <|endoftext|>  \nb\n", ["a", "b"]),
        ("a <|endoftext|> b\n", ["a <|endoftext|> b\n"]),  # not alone on its line
    ],
)
def test_split_documents_on_endoftext_lines_only(text: str, documents: list[str]):
    assert list(split_documents(io.StringIO(text, newline=""))) == documents


# ----------------------------------------------------------------------------------------------
# Downloads from a local server


@dataclass
class Server:
    base_url: str
    requests: list[str] = field(default_factory=list)


CORPUS = "To be, or not to be: that is the question.\n" * 100


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
    first = read_source(url)
    second = read_source(url)
    assert first.text == second.text == CORPUS
    assert first.origin == url
    assert server.requests == ["/corpus.txt"]
    downloads = sorted(p.name for p in (cache_dir / "downloads").iterdir())
    assert len(downloads) == 2
    assert downloads[0].endswith("-corpus.txt")
    record = json.loads((cache_dir / "downloads" / downloads[1]).read_text(encoding="utf-8"))
    assert record["url"] == url
    assert record["sha256"] == first.sha256
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
    read_source(url)
    (cached,) = (cache_dir / "downloads").glob("*-corpus.txt")
    cached.write_text("truncated", encoding="utf-8")
    assert read_source(url).text == CORPUS
    assert len(server.requests) == 2


def test_http_404_raises_a_data_error(server: Server, cache_dir: Path):
    url = f"{server.base_url}/missing.txt"
    with pytest.raises(DataError, match="HTTP 404 Not Found") as err:
        read_source(url)
    assert url in str(err.value)
    assert not list((cache_dir / "downloads").iterdir())  # no partial file left behind


def test_unreachable_server_raises_a_data_error():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match="could not download"):
        read_source(f"http://127.0.0.1:{port}/corpus.txt")


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
            read_source(url)
        assert read_source(url).text == CORPUS
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert ranges == [None, f"bytes={len(body) // 2}-"]
    sidecar = next((cache_dir / "downloads").glob("*.json"))
    assert json.loads(sidecar.read_text())["sha256"] == hashlib.sha256(body).hexdigest()
