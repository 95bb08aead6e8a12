"""Muon: the fp32 orthogonalisation, the choice between it and torch's, training with it, exact
resume and the config's refusals."""

import dataclasses

import pytest
import torch

from tinygpt import runtime
from tinygpt.config import TrainConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.errors import ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.run.metrics import read_metrics
from tinygpt.train.muon import NS_COEFFICIENTS, Fp32Muon, make_muon, orthogonalize
from tinygpt.train.optim import build_optimizer, set_learning_rate
from tinygpt.train.start import resume_run, start_run


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (32, 32)])
def test_orthogonalize_keeps_the_singular_vectors_and_moves_singular_values_near_one(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert s.max() / s.min() > 5  # a spread the iteration has to even out
    result = orthogonalize(matrix)
    assert result.dtype == torch.float32 and result.shape == shape
    in_the_svd_basis = u.T @ result @ vh.T  # U S' V^T: S' diagonal
    off_diagonal = in_the_svd_basis - torch.diag(torch.diagonal(in_the_svd_basis))
    assert off_diagonal.abs().max() < 1e-4
    assert torch.diagonal(in_the_svd_basis).min() > 0.5
    assert torch.diagonal(in_the_svd_basis).max() < 1.5


def test_orthogonalize_matches_torch_muons_bf16_iteration():
    from torch.optim._muon import _zeropower_via_newtonschulz

    matrix = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    ours = orthogonalize(matrix)
    torchs = _zeropower_via_newtonschulz(matrix, NS_COEFFICIENTS, 5, 1e-7).float()
    assert torch.linalg.norm(ours - torchs) / torch.linalg.norm(torchs) < 0.05  # bf16 rounding


def test_fp32_muon_makes_torch_muons_update_and_keeps_its_state():
    generator = torch.Generator().manual_seed(2)
    start = [torch.randn(16, 24, generator=generator), torch.randn(24, 8, generator=generator)]
    grads = [[torch.randn(p.shape, generator=generator) for p in start] for _ in range(3)]
    results = []
    for kind in (torch.optim.Muon, Fp32Muon):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = kind(params, lr=0.02, momentum=0.95, weight_decay=0.1)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results.append((params, optimizer.state_dict()))
    (torch_params, torch_state), (our_params, our_state) = results
    for p0, ours, torchs in zip(start, our_params, torch_params, strict=True):
        moved = torch.linalg.norm(torchs - p0)
        assert moved > 0.05
        assert torch.linalg.norm(ours - torchs) / moved < 0.05
    assert torch_state["param_groups"] == our_state["param_groups"]
    for key, value in torch_state["state"].items():
        assert torch.equal(value["momentum_buffer"], our_state["state"][key]["momentum_buffer"])


@pytest.mark.parametrize(
    ("device_type", "native_bf16", "kind"),
    [
        ("cpu", False, Fp32Muon),
        ("cpu", True, torch.optim.Muon),
        ("cuda", False, torch.optim.Muon),
        ("mps", False, Fp32Muon),
    ],
)
def test_torch_muon_is_used_only_where_bf16_matmuls_are_native(
    monkeypatch, device_type, native_bf16, kind
):
    features = runtime.CpuFeatures("AVX2", native_bf16, False, native_bf16)
    monkeypatch.setattr("tinygpt.train.muon.cpu_features", lambda: features)
    optimizer = make_muon([torch.nn.Parameter(torch.zeros(4, 4))], 0.02, 0.95, 0.0, device_type)
    assert type(optimizer) is kind


def test_a_tiny_model_overfits_one_batch_with_muon(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    config = TrainConfig(optimizer="muon", learning_rate=3e-3, muon_lr=0.02, weight_decay=0.0)
    optimizer = build_optimizer(model, config, "cpu")
    set_learning_rate(optimizer, config.learning_rate)
    x = torch.randint(
        0, tiny_config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0)
    )
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(60):
        loss = model.loss(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 3.0  # about ln(37): the untrained guess
    assert losses[-1] < 0.5, losses[-1]


def test_resume_with_muon_and_wsd_is_bit_exact(tiny_run_config, tmp_path):
    config = apply_overrides(
        tiny_run_config, {"optimizer": "muon", "muon_lr": "0.02", "lr_schedule": "wsd"}
    )
    whole = start_run(config, tmp_path / "whole")
    whole.fit()
    split = start_run(config, tmp_path / "split")
    assert split.fit(stop_at=6).stop_reason == "stop_at"
    resumed = resume_run(tmp_path / "split")
    assert len(resumed.optimizer.muon.state) > 0  # Muon's momentum came back
    resumed.fit()
    for (name, a), b in zip(
        whole.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(a, b), name

    def logged(run: str, key: str) -> list[float]:
        return [r[key] for r in read_metrics(tmp_path / run) if key in r]

    assert logged("whole", "val_loss") == logged("split", "val_loss")
    assert logged("whole", "lr") == logged("split", "lr")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"optimizer": "muon", "distributed": "fsdp"}, "fsdp"),
        ({"muon_lr": 0.0}, "muon_lr"),
        ({"muon_momentum": 1.0}, "muon_momentum"),
    ],
)
def test_muon_settings_are_refused_in_one_line(fields, named):
    with pytest.raises(ConfigError, match=named) as refused:
        dataclasses.replace(TrainConfig(), **fields)
    assert "\n" not in str(refused.value)
