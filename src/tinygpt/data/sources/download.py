"""http(s) sources, downloaded once into the cache and reused while their sha256 still matches
the sidecar record written beside them; a download that breaks off resumes where it stopped."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from tinygpt.atomic_files import write_bytes_atomic
from tinygpt.data.sources.text_files import CHUNK_BYTES
from tinygpt.errors import DataError

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60
URL_PATTERN = re.compile(r"https?://", flags=re.IGNORECASE)


def is_url(source: str) -> bool:
    return URL_PATTERN.match(source) is not None


def download(url: str, cache_dir: Path) -> Path:
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
    return _hash_of(path)[0].hexdigest()


def _fetch_to(url: str, target: Path) -> tuple[str, int]:
    """Stream into `target.part`, then rename it to `target`. A download that breaks off keeps
    its `.part`, and the next attempt asks the server for the rest (an HTTP Range request)
    instead of starting again; a server that ignores ranges sends it all, which is fine too."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "tinygpt"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            resumed = have > 0 and response.status == 206
            if have and not resumed:
                logger.info("%s does not resume downloads; starting again", url)
            digest, size = _hash_of(partial) if resumed else (hashlib.sha256(), 0)
            expected = response.headers.get("Content-Length")
            with open(partial, "ab" if resumed else "wb") as file:
                received = 0
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                file.flush()
                os.fsync(file.fileno())
            size += received
            if expected is not None and received != int(expected):
                raise DataError(
                    f"the download of {url} broke off after {size:,} bytes; run again to "
                    "resume the download"
                )
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range starts at the end: the .part is complete
            digest, size = _hash_of(partial)
        else:
            raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DataError(
            f"could not download {url}: {err.reason}; check the address and your connection"
        ) from None
    except TimeoutError:
        raise DataError(
            f"could not download {url}: no answer within {DOWNLOAD_TIMEOUT_S} s; run again to "
            "resume the download"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        raise DataError(
            f"could not download {url}: {err!r}; run again to resume the download"
        ) from None
    os.replace(partial, target)
    return digest.hexdigest(), size


def _hash_of(path: Path) -> tuple[Any, int]:
    """A running sha256 of what is already downloaded, to continue with the rest."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest, path.stat().st_size
