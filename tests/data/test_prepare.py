from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinygpt.data.prepare as prepare
from tinygpt.config import DataConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import PreparedData, load_prepared, prepare_dataset
from tinygpt.errors import DataError
from tinygpt.tokenizers.base import load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer

TEXT = "hello world, this is a small corpus.\n" * 30  # 1110 characters


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_split_is_contiguous_ninety_ten_in_uint16(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus)))
    assert prepared.directory.parent == cache_dir / "prepared"
    assert prepared.dtype == "uint16"
    assert prepared.train_tokens == int(len(TEXT) * 0.9) == 999
    assert prepared.val_tokens == len(TEXT) - 999
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.vocab_size == prepared.vocab_size == len(set(TEXT))
    train = open_tokens(prepared.train_path, prepared.dtype)
    val = open_tokens(prepared.val_path, prepared.dtype)
    assert tokenizer.decode(train) + tokenizer.decode(val) == TEXT
    assert prepared.train_path.stat().st_size == 2 * prepared.train_tokens


def test_meta_json_records_how_the_data_was_made(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus), unknown_chars="unk"))
    meta = json.loads((prepared.directory / "meta.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == prepare.FORMAT_VERSION
    assert meta["origin"] == str(corpus)
    assert meta["tokenizer"] == "char"
    assert meta["unknown_chars"] == "unk"
    assert meta["val_fraction"] == 0.1
    assert meta["vocab_size"] == len(set(TEXT)) + 1
    assert load_prepared(prepared.directory) == prepared


def test_second_call_reuses_the_files_without_tokenizing(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    first = prepare_dataset(DataConfig(source=str(corpus)))

    def fail(*args: object) -> None:
        raise AssertionError("the data was tokenized again")

    monkeypatch.setattr(prepare, "build_tokenizer", fail)
    assert prepare_dataset(DataConfig(source=str(corpus))) == first


def test_a_changed_source_is_prepared_again(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    corpus.write_text(TEXT + "more text!\n", encoding="utf-8")
    second = prepare_dataset(DataConfig(source=str(corpus)))
    assert second.directory != first.directory
    assert second.source_sha256 != first.source_sha256
    assert second.train_tokens + second.val_tokens == len(TEXT) + 11


def test_a_different_val_fraction_is_prepared_separately(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    second = prepare_dataset(DataConfig(source=str(corpus), val_fraction=0.2))
    assert second.directory != first.directory
    assert second.val_tokens == len(TEXT) - int(len(TEXT) * 0.8)


def test_an_interrupted_write_leaves_no_complete_looking_directory(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_cut_by_position", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(DataConfig(source=str(corpus)))
    visible = [p for p in (cache_dir / "prepared").iterdir() if not p.name.startswith(".")]
    assert visible == []  # only the hidden work directory a resumed run continues from
    monkeypatch.undo()
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(cache_dir))
    prepared = prepare_dataset(DataConfig(source=str(corpus)))
    assert prepared.train_tokens == 999


def test_a_damaged_directory_is_replaced(corpus: Path, cache_dir: Path):
    first = prepare_dataset(DataConfig(source=str(corpus)))
    first.train_path.write_bytes(b"\x00\x00")  # truncated: sizes no longer match meta.json
    second = prepare_dataset(DataConfig(source=str(corpus)))
    assert second == first
    assert first.train_path.stat().st_size == 2 * first.train_tokens


def test_too_little_text_for_two_splits_raises(tmp_path: Path, cache_dir: Path):
    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghi", encoding="utf-8")  # 8 train, 1 val
    with pytest.raises(DataError, match="each split needs at least 2"):
        prepare_dataset(DataConfig(source=str(path)))


def test_load_prepared_without_meta_raises(tmp_path: Path):
    with pytest.raises(DataError, match=r"meta\.json does not exist"):
        load_prepared(tmp_path)


def test_large_vocabularies_use_uint32(tmp_path: Path, cache_dir: Path):
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 70_000) if not 0xD800 <= c < 0xE000)
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path)))
    assert prepared.dtype == "uint32"
    tokens = np.concatenate(
        [open_tokens(p, "uint32") for p in (prepared.train_path, prepared.val_path)]
    )
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.vocab_size == len(text) + 1  # + "\n", the document separator
    assert tokens.tolist() == list(range(1, len(text) + 1))


def test_tinyshakespeare_matches_nanogpt_split(cache_dir: Path):
    prepared = prepare_dataset(DataConfig())
    assert prepared.vocab_size == 65
    assert (prepared.train_tokens, prepared.val_tokens) == (1_003_854, 111_540)


def test_val_chars_and_bytes_of_a_document_cut_by_position(tmp_path: Path, cache_dir: Path):
    text = "héllo wörld, a snowman ☃ and a 𝄞 clef.\n" * 40
    path = tmp_path / "wide.txt"
    path.write_text(text, encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    val_text = text[prepared.train_tokens :]  # one character per token
    assert prepared.val_chars == prepared.val_tokens == len(val_text)
    assert prepared.val_bytes == len(val_text.encode("utf-8"))
    assert load_prepared(prepared.directory) == prepared


def prepare_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, PreparedData]:
    """160 lines of non-ASCII text prepared in about 12 pieces; the text and the result."""
    monkeypatch.setattr(prepare, "SHARD_TEXT_BYTES", 300)
    text = "".join(f"line {i}: naïve café ☃\n" for i in range(160))
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    return text, prepare_dataset(DataConfig(source=str(path), workers=1))


