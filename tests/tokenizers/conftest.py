"""A small synthetic corpus that trains BPE and SentencePiece tokenizers in well under a second."""

from __future__ import annotations

import random

import pytest

VOCABULARY = (
    "once upon a time there was little girl named Lily she loved to play in the park with her "
    "dog Max one day they found big red ball and ran home happy mom said you are good friends "
    "café naïve über straße 日本語 привет 😀 🚀 ❤️ 1 22 333 2024 don't it's we'll"
)


@pytest.fixture(scope="session")
def training_documents() -> list[str]:
    """About 150 kB of story-like documents with paragraphs, accents, CJK and emoji."""
    rng = random.Random(0)
    words = VOCABULARY.split()

    def sentence() -> str:
        chosen = rng.choices(words, k=rng.randint(4, 12))
        return " ".join(chosen).capitalize() + rng.choice([".", "!", "?", ","])

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.randint(2, 6)))

    return ["\n\n".join(paragraph() for _ in range(rng.randint(1, 4))) for _ in range(400)]
