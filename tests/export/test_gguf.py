"""Export to GGUF, read back by gguf's own reader and by transformers' GGUF loader: every tensor
and key as llama.cpp names it, tinygpt's logits (to 1e-4 in f32, within measured bounds in f16
and q8_0), its greedy tokens and its token ids; one-line refusals for what llama.cpp cannot run,
with nothing written."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import gguf
import numpy as np
import pytest
import sentencepiece as spm
import torch
from cli_helpers import assert_one_line_error, run_cli
from greedy_decoding import greedy
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

from tinygpt.config import ModelConfig
from tinygpt.export.gguf_export import export_gguf
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.bpe import SPECIAL_TOKENS
from tinygpt.tokenizers.sentencepiece_bpe import SentencePieceTokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

LLAMA = {"norm": "rmsnorm", "position": "rope", "ffn": "swiglu", "bias": False}
VARIANTS = {
    "gpt2": {"activation": "gelu_tanh"},  # llama.cpp's GELU; the exact one is measured apart
    "gpt2-untied-no-bias-ffn": {
        "activation": "gelu_tanh", "tie_weights": False, "bias": False, "ffn_hidden": 48,
    },
    "llama-gqa": {**LLAMA, "n_kv_head": 2, "rope_theta": 500.0},
    "llama-mqa-untied-ffn": {**LLAMA, "n_kv_head": 1, "tie_weights": False, "ffn_hidden": 40},
}  # fmt: skip
# largest |logit - tinygpt's logit| measured over the variants (random weights, logits up to about
# 2.4 in size): f16 1.9e-3, q8_0 4.3e-2; the exact-GELU run in f32 5.3e-4
BOUNDS = {"f32": 1e-4, "f16": 5e-3, "q8_0": 1e-1}
EXACT_GELU_BOUND = 2e-3
F16_RELATIVE_STEP = 2.0**-11  # half an f16 unit in the last place, relative
ROUNDING_SLACK = 1e-7  # f16 subnormals (below 6e-5) are spaced 6e-8 apart, not relatively
CONTROL, UNUSED = gguf.TokenType.CONTROL, gguf.TokenType.UNUSED


def export(capsys, run_dir: Path, out: Path, *flags: str) -> Path:
    code, stdout, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out, *flags)
    assert code == 0, err
    quant = flags[flags.index("--quant") + 1] if "--quant" in flags else "f16"  # the default
    assert stdout.startswith(f"wrote {out}: llama.cpp's "), stdout
    assert f" architecture, {quant}, with a " in stdout, stdout
    return out


def load_in_transformers(path: Path, config: ModelConfig) -> torch.nn.Module:
    """transformers' GGUF loader, told GPT-2's context and MLP width: it reads neither key."""
    gpt2_shape = {"n_positions": config.block_size, "n_inner": config.ffn_width}
    return AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        dtype=torch.float32,
        **(gpt2_shape if config.position == "learned" else {}),
    ).eval()


def largest_logit_difference(model: GPT, hf_model: torch.nn.Module, text: str, tokenizer) -> float:
    ids = torch.tensor([tokenizer.encode(text)[: model.config.block_size]])  # the whole context
    with torch.no_grad():
        return (model(ids) - hf_model(ids).logits).abs().max().item()


def metadata(path: Path) -> dict[str, object]:
    return {name: field.contents() for name, field in gguf.GGUFReader(path).fields.items()}


def read_tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {tensor.name: tensor for tensor in gguf.GGUFReader(path).tensors}


def dequantized(tensor: gguf.ReaderTensor) -> torch.Tensor:
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return torch.from_numpy(np.array(values)).reshape(tuple(reversed(tensor.shape.tolist())))


def sentencepiece_tokenizer(documents: list[str], **options: object) -> SentencePieceTokenizer:
    """A SentencePiece model with tinygpt's special ids, trained with other `options` than
    tinygpt's (as `import-hf` may bring in)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(line for document in documents for line in document.splitlines()),
        model_writer=model, vocab_size=400, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        control_symbols=["<sep>"], byte_fallback=True, minloglevel=2, **options,
    )  # fmt: skip
    return SentencePieceTokenizer(model.getvalue())


