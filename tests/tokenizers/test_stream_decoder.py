"""StreamDecoder decodes a window, not everything so far: its pieces must still join to the
decoding of all ids, for every tokenizer and any ids a model may sample (invalid UTF-8 too)."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.tokenizers.base import StreamDecoder, Tokenizer
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

KINDS = ["char", "bpe", "sentencepiece", "gpt2"]


class Tokenizers:
    """The tokenizer of each kind, made when a test first asks for it: GPT-2's needs its BPE
    files from ../shared/data, so only the gpt2 cases skip where those are absent."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.made: dict[str, Tokenizer] = {}

    def __getitem__(self, kind: str) -> Tokenizer:
        if kind not in self.made:
            self.made[kind] = self._make(kind)
        return self.made[kind]

    def _make(self, kind: str) -> Tokenizer:
        if kind == "gpt2":
            shared_data: Path = self.request.getfixturevalue("shared_data")
            return GPT2Tokenizer.load(str(shared_data / "gpt2_bpe"))
        if kind == "char":
            documents: list[str] = self.request.getfixturevalue("training_documents")
            return CharTokenizer.train("".join(documents[:50]))
        return self.request.getfixturevalue("bpe" if kind == "bpe" else "spiece")


@pytest.fixture(scope="module")
def tokenizers(request: pytest.FixtureRequest) -> Tokenizers:
    return Tokenizers(request)


def stream(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    decoder = StreamDecoder(tokenizer)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None)
@given(fractions=st.lists(st.floats(0, 1, exclude_max=True), max_size=40))
def test_pieces_of_any_ids_join_to_the_decoding_of_all(tokenizers, kind, fractions):
    tokenizer = tokenizers[kind]
    ids = [int(f * tokenizer.vocab_size) for f in fractions]  # any id in the vocabulary
    assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_a_flush_midway_then_more_ids_still_join(tokenizers, kind):
    tokenizer = tokenizers[kind]
    first, second = tokenizer.encode("Once upon a time, "), tokenizer.encode("Lily 😀 ran.")
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in first] + [decoder.flush()]
    pieces += [decoder.push(i) for i in second] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(first + second)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "gpt2"])
def test_a_character_split_across_byte_tokens_is_never_released_in_part(tokenizers, kind):
    tokenizer = tokenizers[kind]
    text = "Tea 🫖 and 😀🚀, naïve 日本語 ❤️ ẞ!"  # 🫖 and ẞ are not in the small vocabularies
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split())  # some characters take several byte tokens
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_pieces_of_encoded_text_join_to_the_text(tokenizers, kind, text):
    tokenizer = tokenizers[kind]
    if kind == "char":
        text = "".join(c for c in text if c in tokenizer.chars)  # its vocabulary only
    assert "".join(stream(tokenizer, tokenizer.encode(text))) == text
