import pytest
import torch

from tinygpt.config import TrainConfig
from tinygpt.train.schedule import learning_rate_at


def test_warmup_rises_linearly_then_cosine_decays_to_min_lr():
    config = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert learning_rate_at(0, config) == pytest.approx(1e-3 / 11)
    assert learning_rate_at(9, config) == pytest.approx(1e-3 * 10 / 11)
    assert learning_rate_at(10, config) == pytest.approx(1e-3)
    assert learning_rate_at(60, config) == pytest.approx((1e-3 + 1e-4) / 2)
    assert learning_rate_at(110, config) == pytest.approx(1e-4)
    assert learning_rate_at(500, config) == pytest.approx(1e-4)


def test_constant_schedule_stays_at_the_learning_rate_after_warmup():
    config = TrainConfig(learning_rate=3e-4, min_lr=3e-4, lr_schedule="constant", warmup_iters=0)
    assert {learning_rate_at(step, config) for step in (0, 100, 4999)} == {3e-4}


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_warm_restarts_follow_torch_cosine_annealing_warm_restarts(mult):
    config = TrainConfig(
        learning_rate=1.0,
        min_lr=0.1,
        warmup_iters=0,
        lr_schedule="cosine_restarts",
        restart_iters=7,
        restart_mult=mult,
        max_iters=400,
    )
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=7, T_mult=mult, eta_min=0.1
    )
    for step in range(400):
        assert learning_rate_at(step, config) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
