import itertools

import pytest
import torch

from tinygpt.config import TrainConfig
from tinygpt.errors import ConfigError
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


def wsd(**fields) -> TrainConfig:
    settings = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 10, "max_iters": 110}
    return TrainConfig(lr_schedule="wsd", **{**settings, **fields})


def test_wsd_warms_up_stays_flat_then_decays_by_one_minus_sqrt_to_min_lr_at_the_last_step():
    config = wsd(decay_fraction=0.2)  # decays over steps 88..109, the last 22 of 110
    assert learning_rate_at(0, config) == pytest.approx(1e-3 / 11)  # the same warm-up
    assert learning_rate_at(9, config) == pytest.approx(1e-3 * 10 / 11)
    assert {learning_rate_at(step, config) for step in range(10, 88)} == {1e-3}
    assert learning_rate_at(88, config) < 1e-3
    halfway = 88 + 11 - 1  # (step - 88 + 1) / 22 = 1/2
    expected = 1e-4 + (1 - 0.5**0.5) * 9e-4
    assert learning_rate_at(halfway, config) == pytest.approx(expected)
    decay = [learning_rate_at(step, config) for step in range(87, 110)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert learning_rate_at(109, config) == 1e-4  # the last trained step, exactly
    assert learning_rate_at(110, config) == learning_rate_at(1000, config) == 1e-4


def test_wsd_decays_over_lr_decay_iters_when_set_and_never_into_the_warm_up():
    config = wsd(lr_decay_iters=60, decay_fraction=0.5)
    assert learning_rate_at(29, config) == 1e-3 and learning_rate_at(30, config) < 1e-3
    assert learning_rate_at(59, config) == 1e-4
    whole = wsd(decay_fraction=1.0)  # all of it: the decay starts where the warm-up ends
    assert learning_rate_at(9, whole) < learning_rate_at(10, whole) < 1e-3
    assert learning_rate_at(109, whole) == 1e-4


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_decay_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ConfigError, match="decay_fraction"):
        wsd(decay_fraction=fraction)
