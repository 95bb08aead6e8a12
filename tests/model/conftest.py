"""Checks every model variant must pass, as fixtures so each test file states only its config."""

from collections.abc import Callable

import pytest
import torch

from tinygpt.model.gpt import GPT
from tinygpt.model.loss import language_model_loss


@pytest.fixture
def loss_after_overfitting() -> Callable[[GPT], float]:
    """Train on one fixed batch for 300 AdamW steps; a working model memorises it."""

    def train(model: GPT) -> float:
        torch.manual_seed(0)
        vocab_size = model.config.vocab_size
        x = torch.randint(0, vocab_size, (4, 16))
        y = torch.roll(x, -1, dims=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(300):
            loss = language_model_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    return train


@pytest.fixture
def assert_causal() -> Callable[[GPT, int], None]:
    """Changing the token at `position` must leave every earlier logit bitwise unchanged, in
    the model's current mode (dropout masks are replayed from the same seed)."""

    def check(model: GPT, position: int) -> None:
        vocab_size = model.config.vocab_size
        idx = torch.randint(0, vocab_size, (2, 12))
        changed = idx.clone()
        changed[:, position] = (changed[:, position] + 1) % vocab_size
        with torch.set_grad_enabled(model.training):
            torch.manual_seed(0)
            before = model(idx)
            torch.manual_seed(0)
            after = model(changed)
        torch.testing.assert_close(before[:, :position], after[:, :position], rtol=0, atol=0)
        assert not torch.allclose(before[:, position:], after[:, position:])

    return check


@pytest.fixture
def perturbed() -> Callable[[GPT], GPT]:
    """Add noise to every parameter, in place: so a check cannot pass because an initialisation
    (zero output projections, an embedding mix starting at 1 and 0) makes a part a no-op."""

    def perturb(model: GPT) -> GPT:
        torch.manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        return model

    return perturb
