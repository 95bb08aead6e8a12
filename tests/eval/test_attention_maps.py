from pathlib import Path

import pytest
import torch

from tinygpt.cli import main
from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.eval.attention_maps import (
    layer_attention,
    local_weights,
    parse_layers,
    record_attention,
    softmax_weights,
    write_attention_maps,
)
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.char import CharTokenizer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEXT = "To be, or not to be: that is the question."
VARIANTS = {
    "mha": {},
    "gqa-rope": {"n_kv_head": 2, "position": "rope"},
    "hybrid": {"attention": "hybrid", "n_kv_head": 2, "local_window": 4, "local_dim": 8},
}


def tiny_model(**overrides) -> tuple[GPT, CharTokenizer]:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.train(TEXT + "$5\n")  # $ would start mathtext in a label
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        block_size=16,
        n_layer=2,
        n_head=4,
        n_embd=32,
        dropout=0.0,
        **overrides,
    )
    model = GPT(config).eval()
    if config.attention == "hybrid":  # away from the initial 1/2, so a wrong gate shows
        for block in model.blocks:
            torch.nn.init.normal_(block.attn.gate_logit, std=1.0)
    return model, tokenizer


def recorded(variant: str):
    model, tokenizer = tiny_model(**VARIANTS[variant])
    idx = torch.tensor([tokenizer.encode(TEXT[:16]), tokenizer.encode(TEXT[16:32])])
    return model, record_attention(model, idx)


def assert_causal_rows(weights: torch.Tensor) -> None:
    T = weights.size(-1)
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-6)
    assert (weights * torch.ones(T, T).triu(1)).abs().max() == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_are_causal_and_rows_sum_to_one(variant: str):
    _, calls = recorded(variant)
    assert [call.layer for call in calls] == [0, 1]
    for call in calls:
        weights = softmax_weights(call.q, call.k)
        assert weights.shape == (2, 4, 16, 16)
        assert_causal_rows(weights)
        if variant == "hybrid":
            local = local_weights(call)
            assert_causal_rows(local)
            distance = torch.arange(16).view(16, 1) - torch.arange(16).view(1, 16)
            assert (local[..., distance >= 4]).abs().max() == 0  # outside the window


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_reproduce_the_attention_output(variant: str):
    _, calls = recorded(variant)
    for call in calls:
        H, K = call.q.size(1), call.k.size(1)
        v = call.v.repeat_interleave(H // K, dim=1)  # (B, H, T, D)
        weights = softmax_weights(call.q, call.k)
        if variant == "hybrid":
            gate = call.module.gate().detach().view(1, H, 1, 1)
            weights = torch.lerp(local_weights(call), weights, gate)
        torch.testing.assert_close(weights @ v, call.output, atol=1e-5, rtol=1e-5)


def test_recording_leaves_the_model_as_it_was():
    model, tokenizer = tiny_model()
    idx = torch.tensor([tokenizer.encode(TEXT[:16])])
    with torch.no_grad():
        before = model(idx)
    record_attention(model, idx)
    assert all("attend" not in vars(block.attn) for block in model.blocks)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), before)


def test_layer_attention_of_the_hybrid_has_gate_and_local_band():
    model, calls = recorded("hybrid")
    attention = layer_attention(calls[1], sequence=1)
    assert attention.weights.shape == attention.local_weights.shape == (4, 16, 16)
    torch.testing.assert_close(attention.gate, model.blocks[1].attn.gate().detach())


def test_plain_model_writes_one_grid_per_layer(tmp_path: Path):
    model, tokenizer = tiny_model(**VARIANTS["gqa-rope"])
    paths = write_attention_maps(model, tokenizer, "To be\n$5 or not", tmp_path, layers=[1])
    assert [p.name for p in paths] == ["layer01_attention.png"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC


def test_hybrid_writes_global_local_and_gate_figures(tmp_path: Path):
    model, tokenizer = tiny_model(**VARIANTS["hybrid"])
    paths = write_attention_maps(model, tokenizer, TEXT, tmp_path)  # longer than block_size
    names = [p.name for p in paths]
    assert names == [
        f"layer{layer:02d}_{kind}.png" for layer in (0, 1) for kind in ("global", "local", "gate")
    ]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)


def test_parse_layers():
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("2,0,-1", 3) == [0, 2]
    for bad in ("3", "x", "0,,1"):
        with pytest.raises(ConfigError):
            parse_layers(bad, 3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("attention-run")
    (folder / "text.txt").write_text(TEXT * 40, encoding="utf-8")
    argv = ["train", "--data", folder / "text.txt", "--out", folder / "run", "--block_size", "16"]
    argv += ["--n_layer", "2", "--n_head", "2", "--n_embd", "16", "--batch_size", "2"]
    argv += ["--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1", "--workers", "1"]
    assert main([str(arg) for arg in argv]) == 0
    return folder / "run"


def test_cli_prints_the_written_paths(capsys, tiny_run: Path, tmp_path: Path):
    capsys.readouterr()
    argv = ["attention", str(tiny_run), "--prompt", "To be", "--layers", "1", "--out"]
    assert main([*argv, str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert Path(line) == tmp_path / "layer01_attention.png" and Path(line).is_file()


def test_cli_refuses_a_missing_layer_in_one_line(capsys, tiny_run: Path):
    capsys.readouterr()
    assert main(["attention", str(tiny_run), "--prompt", "To be", "--layers", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygpt: error: --layers '5'") and len(err.splitlines()) == 1