def undo_rope_pairing(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' reverse of llama.cpp's q/k permutation (_reverse_permute_weights)."""
    rows, C = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, C).transpose(1, 2).reshape(rows, C)


GPT2_NAMES = {
    "ln_1": "attn_norm", "attn.qkv": "attn_qkv", "attn.proj": "attn_output",
    "ln_2": "ffn_norm", "mlp.fc": "ffn_up", "mlp.proj": "ffn_down",
}  # fmt: skip


def expected_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The model under llama.cpp's tensor names, written out by hand; a Llama block's q and k
    as tinygpt has them (compare after undo_rope_pairing)."""
    state = model.state_dict()
    if model.config.position == "learned":
        return expected_gpt2_tensors(model.config, state)
    return expected_llama_tensors(model.config, state)


def expected_gpt2_tensors(config: ModelConfig, state: dict) -> dict[str, torch.Tensor]:
    """Every matrix and norm with its bias (zeros where the run has none); the head even when
    tied."""

    def with_bias(ours: str, theirs: str) -> dict[str, torch.Tensor]:
        weight = state[f"{ours}.weight"]
        bias = state.get(f"{ours}.bias", torch.zeros(weight.shape[0]))
        return {f"{theirs}.weight": weight, f"{theirs}.bias": bias}

    embedding = state["wte.weight"]
    expected = {"token_embd.weight": embedding, "position_embd.weight": state["wpe.weight"]}
    expected["output.weight"] = state.get("lm_head.weight", embedding)
    expected |= with_bias("ln_f", "output_norm")
    for index in range(config.n_layer):
        for ours, theirs in GPT2_NAMES.items():
            expected |= with_bias(f"blocks.{index}.{ours}", f"blk.{index}.{theirs}")
    return expected


def expected_llama_tensors(config: ModelConfig, state: dict) -> dict[str, torch.Tensor]:
    """q, k, v and gate, up apart; no head when tied."""
    expected = {
        "token_embd.weight": state["wte.weight"],
        "output_norm.weight": state["ln_f.weight"],
    }
    if not config.tie_weights:
        expected["output.weight"] = state["lm_head.weight"]
    kv_width = config.kv_heads * config.head_dim
    for index in range(config.n_layer):
        ours, theirs = f"blocks.{index}.", f"blk.{index}."
        q, k, v = state[f"{ours}attn.qkv.weight"].split([config.n_embd, kv_width, kv_width])
        gate, up = state[f"{ours}mlp.fc.weight"].chunk(2)
        parts = {
            "attn_norm": state[f"{ours}ln_1.weight"], "attn_q": q, "attn_k": k, "attn_v": v,
            "attn_output": state[f"{ours}attn.proj.weight"],
            "ffn_norm": state[f"{ours}ln_2.weight"], "ffn_gate": gate, "ffn_up": up,
            "ffn_down": state[f"{ours}mlp.proj.weight"],
        }  # fmt: skip
        expected |= {f"{theirs}{name}.weight": tensor for name, tensor in parts.items()}
    return expected


# ----------------------------------------------------------------------------------------------
# What the file holds


@pytest.mark.parametrize("name", VARIANTS)
def test_reader_gives_back_every_tensor_and_key(name, make_run, bpe, capsys, tmp_path):
    run_dir, model, _ = make_run(name, tokenizer=bpe, **VARIANTS[name])
    path = export(capsys, run_dir, tmp_path / "model.gguf", "--quant", "f32")
    config = model.config
    expected = expected_tensors(model)
    tensors = {key: dequantized(tensor) for key, tensor in read_tensors(path).items()}
    assert tensors.keys() == expected.keys()
    for block in range(config.n_layer):
        for kind, heads in (("attn_q", config.n_head), ("attn_k", config.kv_heads)):
            tensor_name = f"blk.{block}.{kind}.weight"
            if tensor_name in tensors:
                tensors[tensor_name] = undo_rope_pairing(tensors[tensor_name], heads)
    for tensor_name, tensor in expected.items():
        assert torch.equal(tensors[tensor_name], tensor), tensor_name

    fields = metadata(path)
    arch = "llama" if name.startswith("llama") else "gpt2"
    assert fields["general.architecture"] == arch
    assert fields["general.file_type"] == gguf.LlamaFileType.ALL_F32
    shape = {"context_length": 32, "embedding_length": 32, "block_count": 2}
    shape |= {"feed_forward_length": config.ffn_width, "attention.head_count": 4}
    if arch == "llama":
        shape |= {"attention.head_count_kv": config.kv_heads, "rope.dimension_count": 8}
        shape |= {"rope.freq_base": config.rope_theta}
    assert {key: fields[f"{arch}.{key}"] for key in shape} == shape
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(tokens) == len(types) == config.vocab_size == bpe.vocab_size + 3
    assert tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert types[: len(SPECIAL_TOKENS)] == [CONTROL] * len(SPECIAL_TOKENS)
    assert tokens[-1] == f"[PAD{config.vocab_size - 1}]" and types[-3:] == [UNUSED] * 3
    assert len(fields["tokenizer.ggml.merges"]) == len(
        bpe.to_dict()["hf_tokenizer"]["model"]["merges"]
    )
    assert fields["tokenizer.ggml.eos_token_id"] == bpe.eot_id
    assert fields["tokenizer.ggml.bos_token_id"] == bpe.special_tokens["<s>"]
    assert fields["tokenizer.ggml.add_bos_token"] is False


# ----------------------------------------------------------------------------------------------
# What transformers computes from it


@pytest.mark.parametrize("name", VARIANTS)
def test_f32_logits_equal_tinygpts_in_transformers(
    name, make_run, bpe, sample_text, capsys, tmp_path
):
    run_dir, model, tokenizer = make_run(name, tokenizer=bpe, **VARIANTS[name])
    path = export(capsys, run_dir, tmp_path / "model.gguf", "--quant", "f32")
    hf_model = load_in_transformers(path, model.config)
    expected = "LlamaForCausalLM" if name.startswith("llama") else "GPT2LMHeadModel"
    assert type(hf_model).__name__ == expected
    assert largest_logit_difference(model, hf_model, sample_text, tokenizer) < BOUNDS["f32"]


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
@pytest.mark.parametrize("name", ["gpt2-untied-no-bias-ffn", "llama-mqa-untied-ffn"])
def test_quantized_weights_and_logits_stay_within_bounds(
    name, quant, make_run, bpe, sample_text, capsys, tmp_path
):
    run_dir, model, tokenizer = make_run(name, tokenizer=bpe, **VARIANTS[name])
    path = export(capsys, run_dir, tmp_path / "model.gguf", "--quant", quant)
    exact = read_tensors(export(capsys, run_dir, tmp_path / "exact.gguf", "--quant", "f32"))
    matrix_type = gguf.GGMLQuantizationType[quant.upper()]
    for tensor_name, tensor in read_tensors(path).items():
        reference = dequantized(exact[tensor_name])
        if reference.dim() == 1 or tensor_name == "position_embd.weight":
            stored_as = gguf.GGMLQuantizationType.F32
            bound = torch.zeros_like(reference)
        elif quant == "q8_0" and reference.shape[1] % 32 == 0:
            # blocks of 32 integers of step d = block max / 127: rounding misses by d / 2, and
            # d stored as f16 moves the largest integer, 127, by 127 d F16_RELATIVE_STEP more
            stored_as = matrix_type
            step = reference.abs().reshape(reference.shape[0], -1, 32).amax(-1) / 127
            bound = (step * (0.5 + 127 * F16_RELATIVE_STEP)).repeat_interleave(32, 1)
        else:  # f16, and a q8_0 matrix whose rows are not whole blocks (ffn_down here)
            stored_as = gguf.GGMLQuantizationType.F16
            bound = reference.abs() * F16_RELATIVE_STEP
        assert tensor.tensor_type == stored_as, tensor_name
        assert ((dequantized(tensor) - reference).abs() <= bound + ROUNDING_SLACK).all()
    assert metadata(path)["general.file_type"] == gguf.LlamaFileType[f"MOSTLY_{quant.upper()}"]
    difference = largest_logit_difference(
        model, load_in_transformers(path, model.config), sample_text, tokenizer
    )
    assert 0 < difference < BOUNDS[quant]


def test_exact_gelu_exports_with_a_note_and_logits_close_to_tinygpts(
    make_run, bpe, sample_text, capsys, caplog, tmp_path
):
    run_dir, model, tokenizer = make_run("exact-gelu", tokenizer=bpe)  # activation=gelu
    out = export(capsys, run_dir, tmp_path / "model.gguf")
    notes = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("tinygpt") and record.levelno >= logging.WARNING
    ]
    assert len(notes) == 1 and "llama.cpp's gpt2 computes the tanh approximation" in notes[0]
    difference = largest_logit_difference(
        model, load_in_transformers(out, model.config), sample_text, tokenizer
    )
    assert 1e-6 < difference < EXACT_GELU_BOUND  # transformers computes GPT-2's tanh GELU too


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_greedy_generation_matches_tinygpt(name, make_run, bpe, capsys, tmp_path):
    run_dir, model, tokenizer = make_run(name, tokenizer=bpe, **VARIANTS[name])
    path = export(capsys, run_dir, tmp_path / "model.gguf", "--quant", "f32")
    hf_model = load_in_transformers(path, model.config)
    prompt = tokenizer.encode("Once upon a time, Lily")[:8]
    ids = torch.tensor([prompt])
    out = hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20
    )
    generated, expected = out[0, len(prompt) :].tolist(), greedy(model, prompt, 20)
    # generate() stops at the end-of-text id the file names; tinygpt's loop here does not
    assert generated == expected[: len(generated)]
    assert len(generated) == 20 or generated[-1] == tokenizer.eot_id


