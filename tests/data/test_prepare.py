from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

import tinygpt.data.prepare as prepare
from tinygpt.config import DataConfig, RunConfig
from tinygpt.data.memmap import open_tokens
from tinygpt.data.prepare import (
    PreparedData,
    load_prepared,
    prepare_dataset,
    with_prepared_settings,
)
from tinygpt.data.sources.builtin import read_builtin_corpus
from tinygpt.errors import DataError
from tinygpt.presets import get_preset
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


# ----------------------------------------------------------------------------------------------
# The validation share: close to val_fraction, whatever the documents are


def shakespeare_lines() -> list[str]:
    """Lines of real text, without the blank lines that the char tokenizer's separator is."""
    return [line for line in read_builtin_corpus("tinyshakespeare").text[:200_000].splitlines() if line]


def big_files() -> list[str]:
    """Three texts without separators, 40/30/30 of 60,000 characters."""
    text = "\n".join(shakespeare_lines())[:60_000]
    return [text[:24_000], text[24_000:42_000], text[42_000:]]


def stories(count: int) -> list[str]:
    """Short documents of four lines each."""
    lines = shakespeare_lines()
    return ["\n".join(lines[4 * i : 4 * i + 4]) for i in range(count)]


def write_files(folder: Path, texts: list[str]) -> Path:
    folder.mkdir()
    for index, text in enumerate(texts):
        (folder / f"{index:04d}.txt").write_text(text, encoding="utf-8")
    return folder


def split_texts(prepared: PreparedData) -> tuple[str, str]:
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    train, val = (open_tokens(p, prepared.dtype) for p in (prepared.train_path, prepared.val_path))
    return tokenizer.decode(train), tokenizer.decode(val)


LAYOUTS = {
    "few big files": big_files,  # the first went to validation whole: 40%
    "one big file": lambda: ["".join(big_files())],
    "many small files": lambda: stories(400),
    "many separated documents": lambda: ["\n<|endoftext|>\n".join(stories(400))],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_validation_share_is_close_to_val_fraction(
    layout: str, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
):
    folder = write_files(tmp_path / "corpus", LAYOUTS[layout]())
    with caplog.at_level("INFO", logger="tinygpt.data.prepare"):
        prepared = prepare_dataset(DataConfig(source=str(folder), workers=1))
    share = prepared.val_tokens / (prepared.train_tokens + prepared.val_tokens)
    assert 0.085 < share < 0.115, share  # the three big files gave 0.40
    assert f"({100 * share:.1f}% validation" in caplog.text
    assert "WARNING" not in [record.levelname for record in caplog.records]


def test_each_big_file_without_separators_gives_its_end_to_validation(
    tmp_path: Path, cache_dir: Path
):
    texts = big_files()
    folder = write_files(tmp_path / "corpus", texts)
    train, val = split_texts(prepare_dataset(DataConfig(source=str(folder), workers=1)))
    separator = "\n\n"  # the char tokenizer's, after each part; the texts have no blank line
    ends = val.split(separator)[:-1]
    # each file's last ~10% validates, from the start of a line, and the rest trains
    assert len(ends) == len(texts)
    pairs = list(zip(texts, ends, strict=True))
    assert all(text.endswith("\n" + end) for text, end in pairs)
    assert all(0.08 < len(end) / len(text) < 0.12 for text, end in pairs)
    assert train == "".join(text[: -len(end)] + separator for text, end in pairs)


def test_small_files_without_separators_stay_whole(tmp_path: Path, cache_dir: Path):
    texts = stories(400)  # a folder of one story per file: none is cut through
    folder = write_files(tmp_path / "corpus", texts)
    train, val = split_texts(prepare_dataset(DataConfig(source=str(folder), workers=1)))
    held_out = [text for index, text in enumerate(texts) if prepare._is_validation(index, 0.1)]
    assert 30 <= len(held_out) <= 50  # about val_fraction of the 400 files
    assert val == "".join(text + "\n\n" for text in held_out)
    assert train.count("\n\n") == len(texts) - len(held_out)


def test_a_split_far_from_val_fraction_is_warned(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
):
    # three separated documents: the first, 60% of the text, goes to validation whole
    text = "\n".join(shakespeare_lines())
    documents = [text[:6_000], text[6_000:8_000], text[8_000:10_000]]
    path = tmp_path / "three.txt"
    path.write_text("\n<|endoftext|>\n".join(documents), encoding="utf-8")
    with caplog.at_level("INFO", logger="tinygpt.data.prepare"):
        prepared = prepare_dataset(DataConfig(source=str(path), workers=1))
    assert prepared.val_tokens > prepared.train_tokens
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "validation holds 60.0% of the tokens though val_fraction=0.1" in warnings[0]


# ----------------------------------------------------------------------------------------------
# A prepared directory describes itself


@pytest.fixture
def bpe_directory(corpus: Path, tmp_path: Path, cache_dir: Path) -> Path:
    config = DataConfig(
        source=str(corpus), tokenizer="bpe", tokenizer_vocab_size=300, val_fraction=0.2, workers=1
    )
    return prepare_dataset(config, out_dir=tmp_path / "prepared").directory


def test_a_prepared_directory_brings_its_own_settings(bpe_directory: Path):
    config = with_prepared_settings(RunConfig(data=DataConfig(source=str(bpe_directory))))
    data = config.data
    assert (data.tokenizer, data.tokenizer_vocab_size, data.val_fraction) == ("bpe", 300, 0.2)
    assert prepare_dataset(data).directory == bpe_directory


def test_a_presets_tokenizer_yields_to_the_directorys(bpe_directory: Path):
    preset = get_preset("tinystories-small")  # gpt2, for its own TinyStories source
    config = dataclasses.replace(
        preset, data=dataclasses.replace(preset.data, source=str(bpe_directory))
    )
    assert with_prepared_settings(config).data.tokenizer == "bpe"


def test_a_setting_that_contradicts_the_directory_names_both(bpe_directory: Path):
    data = DataConfig(source=str(bpe_directory), tokenizer="sentencepiece", val_fraction=0.2)
    with pytest.raises(
        DataError, match=r"prepared with tokenizer=bpe \(the run sets sentencepiece\)"
    ):
        with_prepared_settings(RunConfig(data=data))


@pytest.mark.slow
def test_train_on_a_prepared_directory_needs_no_tokenizer_flag(
    capsys, tmp_path: Path, small_text_file: Path
):
    data = tmp_path / "prepared"
    code, out, err = run_cli(capsys, "prepare", small_text_file, "--out", data, "--tokenizer",
                             "bpe", "--tokenizer_vocab_size", "300", "--workers", "1")  # fmt: skip
    assert code == 0, err
    assert "--tokenizer" not in out  # the hint to train with it
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", run_dir, *TINY,
                           "--max_iters", "2", "--eval_interval", "2")  # fmt: skip
    assert code == 0, err  # was: prepared with the bpe tokenizer but the run asks for char
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert (saved["data"]["tokenizer"], saved["data"]["tokenizer_vocab_size"]) == ("bpe", 300)
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "other",
                           "--tokenizer", "gpt2", *TINY)  # fmt: skip
    assert_one_line_error(code, err, "prepared with tokenizer=bpe (the run sets gpt2)")
    assert not (tmp_path / "other").exists()


def test_a_directory_prepared_before_the_split_rule_changed_is_still_read(
    corpus: Path, tmp_path: Path, cache_dir: Path
):
    prepared = prepare_dataset(DataConfig(source=str(corpus), workers=1), out_dir=tmp_path / "p")
    meta = json.loads((prepared.directory / "meta.json").read_text(encoding="utf-8"))
    meta["format_version"] = 3  # its files have the same layout
    (prepared.directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert prepare_dataset(DataConfig(source=str(prepared.directory))) == prepared