def test_a_document_encoded_in_pieces_has_no_separator_inside(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    text, prepared = prepare_in_pieces(tmp_path, monkeypatch)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train = tokenizer.decode(open_tokens(prepared.train_path, prepared.dtype))
    val = tokenizer.decode(open_tokens(prepared.val_path, prepared.dtype))
    assert train + val == text  # no "\n\n" separator after each piece
    assert prepared.train_tokens == int(len(text) * 0.9)
    assert prepared.val_tokens == len(text) - prepared.train_tokens


def test_bpe_ids_of_a_document_in_pieces_are_those_of_the_whole_text(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(prepare, "SHARD_TEXT_BYTES", 40)  # about 20 pieces
    # " \n" is a learned token here (from " \n\n"): a piece cut after "sat \n" would end in it,
    # where the whole text has " " then "\n", so pieces may only end in a newline after a word
    text = "".join(("the cat sat \n", "a hat\n", "the hat \n\n")[i % 3] for i in range(100))
    path = tmp_path / "hats.txt"
    path.write_text(text, encoding="utf-8")
    config = DataConfig(source=str(path), tokenizer="bpe", tokenizer_vocab_size=300, workers=1)
    prepared = prepare_dataset(config)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    ids = [open_tokens(p, prepared.dtype) for p in (prepared.train_path, prepared.val_path)]
    assert np.concatenate(ids).tolist() == tokenizer.encode(text)


def test_val_chars_when_the_cut_falls_inside_one_of_several_pieces(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    text, prepared = prepare_in_pieces(tmp_path, monkeypatch)
    val_text = text[prepared.train_tokens :]  # one character per token
    assert prepared.val_chars == prepared.val_tokens == len(val_text)
    assert prepared.val_bytes == len(val_text.encode("utf-8"))


def test_a_work_directory_left_by_other_data_is_not_resumed(tmp_path: Path, cache_dir: Path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    work = tmp_path / ".out.work"  # e.g. from an older version, or another corpus
    work.mkdir()
    (work / "train-000000.all.bin").write_bytes(b"\x00\x00" * 7)
    (work / "train-000000.done").write_text('["all"]', encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1), out_dir=tmp_path / "out")
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train = tokenizer.decode(open_tokens(prepared.train_path, prepared.dtype))
    assert train + tokenizer.decode(open_tokens(prepared.val_path, prepared.dtype)) == TEXT


def test_val_chars_count_the_validation_documents(tmp_path: Path, cache_dir: Path):
    documents = [f"story {i}: ça va" + " ü" * i for i in range(40)]  # nothing to strip
    path = tmp_path / "stories.txt"
    path.write_text("\n<|endoftext|>\n".join(documents) + "\n", encoding="utf-8")
    prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    held_out = [doc for i, doc in enumerate(documents) if prepare._is_validation(i, 0.1)]
    assert held_out
    assert prepared.val_chars == sum(map(len, held_out))
    assert prepared.val_bytes == sum(len(doc.encode("utf-8")) for doc in held_out)


def test_data_prepared_before_text_sizes_were_recorded_still_loads(corpus: Path, cache_dir: Path):
    prepared = prepare_dataset(DataConfig(source=str(corpus), workers=1))
    meta_path = prepared.directory / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["val_chars"], meta["val_bytes"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    old = load_prepared(prepared.directory)
    assert (old.val_chars, old.val_bytes) == (None, None)
    assert old.val_tokens == prepared.val_tokens


def test_a_given_tokenizer_is_used_and_keys_the_cache(corpus: Path, cache_dir: Path):
    given = CharTokenizer.train(TEXT + "!#")  # wider than the corpus would train: other ids
    config = DataConfig(source=str(corpus), workers=1)
    prepared = prepare_dataset(config, tokenizer=given)
    default = prepare_dataset(config)
    assert prepared.directory != default.directory
    assert prepared.directory.name == prepare.dataset_key(prepared.source_sha256, config, given)
    assert prepared.directory.name != prepare.dataset_key(prepared.source_sha256, config)
    ids = np.concatenate(
        [open_tokens(prepared.train_path, prepared.dtype), open_tokens(prepared.val_path, "uint16")]
    )
    assert ids.tolist() == given.encode(TEXT)
    assert prepared.vocab_size == given.vocab_size
    assert load_tokenizer(prepared.tokenizer_path).to_dict() == given.to_dict()
    # the default vocabulary's ids differ, so the two must never share files
    assert load_tokenizer(default.tokenizer_path).encode(TEXT) != given.encode(TEXT)


def test_a_given_tokenizer_equal_to_the_trained_one_reuses_its_data(
    corpus: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    config = DataConfig(source=str(corpus), workers=1)
    default = prepare_dataset(config)
    trained = load_tokenizer(default.tokenizer_path)

    def fail(*args: object) -> None:
        raise AssertionError("the data was tokenized again")

    monkeypatch.setattr(prepare, "_encode_corpus", fail)
    assert prepare_dataset(config, tokenizer=trained) == default


def test_characters_a_given_tokenizer_cannot_encode_are_one_line(corpus: Path, cache_dir: Path):
    given = CharTokenizer.train("hello")
    with pytest.raises(DataError, match="outside the 4-character vocabulary") as caught:
        prepare_dataset(DataConfig(source=str(corpus), workers=1), tokenizer=given)
    assert "' '" in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_prepared_data_of_another_vocabulary_is_refused(corpus: Path, cache_dir: Path):
    default = prepare_dataset(DataConfig(source=str(corpus), workers=1))
    config = DataConfig(source=str(default.directory))
    with pytest.raises(DataError, match="another vocabulary"):
        prepare_dataset(config, tokenizer=CharTokenizer.train(TEXT + "xyz"))
    assert prepare_dataset(config, tokenizer=load_tokenizer(default.tokenizer_path)) == default