# ----------------------------------------------------------------------------------------------
# The tokenizer inside


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "gpt2"])
def test_tokenizer_from_the_gguf_gives_tinygpts_ids(kind, request, make_run, capsys, tmp_path):
    if kind == "gpt2":
        tokenizer = GPT2Tokenizer.load(str(request.getfixturevalue("shared_data") / "gpt2_bpe"))
    else:
        tokenizer = request.getfixturevalue("spiece" if kind == "sentencepiece" else "bpe")
    fields = LLAMA if kind == "sentencepiece" else VARIANTS["gpt2"]
    run_dir, _, _ = make_run(kind, tokenizer=tokenizer, n_layer=1, n_embd=16, **fields)
    path = export(capsys, run_dir, tmp_path / "model.gguf")
    hf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if kind == "sentencepiece":
        fields = metadata(path)
        tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
        assert fields["tokenizer.ggml.model"] == "llama"
        assert len(fields["tokenizer.ggml.scores"]) == len(tokens)
        assert types[1:5] == [gguf.TokenType.UNKNOWN] + [CONTROL] * 3  # <unk> <s> </s> <sep>
        byte_pieces = {
            token
            for token, token_type in zip(tokens, types, strict=True)
            if token_type == gguf.TokenType.BYTE
        }
        assert byte_pieces == {f"<0x{byte:02X}>" for byte in range(256)}  # the fallback
        # transformers' GGUF builder always gives a SentencePiece vocabulary Llama's leading
        # space, whatever the file says; llama.cpp reads tokenizer.ggml.add_space_prefix
        assert fields["tokenizer.ggml.add_space_prefix"] is False
        hf_tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            prepend_scheme="never", split=False
        )
    text = "Once upon a time, Lily's dog found 22 balls.\n\nCafé naïve 日本語 😀  two  spaces"
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    assert ids == tokenizer.encode(text)
    assert hf_tokenizer.eos_token_id == tokenizer.eot_id


