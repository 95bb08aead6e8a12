"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

# <repo>/../shared/data: real corpora kept outside the repository
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The folder of real text files (tinyshakespeare.txt, ...); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA
