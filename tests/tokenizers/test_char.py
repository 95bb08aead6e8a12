from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygpt.config import DataConfig
from tinygpt.data.sources.builtin import read_builtin_corpus
from tinygpt.errors import CheckpointError, DataError
from tinygpt.tokenizers.base import build_tokenizer, load_tokenizer
from tinygpt.tokenizers.char import CharTokenizer

NANOGPT_SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# lone surrogates are legal in str, so they must survive too
any_text = st.text(alphabet=st.characters(), min_size=1)


@given(vocab_text=any_text, data=st.data())
def test_decode_inverts_encode_for_text_over_the_vocabulary(vocab_text: str, data: st.DataObject):
    tokenizer = CharTokenizer.train(vocab_text)
    text = data.draw(st.text(alphabet=st.sampled_from(sorted(set(vocab_text)))))
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(vocab_text=any_text, text=st.text(), policy=st.sampled_from(["error", "unk"]))
def test_encode_array_matches_encode(vocab_text: str, text: str, policy: str):
    tokenizer = CharTokenizer.train(vocab_text, unknown_chars=policy)
    try:
        expected = tokenizer.encode(text)
    except DataError as err:
        with pytest.raises(DataError) as array_err:
            tokenizer.encode_array(text)
        assert str(array_err.value) == str(err)
        return
    ids = tokenizer.encode_array(text)
    assert ids.dtype == np.int64
    assert ids.tolist() == expected
    assert all(0 <= i < tokenizer.vocab_size for i in expected)


def test_unk_policy_maps_unknown_chars_to_the_last_id_and_decodes_to_replacement_char():
    tokenizer = CharTokenizer.train("abc", unknown_chars="unk")
    assert tokenizer.vocab_size == 4
    assert tokenizer.unk_id == 3
    assert tokenizer.encode("aé中c") == [0, 3, 3, 2]
    assert tokenizer.encode_array("aé中c").tolist() == [0, 3, 3, 2]
    assert tokenizer.decode([0, 3, 2]) == "a\ufffdc"


def test_error_policy_names_the_unknown_chars_sorted():
    tokenizer = CharTokenizer.train("abc")
    message = (
        "text has characters outside the vocabulary: 'é', '中'; "
        "train on text that contains them or set --unknown_chars unk"
    )
    for encode in (tokenizer.encode, tokenizer.encode_array):
        with pytest.raises(DataError) as err:
            encode("a中bé中")
        assert str(err.value) == message


def test_error_message_lists_at_most_ten_chars():
    tokenizer = CharTokenizer.train("a")
    with pytest.raises(DataError) as err:
        tokenizer.encode_array("bcdefghijklmnop")
    assert "'k', ..." in str(err.value)
    assert "'l'" not in str(err.value)


def test_decode_rejects_ids_outside_the_vocabulary():
    tokenizer = CharTokenizer.train("abc")
    for bad in ([3], [-1]):
        with pytest.raises(DataError, match=r"0\.\.2"):
            tokenizer.decode(bad)


def test_decode_accepts_numpy_arrays():
    tokenizer = CharTokenizer.train("hello")
    assert tokenizer.decode(tokenizer.encode_array("hello")) == "hello"


@pytest.mark.parametrize("policy", ["error", "unk"])
def test_save_and_load_round_trip(tmp_path: Path, policy: str):
    tokenizer = CharTokenizer.train("hello, wörld\n中", unknown_chars=policy)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.to_dict() == tokenizer.to_dict()
    assert loaded.vocab_size == tokenizer.vocab_size
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == "char"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left


def test_load_tokenizer_errors_name_the_file(tmp_path: Path):
    missing = tmp_path / "missing.json"
    with pytest.raises(CheckpointError, match=r"missing\.json does not exist"):
        load_tokenizer(missing)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"bad\.json is not readable JSON"):
        load_tokenizer(bad_json)
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"kind": "wordpiece"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="unknown kind 'wordpiece'"):
        load_tokenizer(unknown)
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"kind": "char", "chars": ["b", "a"]}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed"):
        load_tokenizer(malformed)


def test_build_tokenizer_follows_the_config():
    tokenizer = build_tokenizer(DataConfig(unknown_chars="unk"), lambda: ["ba"])
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.chars == ("a", "b")
    assert tokenizer.unk_id == 2


def test_train_on_empty_text_raises():
    with pytest.raises(DataError, match="empty text"):
        CharTokenizer.train("")


def test_tinyshakespeare_vocab_is_nanogpts():
    text = read_builtin_corpus("tinyshakespeare").text  # the same text as nanoGPT's input.txt
    tokenizer = CharTokenizer.train(text)
    assert tokenizer.vocab_size == 65
    assert "".join(tokenizer.chars) == NANOGPT_SHAKESPEARE_CHARS
    ids = tokenizer.encode_array(text)
    assert len(ids) == 1_115_394
    assert ids[:8].tolist() == [18, 47, 56, 57, 58, 1, 15, 47]  # "First Ci" in nanoGPT's ids
    assert tokenizer.decode(ids) == text
