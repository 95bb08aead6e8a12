"""Where training text comes from: a built-in corpus, a local file, or an http(s) URL.

Every source becomes a `SourceText` whose sha256 identifies the content, so prepared data is
cached by what the text is, not by where it was found.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from tinygpt.atomic_files import open_atomic, write_bytes_atomic
from tinygpt.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN_CORPORA = ("tinyshakespeare",)
DOWNLOAD_TIMEOUT_S = 60
BINARY_SNIFF_BYTES = 8192  # a NUL byte this early means the file is not text
UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceText:
    text: str
    sha256: str  # of the UTF-8 bytes of `text` (after any BOM is stripped)
    origin: str  # for people: "built-in corpus tinyshakespeare", a path or a URL


def default_cache_dir() -> Path:
    """Downloads and prepared datasets live here; TINYGPT_CACHE_DIR moves it (tests, clusters)."""
    configured = os.environ.get("TINYGPT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tinygpt"


def read_source(source: str, cache_dir: Path | None = None) -> SourceText:
    """Read text from a built-in corpus name, an http(s) URL (cached), or a local path."""
    if source in BUILTIN_CORPORA:
        return _read_builtin_corpus(source)
    if re.match(r"https?://", source, flags=re.IGNORECASE):
        path = _download(source, cache_dir if cache_dir is not None else default_cache_dir())
        return _decode_text(_read_file_bytes(path, source), source)
    path = Path(source).expanduser()
    return _decode_text(_read_file_bytes(path, str(path)), str(path))


def _read_builtin_corpus(name: str) -> SourceText:
    corpora = resources.files("tinygpt.data") / "corpora"
    metadata = json.loads((corpora / f"{name}.json").read_text(encoding="utf-8"))
    data = gzip.decompress((corpora / metadata["file"]).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != metadata["sha256"]:
        raise DataError(
            f"built-in corpus {name} is corrupted (sha256 {digest[:12]}..., expected "
            f"{metadata['sha256'][:12]}...); reinstall tinygpt"
        )
    return SourceText(data.decode("utf-8"), digest, f"built-in corpus {name}")


def _read_file_bytes(path: Path, origin: str) -> bytes:
    if not path.exists():
        raise DataError(
            f"{origin} does not exist; give a text file, an http(s) URL or a built-in corpus "
            f"name ({', '.join(BUILTIN_CORPORA)})"
        )
    if path.is_dir():
        raise DataError(f"{origin} is a directory; give a text file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"could not read {origin}: {err.strerror or err}") from None


def _decode_text(data: bytes, origin: str) -> SourceText:
    """Check that `data` is usable text; strip a BOM and normalise nothing else."""
    skipped = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    data = data[skipped:]
    nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        raise DataError(
            f"{origin} looks binary (NUL byte at offset {skipped + nul}); give a UTF-8 text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{origin} is not valid UTF-8 (bad byte at offset {skipped + err.start}); "
            "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    if not text.strip():
        what = "is empty" if not text else "has only whitespace"
        raise DataError(f"{origin} {what}; give a file with some text")
    return SourceText(text, hashlib.sha256(data).hexdigest(), origin)


# ----------------------------------------------------------------------------------------------
# Downloads


def _download(url: str, cache_dir: Path) -> Path:
    """Download `url` once into the cache; later calls reuse it while its sha256 still matches."""
    downloads = cache_dir / "downloads"
    target = downloads / _download_name(url)
    sidecar = target.with_name(target.name + ".json")
    if _is_cached(target, sidecar, url):
        logger.info("using cached download of %s from %s", url, target)
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    digest, size = _fetch_to(url, target)
    record = {
        "url": url,
        "sha256": digest,
        "bytes": size,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(sidecar, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return target


def _download_name(url: str) -> str:
    """The URL's hash keeps two `input.txt`s apart; the basename keeps the cache readable."""
    basename = PurePosixPath(urllib.parse.urlsplit(url).path).name
    basename = re.sub(r"[^A-Za-z0-9._-]", "_", basename)[:80] or "download"
    return f"{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}-{basename}"


def _is_cached(target: Path, sidecar: Path, url: str) -> bool:
    try:
        record: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
        return record.get("url") == url and record.get("sha256") == _file_sha256(target)
    except (OSError, ValueError, AttributeError):
        return False


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_to(url: str, target: Path) -> tuple[str, int]:
    """Stream to a temp file beside `target`, then rename: a failed download leaves no file."""
    request = urllib.request.Request(url, headers={"User-Agent": "tinygpt"})
    digest, size = hashlib.sha256(), 0
    try:
        with (
            open_atomic(target) as file,
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            while chunk := response.read(CHUNK_BYTES):
                file.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as err:
        raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DataError(
            f"could not download {url}: {err.reason}; check the address and your connection"
        ) from None
    except TimeoutError:
        raise DataError(
            f"could not download {url}: no answer within {DOWNLOAD_TIMEOUT_S} s; try again later"
        ) from None
    except OSError as err:
        raise DataError(f"could not download {url}: {err}") from None
    return digest.hexdigest(), size
