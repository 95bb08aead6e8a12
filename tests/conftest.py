"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinygpt.tokenizers.bpe import BPETokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer

# models exported with their own code are loaded with trust_remote_code, which copies the code
# into HF_MODULES_CACHE: a throwaway folder, not the user's ~/.cache (set before transformers is
# imported, which reads it once)
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="tinygpt-test-hf-modules-"))

# <repo>/../shared/data: real corpora kept outside the repository
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# small dialog corpora written for the tests, in the layouts of the real ones
DIALOG_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dialogs"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real text files (tinyshakespeare.txt, ...); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dialog_fixtures() -> Path:
    """Small dialog corpora written for the tests (tests/fixtures/dialogs), so that dialog tests
    run without ../shared/data: `dailydialog/` in DailyDialog's layout (train/, validation/ and
    test/ folders of `__eou__` lines: 50, 10 and 3 dialogues, act and emotion label files beside
    them) and `prosocial_dialog/examples.json`, two ProSocial Dialog dialogues (3 and 2 turns) as
    one object of columns."""
    return DIALOG_FIXTURES


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data and downloads go to a throwaway cache, never the user's ~/.cache."""
    import os

    cache = tmp_path_factory.mktemp("tinygpt-cache")
    os.environ["TINYGPT_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Every test runs on one torch thread. The models here are tiny, and a tiny model is
    fastest on one thread; on a busy 2-core machine two threads make every op wait for a core
    (about 10 ms instead of 10 us): 100 steps of the 2-layer model that tests/model overfits
    took 92 s on two threads and 4.6 s on one, with other jobs on the cores. The processes the
    tests start (the real binary, `torchrun`) get one thread through OMP_NUM_THREADS."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(previous)


@pytest.fixture
def offline_gpt2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GPT-2's BPE files only from where a test puts them: no download, and no file that
    tiktoken cached earlier. Modules opt in with `pytest.mark.usefixtures("offline_gpt2")`."""
    import tiktoken.load

    from tinygpt.tokenizers.tiktoken_gpt2 import BPE_DIR_ENV

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.delenv(BPE_DIR_ENV, raising=False)

    def no_network(url: str) -> bytes:
        raise OSError("no network in tests")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)


@pytest.fixture
def tiny_config():
    """2 layers, n_embd 32: big enough to have every part of the model, fast enough for a test."""
    from tinygpt.config import ModelConfig

    return ModelConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)


@pytest.fixture(scope="session")
def small_text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40,000 characters of the built-in TinyShakespeare: real text, quick to train on."""
    from tinygpt.data.sources.builtin import read_builtin_corpus

    path = tmp_path_factory.mktemp("text") / "shakespeare_head.txt"
    path.write_text(read_builtin_corpus("tinyshakespeare").text[:40_000], encoding="utf-8")
    return path


# A small synthetic corpus, and the BPE and SentencePiece tokenizers trained on it (in about a
# second), shared by the tokenizer and export tests.
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


@pytest.fixture(scope="session")
def bpe(training_documents: list[str]) -> BPETokenizer:
    return BPETokenizer.train(iter(training_documents), vocab_size=500)


@pytest.fixture(scope="session")
def spiece(training_documents: list[str]) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(iter(training_documents), vocab_size=500)
