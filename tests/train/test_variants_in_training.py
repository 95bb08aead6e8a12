"""Every architecture variant trains, resumes exactly, runs under bf16 autocast and torch.compile,
and loads back from its checkpoint; `epochs` sets the number of steps."""

import math

import pytest
import torch

from tinygpt.config_parsing import apply_overrides
from tinygpt.run.load import load_model_from_run
from tinygpt.run.metrics import read_metrics
from tinygpt.train.start import resume_run, start_run

VARIANTS = {
    "gqa": {"n_head": 4, "n_kv_head": 2},
    "hybrid": {"n_head": 4, "n_kv_head": 2, "attention": "hybrid", "local_window": 4,
               "local_dim": 8, "ffn": "geglu"},
    "modern": {"norm": "rmsnorm", "position": "rope", "ffn": "swiglu", "bias": "false"},
    "adaptive": {"output": "adaptive", "tie_weights": "false", "adaptive_cutoffs": "8,24"},
    "model-ideas": {"qk_norm": "true", "activation": "relu2", "zero_init_proj": "true",
                    "logit_softcap": "15", "embed_mix": "true", "tie_weights": "false"},
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_resumes_exactly_and_loads_back_from_its_checkpoint(
    tiny_run_config, tmp_path, variant
):
    config = apply_overrides(tiny_run_config, VARIANTS[variant])
    whole = start_run(config, tmp_path / "whole")
    whole.fit()
    start_run(config, tmp_path / "split").fit(stop_at=6)
    resumed = resume_run(tmp_path / "split")
    resumed.fit()
    for name, expected in whole.model.state_dict().items():
        assert torch.equal(expected, resumed.model.state_dict()[name]), name

    evals = [r for r in read_metrics(tmp_path / "whole") if r["kind"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    loaded, _, _ = load_model_from_run(tmp_path / "whole", "last", torch.device("cpu"))
    idx = torch.randint(0, config.model.vocab_size or 30, (2, 16))
    whole.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), whole.model(idx), rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["hybrid", "adaptive", "model-ideas"])
def test_variant_trains_under_bfloat16_autocast(tiny_run_config, tmp_path, variant):
    config = apply_overrides(tiny_run_config, {**VARIANTS[variant], "dtype": "bfloat16"})
    trainer = start_run(config, tmp_path / "run")
    losses = [trainer.train_step().item() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
def test_compiled_hybrid_with_adaptive_softmax_matches_eager(
    tiny_run_config, tmp_path, train_eager_and_compiled
):
    config = apply_overrides(
        tiny_run_config,
        {**VARIANTS["hybrid"], **VARIANTS["adaptive"], "dropout": 0.0, "max_iters": 3},
    )
    train_eager_and_compiled(config, tmp_path)


def test_epochs_set_the_steps_that_read_the_train_split_that_many_times(tiny_run_config, tmp_path):
    config = apply_overrides(tiny_run_config, {"epochs": 0.5})
    trainer = start_run(config, tmp_path / "run")
    train_tokens = len(trainer.train_tokens)
    tokens_per_step = 4 * 16 * 2  # batch x block x accumulation
    assert trainer.config.train.max_iters == math.ceil(0.5 * train_tokens / tokens_per_step)
    saved = (tmp_path / "run" / "config.json").read_text()
    assert f'"max_iters": {trainer.config.train.max_iters}' in saved  # a resume keeps it
