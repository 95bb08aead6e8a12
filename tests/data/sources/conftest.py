from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads into a fresh cache per test, from a local server reached without a proxy."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the local test server must be reached directly
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return cache
