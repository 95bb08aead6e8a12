"""The CUDA path: bf16 autocast, the flash kernel, torch.compile, torch's own Muon, the KV cache
and the command line on a GPU. Skipped where there is none (CI has none); run on a lent GPU
machine with `python3 -m pytest tests/test_cuda.py`."""

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tinygpt.cli import main
from tinygpt.compare.variants import with_prepared_vocab
from tinygpt.config import ModelConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.model.gpt import GPT
from tinygpt.model.loss import language_model_loss
from tinygpt.presets import get_preset
from tinygpt.train.loop import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

BASE = ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
VARIANTS = {
    "baseline": BASE,
    "gqa-rope": dataclasses.replace(
        BASE, n_kv_head=2, position="rope", norm="rmsnorm", ffn="swiglu"
    ),
    "hybrid": dataclasses.replace(
        BASE, attention="hybrid", n_kv_head=2, local_window=8, local_dim=16
    ),
    "model-ideas": dataclasses.replace(
        BASE,
        qk_norm=True,
        activation="relu2",
        zero_init_proj=True,
        logit_softcap=15.0,
        embed_mix=True,
        tie_weights=False,
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_bf16_autocast_trains_every_variant(name):
    torch.manual_seed(0)
    model = GPT(VARIANTS[name]).cuda()
    x = torch.randint(0, 65, (8, 64), device="cuda")
    y = torch.roll(x, -1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = language_model_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", ["baseline", "gqa-rope", "model-ideas"])
def test_the_model_runs_on_the_flash_kernel_in_bf16(name):
    """Only flash allowed: a mask tensor or an unsupported shape would make SDPA refuse."""
    model = GPT(VARIANTS[name]).cuda().to(torch.bfloat16)
    x = torch.randint(0, 65, (4, 64), device="cuda")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_logits_equal_full_recomputation_on_the_gpu(name):
    torch.manual_seed(0)
    model = GPT(VARIANTS[name]).cuda().eval()
    idx = torch.randint(0, 65, (2, 40), device="cuda")
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2)
        chunks = [model(idx[:, :9], cache=cache)]
        chunks += [model(idx[:, t : t + 1], cache=cache) for t in range(9, 40)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.compile": True},
        {"train.optimizer": "muon"},  # torch.optim.Muon: its bf16 Newton-Schulz on the GPU
        {"train.optimizer": "muon", "model.qk_norm": True, "model.activation": "relu2"},
    ],
    ids=["compile", "muon", "muon-ideas"],
)
def test_the_trainer_learns_on_cuda_in_bf16(overrides):
    config = apply_overrides(
        get_preset("baby-shakespeare"),
        {"train.device": "cuda", "train.dtype": "auto", "train.max_iters": 150, **overrides},
    )
    config, prepared = with_prepared_vocab(config)
    trainer = Trainer(config, None, prepared)
    assert trainer.runtime.dtype == torch.bfloat16
    first = trainer.train_step().item()
    for _ in range(149):
        last = trainer.train_step().item()
    assert last < first - 1.0, (first, last)


def test_train_then_sample_on_cuda_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--device", "cuda", "--max_iters", "100", "--eval_interval", "50", "--out", run]
    assert main(["train", "--preset", "baby-shakespeare", *map(str, args)]) == 0
    code = main(["sample", str(run), "--max-new-tokens", "100", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0 and len(out) > 50
