"""Every tinygpt tokenizer as Hugging Face files: the same ids in transformers, and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase
from transformers import GPT2Tokenizer as HFGPT2Tokenizer

from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.export.hf_tokenizer import export_tokenizer, import_tokenizer
from tinygpt.tokenizers.base import Tokenizer
from tinygpt.tokenizers.bpe import BPETokenizer
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

SAMPLE_TEXT = "First Citizen:\nBefore we proceed any further, hear me speak."
TEXTS = [
    "Once upon a time, Lily found 22 red balls (333 in 2024)!",
    "  two  spaces,\ttabs\n\n\nand new lines \n",
    "café naïve über 日本語 привет 😀🚀 don't it's we'll",
    "unseen: ☃ ŋ \U0001d518 \x00 \u200b",
    "## Heading #1 ### (GPT-2 has merges that start with #)",
    "",
]
SPECIAL_STRINGS = ("<|endoftext|>", "<s>", "</s>", "<sep>", "<pad>", "<unk>", "\u2581")


def write_hf_tokenizer(tokenizer: Tokenizer, directory: Path) -> PreTrainedTokenizerBase:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in export_tokenizer(tokenizer, model_max_length=64).files.items():
        (directory / name).write_bytes(data)
    return AutoTokenizer.from_pretrained(directory)


def assert_same_ids(tokenizer: Tokenizer, hf: PreTrainedTokenizerBase, text: str) -> None:
    ids = tokenizer.encode(text)
    assert hf.encode(text) == ids, text
    assert hf.decode(ids) == tokenizer.decode(ids), text


@pytest.fixture(scope="module")
def hf_spiece(spiece: SentencePieceTokenizer, tmp_path_factory) -> PreTrainedTokenizerBase:
    return write_hf_tokenizer(spiece, tmp_path_factory.mktemp("spiece"))


@pytest.fixture
def gpt2(shared_data: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer.load(str(shared_data / "gpt2_bpe"))


def test_char_ids_match_and_decode_round_trips(char_tokenizer, sample_text: str, tmp_path: Path):
    hf = write_hf_tokenizer(char_tokenizer, tmp_path)
    for text in (sample_text, "speak  me\n\n:,!", ""):
        assert_same_ids(char_tokenizer, hf, text)
        assert hf.decode(hf.encode(text)) == text


def test_char_unknown_characters_map_to_the_unk_id(tmp_path: Path):
    tokenizer = CharTokenizer.train(SAMPLE_TEXT, unknown_chars="unk")
    hf = write_hf_tokenizer(tokenizer, tmp_path)
    text = "Speak, ☃ citizen 😀!"
    assert tokenizer.unk_id in tokenizer.encode(text)
    assert_same_ids(tokenizer, hf, text)


def test_char_without_unk_refuses_unknown_characters(char_tokenizer, tmp_path: Path):
    hf = write_hf_tokenizer(char_tokenizer, tmp_path)
    with pytest.raises(Exception, match=r"(?i)unk"):
        hf.encode("☃")


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_ids_match(bpe: BPETokenizer, tmp_path: Path, text: str):
    assert_same_ids(bpe, write_hf_tokenizer(bpe, tmp_path), text)


def test_bpe_special_tokens_are_named(bpe: BPETokenizer, tmp_path: Path):
    hf = write_hf_tokenizer(bpe, tmp_path)
    assert hf.eos_token_id == bpe.eot_id
    assert hf.pad_token_id == bpe.special_tokens["<pad>"]
    assert hf.bos_token_id == bpe.special_tokens["<s>"]


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_ids_match(spiece, hf_spiece, text: str):
    assert_same_ids(spiece, hf_spiece, text)


# codec="utf-8": no lone surrogates, which no text file holds and sentencepiece cannot take
@settings(max_examples=150, deadline=None)
@given(
    st.text(
        st.sampled_from(list("Lily dog 12 ,.\n\t日😀é☃")) | st.characters(codec="utf-8"),
        max_size=60,
    )
)
def test_sentencepiece_ids_match_on_any_text(spiece, hf_spiece, text: str):
    if any(special in text for special in SPECIAL_STRINGS):
        return  # transformers matches these inside text; tinygpt never does (module docstring)
    assert_same_ids(spiece, hf_spiece, text)


@pytest.mark.parametrize("text", TEXTS)
def test_gpt2_ids_match(gpt2: GPT2Tokenizer, tmp_path: Path, text: str):
    assert_same_ids(gpt2, write_hf_tokenizer(gpt2, tmp_path), text)


def test_gpt2_files_load_in_gpt2_tokenizer_fast(gpt2: GPT2Tokenizer, tmp_path: Path):
    write_hf_tokenizer(gpt2, tmp_path)
    (tmp_path / "tokenizer.json").unlink()  # from vocab.json and merges.txt alone
    hf = GPT2TokenizerFast.from_pretrained(tmp_path)
    assert hf.encode(TEXTS[0]) == gpt2.encode(TEXTS[0])
    assert hf.eos_token_id == gpt2.eot_id == 50256


@pytest.mark.parametrize("kind", ["char", "char-unk", "bpe", "sentencepiece"])
def test_import_gives_back_the_same_tokenizer(kind, request, tmp_path: Path):
    tokenizer = {
        "char": lambda: CharTokenizer.train(SAMPLE_TEXT),
        "char-unk": lambda: CharTokenizer.train(SAMPLE_TEXT, unknown_chars="unk"),
        "bpe": lambda: request.getfixturevalue("bpe"),
        "sentencepiece": lambda: request.getfixturevalue("spiece"),
    }[kind]()
    write_hf_tokenizer(tokenizer, tmp_path / "hf")
    imported = import_tokenizer(tmp_path / "hf")
    assert imported.tokenizer.to_dict() == tokenizer.to_dict()
    assert imported.data_fields["tokenizer"] == tokenizer.kind


@pytest.mark.parametrize("layout", ["vocab.json + merges.txt", "tokenizer.json alone"])
def test_import_of_gpt2s_files_is_the_gpt2_tokenizer(gpt2: GPT2Tokenizer, layout, tmp_path: Path):
    write_hf_tokenizer(gpt2, tmp_path / "hf")
    if layout == "tokenizer.json alone":
        (tmp_path / "hf" / "vocab.json").unlink()
        (tmp_path / "hf" / "merges.txt").unlink()
    imported = import_tokenizer(tmp_path / "hf")
    assert isinstance(imported.tokenizer, GPT2Tokenizer)
    assert imported.data_fields == {"tokenizer": "gpt2"}
    assert imported.tokenizer.encode(TEXTS[2]) == gpt2.encode(TEXTS[2])


@pytest.fixture(scope="module")
def transformers5_gpt2_dir(shared_data: Path, tmp_path_factory) -> Path:
    """GPT-2's tokenizer as today's transformers saves it: tokenizer.json, no vocab.json and
    merges.txt (what `GPT2Tokenizer.from_pretrained("gpt2").save_pretrained` writes)."""
    bpe = shared_data / "gpt2_bpe"
    vocab = json.loads((bpe / "encoder.json").read_text(encoding="utf-8"))
    lines = (bpe / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    directory = tmp_path_factory.mktemp("transformers5-gpt2")
    HFGPT2Tokenizer(vocab=vocab, merges=[tuple(line.split(" ")) for line in lines]).save_pretrained(
        directory
    )
    return directory


def test_transformers5_gpt2_tokenizer_json_alone_is_the_gpt2_tokenizer(
    transformers5_gpt2_dir: Path, gpt2: GPT2Tokenizer
):
    assert not (transformers5_gpt2_dir / "vocab.json").exists()  # the layout that was refused
    imported = import_tokenizer(transformers5_gpt2_dir)
    assert isinstance(imported.tokenizer, GPT2Tokenizer)
    assert imported.tokenizer.encode(TEXTS[0]) == gpt2.encode(TEXTS[0])


def test_a_gpt2_tokenizer_json_with_one_merge_less_is_not_gpt2s(
    transformers5_gpt2_dir: Path, tmp_path: Path
):
    document = json.loads((transformers5_gpt2_dir / "tokenizer.json").read_text("utf-8"))
    document["model"]["merges"].pop()
    (tmp_path / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    # a byte-level BPE, then; without tinygpt's special tokens it is refused in one message
    with pytest.raises(ConfigError, match="byte-level BPE that tinygpt cannot use"):
        import_tokenizer(tmp_path)


def test_import_refuses_a_tokenizer_without_tinygpt_equivalent(tmp_path: Path):
    document = {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}, "pre_tokenizer": None}
    (tmp_path / "tokenizer.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError, match="WordPiece tokenizer with no tinygpt equivalent"):
        import_tokenizer(tmp_path)


def test_truncated_gpt2_files_without_tokenizer_json_are_named(gpt2: GPT2Tokenizer, tmp_path):
    write_hf_tokenizer(gpt2, tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    merges = (tmp_path / "merges.txt").read_bytes()
    (tmp_path / "merges.txt").write_bytes(merges[: len(merges) // 2])
    with pytest.raises(CheckpointError, match=r"merges\.txt that are not GPT-2's"):
        import_tokenizer(tmp_path)
