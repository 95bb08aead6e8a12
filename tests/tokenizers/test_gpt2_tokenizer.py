"""GPT-2's BPE through tiktoken, built offline from shared/data/gpt2_bpe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygpt.errors import CheckpointError, DataError
from tinygpt.run.directory import sha256_of
from tinygpt.tokenizers.base import StreamDecoder, load_tokenizer
from tinygpt.tokenizers.bpe import encode_in_chunks
from tinygpt.tokenizers.tiktoken_gpt2 import (
    BPE_DIR_ENV,
    ENCODER_JSON_SHA256,
    VOCAB_BPE_SHA256,
    GPT2Tokenizer,
)

# fixtures are function-scoped, and the tokenizer (cached per folder) is the same in every example
CHARACTERS = st.sampled_from(list("ab \n\t.é😀")) | st.characters(codec="utf-8")
FIXTURE_OK = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


pytestmark = pytest.mark.usefixtures("offline_gpt2")


@pytest.fixture
def bpe_dir(shared_data: Path) -> Path:
    return shared_data / "gpt2_bpe"


@pytest.fixture
def gpt2(bpe_dir: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer.load(str(bpe_dir))


def test_ids_are_gpt2s(gpt2: GPT2Tokenizer):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995]) == "Hello world"
    assert gpt2.vocab_size == 50257


def test_end_of_text_is_50256_and_only_inserted_by_id(gpt2: GPT2Tokenizer):
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.eot_id == 50256
    assert gpt2.document_separator() == [50256]
    assert gpt2.decode([50256]) == "<|endoftext|>"
    text = "The end.<|endoftext|>Once"
    assert 50256 not in gpt2.encode(text)
    assert 50256 not in gpt2.encode_batch([text])[0]
    assert gpt2.decode(gpt2.encode(text)) == text


@FIXTURE_OK
@given(text=st.text())
def test_any_text_round_trips(gpt2: GPT2Tokenizer, text: str):
    assert gpt2.decode(gpt2.encode(text)) == text


@FIXTURE_OK
@given(text=st.text(CHARACTERS, max_size=80), chunk=st.integers(1, 8))
def test_chunked_encoding_equals_whole_encoding(gpt2: GPT2Tokenizer, text: str, chunk: int):
    assert encode_in_chunks(gpt2.encode_batch, text, chunk).tolist() == gpt2.encode(text)


def test_encode_array_matches_encode_on_real_text(gpt2: GPT2Tokenizer, shared_data: Path):
    text = (shared_data / "tinystories_train.txt").read_text(encoding="utf-8")[:100_000]
    expected = gpt2.encode(text)
    assert encode_in_chunks(gpt2.encode_batch, text, chunk_chars=500).tolist() == expected
    assert gpt2.encode_array(text).tolist() == expected


def test_stream_decoder_never_splits_a_character(gpt2: GPT2Tokenizer):
    text = "Tea 🫖 and 😀🚀, naïve 日本語 ❤️!"
    ids = gpt2.encode(text)
    assert len(ids) > len(text.split())  # emoji take several byte tokens each
    decoder = StreamDecoder(gpt2)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_save_and_load_give_identical_encodings(gpt2: GPT2Tokenizer, tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    gpt2.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, GPT2Tokenizer)
    assert loaded.encode("Hello world 😀") == gpt2.encode("Hello world 😀")
    assert loaded.to_dict() == gpt2.to_dict()


def test_a_saved_tokenizer_needs_neither_its_folder_nor_the_network(bpe_dir: Path, tmp_path):
    folder = Path(shutil.copytree(bpe_dir, tmp_path / "gpt2_bpe"))
    path = tmp_path / "tokenizer.json"
    GPT2Tokenizer.load(str(folder)).save(path)
    shutil.rmtree(folder)  # and the fixture unset the environment variable and the network
    assert load_tokenizer(path).encode("Hello world") == [15496, 995]
    assert str(folder) not in path.read_text(encoding="utf-8")
    assert path.stat().st_size < 1_000_000  # vocab.bpe's lines; encoder.json follows from them


def test_the_saved_merges_give_back_openais_files_byte_for_byte(gpt2: GPT2Tokenizer):
    encoder_json, vocab_bpe = gpt2.openai_files()
    assert sha256_of(encoder_json) == ENCODER_JSON_SHA256
    assert sha256_of(vocab_bpe) == VOCAB_BPE_SHA256


def test_an_edited_tokenizer_json_cannot_pass_for_gpt2s(gpt2: GPT2Tokenizer, tmp_path: Path):
    document = gpt2.to_dict()
    document["vocab_bpe"][1], document["vocab_bpe"][2] = document["vocab_bpe"][2:0:-1]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"not GPT-2's vocab\.bpe"):
        load_tokenizer(path)


def test_an_older_tokenizer_json_naming_the_folder_still_loads(bpe_dir: Path, tmp_path: Path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"kind": "gpt2", "bpe_dir": str(bpe_dir)}), encoding="utf-8")
    assert load_tokenizer(path).encode("Hello world") == [15496, 995]


def test_environment_variable_names_the_folder(bpe_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(BPE_DIR_ENV, str(bpe_dir))
    assert GPT2Tokenizer.load().encode("Hello world") == [15496, 995]


def test_without_files_or_network_the_error_names_the_fix():
    with pytest.raises(DataError, match=f"--gpt2_bpe_dir or {BPE_DIR_ENV}"):
        GPT2Tokenizer.load()


def test_a_folder_without_the_files_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match=r"has no encoder\.json and vocab\.bpe"):
        GPT2Tokenizer.load(str(tmp_path))


def test_a_moved_folder_falls_back_to_the_environment(
    bpe_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "gpt2", "bpe_dir": "/gone/gpt2_bpe"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"/gone/gpt2_bpe named in tokenizer\.json is gone"):
        load_tokenizer(path)
    monkeypatch.setenv(BPE_DIR_ENV, str(bpe_dir))
    assert load_tokenizer(path).encode("Hello world") == [15496, 995]


@pytest.mark.slow
@pytest.mark.parametrize("prepared_by", ["this tinygpt", "an older one"])
def test_prepared_data_and_its_run_sample_with_the_bpe_folder_gone(
    prepared_by: str, bpe_dir: Path, small_text_file: Path, capsys, tmp_path: Path
):
    folder = Path(shutil.copytree(bpe_dir, tmp_path / "gpt2_bpe"))
    data, run_dir = tmp_path / "prepared", tmp_path / "run"
    code, _, err = run_cli(capsys, "prepare", small_text_file, "--out", data, "--tokenizer",
                           "gpt2", "--gpt2_bpe_dir", folder, "--workers", "1")  # fmt: skip
    assert code == 0, err
    if prepared_by == "an older one":  # its tokenizer.json named the folder: the run must not
        (data / "tokenizer.json").write_text(json.dumps({"kind": "gpt2", "bpe_dir": str(folder)}))
    else:
        shutil.rmtree(folder)  # and the fixture unset the environment variable and the network
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", run_dir, *TINY,
                           "--max_iters", "1", "--eval_interval", "1")  # fmt: skip
    assert code == 0, err
    shutil.rmtree(folder, ignore_errors=True)
    code, out, err = run_cli(capsys, "sample", run_dir, "--prompt", "KING", "--max-new-tokens", 4)
    assert code == 0, err
    assert out.startswith("KING")