# ----------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"attention": "hybrid"}, "attention=hybrid"),
        ({"output": "adaptive", "tie_weights": False}, "output=adaptive"),
        ({"ffn": "geglu"}, "ffn=geglu"),
        ({"activation": "relu2"}, "activation=relu2 is not in llama.cpp's gpt2"),
        ({"qk_norm": True}, "qk_norm=true"),
        ({"logit_softcap": 30.0}, "logit_softcap=30.0"),
        ({"embed_mix": True}, "embed_mix=true"),
        ({"norm": "rmsnorm"}, "norm=rmsnorm does not fit the GPT-2 block"),
        ({"n_kv_head": 2}, "n_kv_head=2"),
        ({**LLAMA, "bias": True}, "bias=true does not fit the Llama block"),
    ],
)
def test_what_llama_cpp_cannot_run_is_refused_in_one_line(
    fields, fragment, make_run, bpe, capsys, tmp_path
):
    run_dir, _, _ = make_run("run", tokenizer=bpe, **fields)
    out = tmp_path / "out" / "model.gguf"
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out)
    assert_one_line_error(code, err, "cannot export to GGUF", fragment)
    assert not out.parent.exists()


def test_a_char_tokenizer_is_refused(make_run, capsys, tmp_path):
    run_dir, _, _ = make_run("char", **VARIANTS["gpt2"])  # make_run's default tokenizer
    out = tmp_path / "model.gguf"
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out)
    assert_one_line_error(code, err, "char tokenizer has no llama.cpp tokenizer type")
    assert not out.exists()


