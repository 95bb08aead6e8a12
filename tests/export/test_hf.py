"""Export to and import from Hugging Face transformers: the same logits and greedy text in
transformers, identical weights after a round trip, one-line refusals for what it cannot run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from greedy_decoding import greedy
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers import GPT2Tokenizer as HFGPT2Tokenizer

from tinygpt.model.gpt import GPT
from tinygpt.run.directory import read_run_config_dict
from tinygpt.run.load import load_checkpoint, load_model_from_run
from tinygpt.tokenizers.tiktoken_gpt2 import GPT2Tokenizer

LLAMA = {"norm": "rmsnorm", "position": "rope", "ffn": "swiglu", "bias": False}
VARIANTS = {
    "gpt2": {},
    "gpt2-untied-no-bias": {"tie_weights": False, "bias": False},
    "gpt2-ffn-hidden-xavier": {"ffn_hidden": 48, "init": "xavier"},
    "gpt2-gelu-tanh": {"activation": "gelu_tanh"},
    "gpt2-relu2": {"activation": "relu2"},  # transformers' ACT2FN["relu2"], Primer's
    "llama": LLAMA,
    "llama-gqa-untied": {**LLAMA, "n_kv_head": 2, "tie_weights": False, "rope_theta": 500.0},
    "llama-mqa-ffn-hidden": {**LLAMA, "n_kv_head": 1, "ffn_hidden": 40},
}


def export(capsys, run_dir: Path, out: Path) -> Path:
    code, stdout, err = run_cli(capsys, "export", run_dir, "--format", "hf", "--out", out)
    assert code == 0, err
    assert str(out) in stdout
    return out


def import_back(capsys, hf_dir: Path, out: Path) -> Path:
    code, _, err = run_cli(capsys, "import-hf", hf_dir, "--out", out)
    assert code == 0, err
    return out


def hf_greedy(hf_model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=steps
    )
    return out[0, len(prompt) :].tolist()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        assert torch.equal(tensor, state_b[name]), name


@pytest.mark.parametrize("name", VARIANTS)
def test_exported_logits_match_tinygpt(name, make_run, sample_text, capsys, tmp_path):
    run_dir, model, tokenizer = make_run(name, **VARIANTS[name])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    expected = "LlamaForCausalLM" if name.startswith("llama") else "GPT2LMHeadModel"
    assert type(hf_model).__name__ == expected
    ids = torch.tensor([tokenizer.encode(sample_text[:32])])  # the whole context
    with torch.no_grad():
        difference = (model(ids) - hf_model(ids).logits).abs().max().item()
    assert difference < 1e-4


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa-untied"])
def test_greedy_generation_matches_tinygpt(name, make_run, capsys, tmp_path):
    run_dir, model, tokenizer = make_run(name, **VARIANTS[name])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    prompt = hf_tokenizer.encode("Before we")
    assert prompt == tokenizer.encode("Before we")
    generated = hf_greedy(hf_model, prompt, 20)
    assert generated == greedy(model, prompt, 20)  # random weights: padded ids included


@pytest.mark.parametrize(
    "name", ["gpt2-untied-no-bias", "gpt2-ffn-hidden-xavier", "gpt2-gelu-tanh", "llama-gqa-untied"]
)
def test_export_then_import_gives_identical_weights(name, make_run, capsys, tmp_path):
    run_dir, model, tokenizer = make_run(name, **VARIANTS[name])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    back = import_back(capsys, hf_dir, tmp_path / "back")
    imported, imported_tokenizer, config = load_model_from_run(back)
    assert_same_state(model, imported)
    assert config.model == model.config  # dropout, init and bias=false come back from the hint
    assert imported_tokenizer.to_dict() == tokenizer.to_dict()


@pytest.mark.parametrize(
    ("activation", "function"), [("gelu", "gelu"), ("gelu_tanh", "gelu_new"), ("relu2", "relu2")]
)
def test_export_writes_the_activation_function(activation, function, make_run, capsys, tmp_path):
    run_dir, _, _ = make_run("run", activation=activation)
    document = json.loads((export(capsys, run_dir, tmp_path / "hf") / "config.json").read_text())
    assert document["activation_function"] == function


@pytest.mark.parametrize("function", ["gelu_new", "gelu_pytorch_tanh"])
def test_a_gpt2_with_the_tanh_gelu_imports_with_its_logits(
    function, make_run, sample_text, capsys, tmp_path
):
    """A GPT2LMHeadModel made by transformers itself (config and weights), as from the hub."""
    run_dir, _, tokenizer = make_run("run")
    hf_dir = export(capsys, run_dir, tmp_path / "hf")  # for its tokenizer files
    hf_config = GPT2Config(
        vocab_size=tokenizer.vocab_size + 3,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function=function,
    )
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for parameter in hf_model.parameters():  # far from init, so the GELUs' gap shows
            parameter.add_(0.1 * torch.randn_like(parameter))
    hf_model.save_pretrained(hf_dir)
    imported, _, config = load_model_from_run(import_back(capsys, hf_dir, tmp_path / "back"))
    assert config.model.activation == "gelu_tanh"
    ids = torch.tensor([tokenizer.encode(sample_text[:32])])
    with torch.no_grad():
        expected = hf_model(ids).logits
        assert (imported(ids) - expected).abs().max().item() < 1e-4
        exact = GPT(dataclasses.replace(config.model, activation="gelu"))
        exact.load_state_dict(imported.state_dict())
        assert (exact.eval()(ids) - expected).abs().max().item() > 1e-4  # the test can tell


def test_import_without_tinygpt_hint_still_gives_the_same_logits(
    make_run, sample_text, capsys, tmp_path
):
    run_dir, model, _ = make_run("modern", **VARIANTS["llama-gqa-untied"])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    document = json.loads((hf_dir / "config.json").read_text())
    del document["tinygpt"]
    (hf_dir / "config.json").write_text(json.dumps(document))
    imported, _, _ = load_model_from_run(import_back(capsys, hf_dir, tmp_path / "back"))
    assert_same_state(model, imported)


def test_imported_run_samples_and_fine_tunes(make_run, sample_text, capsys, tmp_path):
    run_dir, _, _ = make_run("base", **VARIANTS["llama"])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    back = import_back(capsys, hf_dir, tmp_path / "back")
    assert load_checkpoint(back, "last").step == 0
    code, out, err = run_cli(
        capsys, "sample", back, "--prompt", "Before", "--max-new-tokens", 8, "--temperature", 0
    )
    assert code == 0, err
    assert out.startswith("Before")
    text = tmp_path / "text.txt"
    text.write_text(sample_text * 20, encoding="utf-8")
    code, _, err = run_cli(
        capsys, "finetune", back, "--data", text, "--out", tmp_path / "tuned", "--max_iters", 2,
        "--batch_size", 2, "--eval_interval", 2, "--eval_iters", 1, "--warmup_iters", 0,
    )  # fmt: skip
    assert code == 0, err


def test_gpt2_tokenizer_run_matches_in_transformers(make_run, shared_data, capsys, tmp_path):
    gpt2 = GPT2Tokenizer.load(str(shared_data / "gpt2_bpe"))
    run_dir, model, _ = make_run(
        "gpt2-bpe", tokenizer=gpt2, vocab_padding=0, n_layer=1, n_head=2, n_embd=16
    )
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert hf_model.config.eos_token_id == hf_tokenizer.eos_token_id == gpt2.eot_id
    text = "Once upon a time, Lily's dog found 22 balls."
    ids = hf_tokenizer.encode(text)
    assert ids == gpt2.encode(text)
    assert hf_tokenizer.decode(ids) == text
    with torch.no_grad():
        difference = (model(torch.tensor([ids])) - hf_model(torch.tensor([ids])).logits).abs()
    assert difference.max().item() < 1e-4
    generated, expected = hf_greedy(hf_model, ids, 12), greedy(model, ids, 12)
    # generate() stops early at <|endoftext|> (generation_config.json names it); we do not
    assert generated == expected[: len(generated)]
    assert len(generated) == 12 or generated[-1] == gpt2.eot_id
    imported, imported_tokenizer, _ = load_model_from_run(
        import_back(capsys, hf_dir, tmp_path / "back")
    )
    assert_same_state(model, imported)
    assert isinstance(imported_tokenizer, GPT2Tokenizer)
    assert imported_tokenizer.to_dict() == gpt2.to_dict()  # OpenAI's merges, in the run


def test_a_gpt2_saved_by_todays_transformers_imports(shared_data, capsys, tmp_path):
    """transformers 5's save_pretrained writes GPT-2's tokenizer as tokenizer.json alone."""
    bpe = shared_data / "gpt2_bpe"
    vocab = json.loads((bpe / "encoder.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in (bpe / "vocab.bpe").read_text().splitlines()[1:]]
    hf_dir = tmp_path / "hf"
    HFGPT2Tokenizer(vocab=vocab, merges=merges).save_pretrained(hf_dir)
    assert not (hf_dir / "vocab.json").exists() and not (hf_dir / "merges.txt").exists()
    hf_config = GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(hf_dir)
    run_dir = import_back(capsys, hf_dir, tmp_path / "back")
    imported, tokenizer, _ = load_model_from_run(run_dir)
    assert isinstance(tokenizer, GPT2Tokenizer)
    ids = tokenizer.encode("Once upon a time")
    assert ids == AutoTokenizer.from_pretrained(hf_dir).encode("Once upon a time")
    with torch.no_grad():
        expected = hf_model(torch.tensor([ids])).logits
        assert (imported(torch.tensor([ids])) - expected).abs().max().item() < 1e-4


def test_an_imported_run_records_no_training_data(make_run, sample_text, capsys, tmp_path):
    run_dir, _, _ = make_run("run")
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    back = import_back(capsys, hf_dir, tmp_path / "back")
    assert read_run_config_dict(back)["data"]["source"] == f"imported:{hf_dir.resolve()}"
    code, _, err = run_cli(capsys, "eval", back)  # it scored the model folder's files
    assert_one_line_error(code, err, "imported from", "give --data")
    text = tmp_path / "text.txt"
    text.write_text(sample_text * 20, encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", back, "--data", text, "--batch-size", 2)
    assert code == 0, err
    assert "loss" in out


def test_export_refuses_a_non_empty_out(make_run, capsys, tmp_path):
    run_dir, _, _ = make_run("run")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", run_dir, "--format", "hf", "--out", tmp_path / "hf")
    assert_one_line_error(code, err, "is not empty")


@pytest.mark.parametrize(
    ("name", "edit", "fragment"),
    [
        ("gpt2", {"model_type": "mistral"}, "model_type='mistral' is not supported"),
        ("gpt2", {"activation_function": "relu"}, "activation_function=relu"),
        ("llama", {"rms_norm_eps": 1e-5}, "rms_norm_eps=1e-05"),
        ("llama", {"rope_parameters": {"rope_type": "llama3"}}, "rope_type=llama3"),
        ("llama", {"attention_bias": True}, "attention_bias=true"),
    ],
)
def test_import_refuses_what_tinygpt_cannot_run(name, edit, fragment, make_run, capsys, tmp_path):
    run_dir, _, _ = make_run(name, **VARIANTS[name])
    hf_dir = export(capsys, run_dir, tmp_path / "hf")
    document = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**document, **edit}))
    code, _, err = run_cli(capsys, "import-hf", hf_dir, "--out", tmp_path / "back")
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "back").exists()


def test_import_refuses_weights_that_are_not_safetensors(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, _, err = run_cli(capsys, "import-hf", tmp_path / "hf", "--out", tmp_path / "back")
    assert_one_line_error(code, err, "has no model.safetensors")
