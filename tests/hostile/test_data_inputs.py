"""Hostile data inputs: tokenizer files of another kind or edited, truncated GPT-2 folders,
Hugging Face folders with malformed tokenizers. Each is one line naming the file, never a
traceback, and never a tokenizer that only looks like the one named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from tinygpt.config import DataConfig
from tinygpt.data.prepare import prepare_dataset
from tinygpt.errors import TinyGPTError
from tinygpt.export.hf_tokenizer import export_tokenizer, import_tokenizer
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

TEXT = "To be, or not to be, that is the question.\n" * 40


pytestmark = pytest.mark.usefixtures("offline_gpt2")


@pytest.fixture
def gpt2_document(shared_data: Path) -> dict:
    return GPT2Tokenizer.load(str(shared_data / "gpt2_bpe")).to_dict()


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d["vocab_bpe"].pop(), "not GPT-2's vocab.bpe"),  # a truncated copy
        (lambda d: d["vocab_bpe"].insert(1, "Ġ x"), "not GPT-2's vocab.bpe"),  # a merge added
        (lambda d: d.update(vocab_bpe="#version: 0.2\nĠ t\n"), "must be a list of strings"),
        (lambda d: d.pop("vocab_bpe"), "needs vocab_bpe"),
        (lambda d: d.update(kind="wordpiece"), "unknown kind 'wordpiece'"),
    ],
)
def test_an_edited_gpt2_tokenizer_json_is_refused(gpt2_document, edit, fragment, tmp_path):
    edit(gpt2_document)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(gpt2_document), encoding="utf-8")
    with pytest.raises(TinyGPTError, match=fragment) as raised:
        load_tokenizer(path)
    one_line(str(raised.value))
    assert str(path) in str(raised.value)


def test_a_prepared_directory_with_a_tokenizer_json_of_another_kind(tmp_path, gpt2_document):
    source = tmp_path / "text.txt"
    source.write_text(TEXT, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(source), workers=1), out_dir=tmp_path / "p")
    # meta.json says char (of 20 ids), the tokenizer is now GPT-2's: its ids mean other text
    prepared.tokenizer_path.write_text(json.dumps(gpt2_document), encoding="utf-8")
    with pytest.raises(TinyGPTError, match="is a gpt2 tokenizer of 50257 tokens") as raised:
        prepare_dataset(DataConfig(source=str(prepared.directory)))
    one_line(str(raised.value))


def test_a_prepared_directory_whose_tokenizer_lost_a_character(tmp_path):
    source = tmp_path / "text.txt"
    source.write_text(TEXT, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(source), workers=1), out_dir=tmp_path / "p")
    smaller = CharTokenizer.train(TEXT.replace("q", ""))
    smaller.save(prepared.tokenizer_path)
    with pytest.raises(
        TinyGPTError, match=f"char tokenizer of {smaller.vocab_size} tokens"
    ) as raised:
        prepare_dataset(DataConfig(source=str(prepared.directory)))
    one_line(str(raised.value))


def test_a_meta_json_naming_an_unknown_tokenizer_is_one_line(capsys, tmp_path):
    source = tmp_path / "text.txt"
    source.write_text(TEXT, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(source), workers=1), out_dir=tmp_path / "p")
    meta_path = prepared.directory / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "tokenizer": "wordpiece"}), encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "--data", prepared.directory, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "meta.json is unreadable", "tokenizer='wordpiece'")
    assert not (tmp_path / "r").exists()


def test_a_gpt2_bpe_dir_with_a_truncated_vocab_bpe_is_one_line(capsys, shared_data, tmp_path):
    folder = Path(shutil.copytree(shared_data / "gpt2_bpe", tmp_path / "gpt2_bpe"))
    merges = (folder / "vocab.bpe").read_bytes()
    (folder / "vocab.bpe").write_bytes(merges[: len(merges) // 2])
    source = tmp_path / "text.txt"
    source.write_text(TEXT, encoding="utf-8")
    code, _, err = run_cli(capsys, "prepare", source, "--out", tmp_path / "p", "--tokenizer",
                           "gpt2", "--gpt2_bpe_dir", folder, "--workers", "1")  # fmt: skip
    assert_one_line_error(code, err, "does not hold GPT-2's BPE files")


# ----------------------------------------------------------------------------------------------
# Hugging Face folders


@pytest.fixture
def gpt2_files(shared_data: Path) -> dict[str, bytes]:
    """GPT-2's tokenizer as Hugging Face names its files."""
    bpe = shared_data / "gpt2_bpe"
    return {
        "vocab.json": (bpe / "encoder.json").read_bytes(),
        "merges.txt": (bpe / "vocab.bpe").read_bytes(),
    }


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_a_truncated_gpt2_folder_is_named_in_one_line(gpt2_files, tmp_path):
    files = {name: data[: len(data) // 2] for name, data in gpt2_files.items()}
    with pytest.raises(TinyGPTError, match=r"merges\.txt that are not GPT-2's") as raised:
        import_tokenizer(write_folder(tmp_path / "hf", files))
    one_line(str(raised.value))


@pytest.mark.parametrize(
    "tokenizer_json",
    [
        b"\xff\xfe not UTF-8",
        b'{"model": {"type": "BPE"}',  # cut off
        b'["a list"]',
        b'{"model": {"type": 7}}',
        b'{"model": {"type": "BPE", "vocab": [], "merges": 3}, "pre_tokenizer": "ByteLevel"}',
        b'{"model": {"type": "BPE", "vocab": [1], "merges": [[1, 2]]}, '
        b'"pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": [{"content": []}]}',
        b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}, '
        b'"pre_tokenizer": {"type": "ByteLevel"}}',  # "aa" lacking: the Rust library panics
    ],
)
def test_a_malformed_tokenizer_json_is_one_line(tokenizer_json: bytes, tmp_path: Path):
    folder = write_folder(tmp_path / "hf", {"tokenizer.json": tokenizer_json})
    with pytest.raises(TinyGPTError, match=r"tokenizer\.json") as raised:
        import_tokenizer(folder)
    one_line(str(raised.value))


def test_gpt2s_tokenizer_json_with_a_prefix_space_is_not_taken_for_gpt2s(shared_data, tmp_path):
    """Encoding " Hello" where GPT-2 encodes "Hello" would give other ids: not GPT-2's."""
    gpt2 = GPT2Tokenizer.load(str(shared_data / "gpt2_bpe"))
    document = json.loads(export_tokenizer(gpt2, 64).files["tokenizer.json"])
    document["pre_tokenizer"]["add_prefix_space"] = True
    folder = write_folder(tmp_path / "hf", {"tokenizer.json": json.dumps(document).encode()})
    with pytest.raises(TinyGPTError, match="byte-level BPE that tinygpt cannot use"):
        import_tokenizer(folder)


def test_a_run_bpe_tokenizer_with_a_merge_the_vocabulary_lacks_is_one_line(tmp_path):
    """Such a merge made the Rust library panic: a backtrace, then a BaseException."""
    from tinygpt.tokenizers.bpe import BPETokenizer

    document = BPETokenizer.train([TEXT], vocab_size=300).to_dict()
    document["hf_tokenizer"]["model"]["merges"].append(["!", '"'])  # '!"' is no token
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TinyGPTError, match="makes a token the vocabulary lacks") as raised:
        load_tokenizer(path)
    one_line(str(raised.value))