def test_a_sentencepiece_dummy_prefix_is_kept(make_run, training_documents, capsys, tmp_path):
    """A SentencePiece model that adds a space before the text (Llama's, imported) says so; the
    one tinygpt trains does not (test_tokenizer_from_the_gguf_gives_tinygpts_ids)."""
    tokenizer = sentencepiece_tokenizer(training_documents, model_type="bpe", add_dummy_prefix=True)
    run_dir, _, _ = make_run("prefixed", tokenizer=tokenizer, n_layer=1, **LLAMA)
    path = export(capsys, run_dir, tmp_path / "model.gguf")
    assert metadata(path)["tokenizer.ggml.add_space_prefix"] is True
    hf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "Once upon a time, Lily's dog found 22 balls."
    assert hf_tokenizer.encode(text, add_special_tokens=False) == tokenizer.encode(text)


def test_a_sentencepiece_unigram_model_is_refused(make_run, training_documents, capsys, tmp_path):
    """llama.cpp's SentencePiece tokenizer merges pieces by score, as BPE does; a unigram
    model (which `import-hf` may bring in) would split text otherwise."""
    unigram = sentencepiece_tokenizer(training_documents, model_type="unigram")
    run_dir, _, _ = make_run("unigram", tokenizer=unigram, **LLAMA)
    out = tmp_path / "model.gguf"
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out)
    assert_one_line_error(code, err, "sentencepiece tokenizer is a unigram model")
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--format", "gguf", "--quant", "q4_k"), "--quant q4_k is not one of f32, f16, q8_0"),
        (("--format", "hf", "--quant", "f16"), "--quant is for --format gguf"),
    ],
)
def test_a_wrong_quant_is_refused(flags, fragment, make_run, bpe, capsys, tmp_path):
    run_dir, _, _ = make_run("run", tokenizer=bpe, **VARIANTS["gpt2"])
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "export", run_dir, *flags, "--out", out)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


@pytest.mark.parametrize("existing", ["file", "folder"])
def test_an_existing_out_is_left_alone(existing, make_run, bpe, capsys, tmp_path):
    run_dir, _, _ = make_run("run", tokenizer=bpe, **VARIANTS["gpt2"])
    out = tmp_path / "model.gguf"
    if existing == "file":
        out.write_text("mine")
    else:
        out.mkdir()
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out)
    assert_one_line_error(code, err, "already exists" if existing == "file" else "is a folder")
    if existing == "file":
        assert out.read_text() == "mine"
    else:
        assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf", "run"]


def test_a_failed_write_leaves_nothing_behind(make_run, bpe, monkeypatch, tmp_path):
    run_dir, _, _ = make_run("run", tokenizer=bpe, **VARIANTS["gpt2"])
    folder = tmp_path / "models"
    folder.mkdir()

    def fail(self, *args, **kwargs) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail)
    with pytest.raises(OSError, match="no space left"):
        export_gguf(run_dir, folder / "model.gguf", "f16")
    assert list(folder.iterdir()) == []


def test_gguf_without_its_package_is_one_line(make_run, capsys, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else find_spec(name, *a),
    )
    run_dir, _, _ = make_run("llama", **LLAMA)
    out = tmp_path / "model.gguf"
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "gguf", "--out", out)
    assert_one_line_error(code, err, "--format gguf needs the gguf package", "tinygpt[gguf]")
    assert not out.exists()
