import itertools
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.text import Text

from tinygpt.cli import main
from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.eval.attention_maps import (
    MAX_LABELLED_TOKENS,
    context_ids,
    head_grid,
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
        torch.testing.assert_close(weights @ v, call.output, atol=1e-5, rtol=1e-5)
        if variant == "hybrid":
            local = local_weights(call)
            torch.testing.assert_close(local @ v, call.local_output, atol=1e-5, rtol=1e-5)
            gate = call.module.gate().detach().view(1, H, 1, 1)
            mixed = call.module.mix(call.output, call.local_output)  # the layer's head outputs
            torch.testing.assert_close(
                torch.lerp(local, weights, gate) @ v, mixed, atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("variant", VARIANTS)
def test_recording_leaves_the_model_as_it_was(variant: str):
    model, tokenizer = tiny_model(**VARIANTS[variant])
    idx = torch.tensor([tokenizer.encode(TEXT[:16])])
    with torch.no_grad():
        before = model(idx)
    record_attention(model, idx)
    assert all("attend" not in vars(block.attn) for block in model.blocks)
    assert all("attend_local" not in vars(block.attn) for block in model.blocks)
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


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning(tmp_path: Path, caplog):
    model, tokenizer = tiny_model()
    with caplog.at_level(logging.WARNING, logger="tinygpt"):
        write_attention_maps(model, tokenizer, TEXT, tmp_path, layers=[0])
    (line,) = [record.getMessage() for record in caplog.records]
    assert f"the prompt has {len(TEXT)} tokens" in line and "drawing its last 16" in line
    caplog.clear()
    assert context_ids(list(range(16)), 16) == list(range(16))  # one that fits: whole, no word
    assert not caplog.records


def sink_weights(heads: int, tokens: int) -> torch.Tensor:
    """Causal softmax weights whose heads put most of each row on the first token, as trained
    models' heads do (an attention sink)."""
    scores = torch.randn(heads, tokens, tokens, generator=torch.Generator().manual_seed(0))
    scores[..., 0] += 5.0
    future = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def test_the_colour_scale_is_not_set_by_the_first_token():
    weights = sink_weights(4, 24)
    figure = head_grid(weights, None, "sink")
    norm = figure.axes[0].images[0].norm
    rest = float(weights[..., 1:].max())
    assert float(weights[..., 0].max()) == 1.0  # the first query sees only the first key
    assert norm.vmax == pytest.approx(rest) and rest < 0.5
    assert isinstance(norm, PowerNorm) and norm.gamma == 0.5
    assert all(ax.images[0].norm is norm for ax in figure.axes[:4])  # one scale per layer
    plt.close(figure)


def visible_tick_labels(figure: Figure) -> list[tuple[list[Text], list[Text]]]:
    """Each head panel's (x, y) tick labels that show text, after drawing with Agg."""
    figure.canvas.draw()
    panels = [ax for ax in figure.axes if ax.images]
    return [
        tuple([t for t in labels if t.get_visible() and t.get_text()] for labels in pair)
        for pair in ((ax.get_xticklabels(), ax.get_yticklabels()) for ax in panels)
    ]


@pytest.mark.parametrize("tokens", [16, 48, MAX_LABELLED_TOKENS])
def test_token_labels_do_not_overlap(tokens: int):
    words = ("·once", "·upon", "·a", "·time", "·there", "·wasn't", "\\n", "·extraordinarily")
    labels = [words[i % len(words)][:10] for i in range(tokens)]  # cut as token_labels cuts
    figure = head_grid(sink_weights(3, tokens), labels, "labels")  # 2 x 2 panels, one empty
    renderer = figure.canvas.get_renderer()
    panels = [ax.get_window_extent(renderer) for ax in figure.axes if ax.images]
    for index, (x_labels, y_labels) in enumerate(visible_tick_labels(figure)):
        assert 8 <= len(x_labels) == len(y_labels) <= tokens
        for axis_labels in (x_labels, y_labels):
            boxes = [label.get_window_extent(renderer) for label in axis_labels]
            assert not any(a.overlaps(b) for a, b in itertools.pairwise(boxes))
            others = [box for other, box in enumerate(panels) if other != index]
            assert not any(box.overlaps(panel) for box in boxes for panel in others)
    plt.close(figure)


def test_a_prompt_beyond_the_labelled_length_shows_positions():
    labels = ["·a"] * (MAX_LABELLED_TOKENS + 1)
    figure = head_grid(sink_weights(1, len(labels)), labels, "positions")
    ((x_labels, _),) = visible_tick_labels(figure)
    numbers = [label.get_text().lstrip("\u2212") for label in x_labels]  # matplotlib's minus
    assert all(number.isdigit() for number in numbers) and len(numbers) < 12
    plt.close(figure)


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
