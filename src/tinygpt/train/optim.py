"""AdamW with weight decay on matrices only; or Muon on the blocks' matrices beside it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tinygpt.config import TrainConfig
from tinygpt.train.muon import make_muon


class MuonWithAdamW:
    """Muon for the blocks' matrices and AdamW for the rest, stepped together as one optimizer
    (what the trainer, the grad scaler and a checkpoint see). `param_groups` lists AdamW's
    groups first, so `param_groups[0]["lr"]` is AdamW's learning rate, as it is without Muon."""

    def __init__(self, adamw: torch.optim.Optimizer, muon: torch.optim.Optimizer) -> None:
        self.adamw = adamw
        self.muon = muon

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.adamw.param_groups, *self.muon.param_groups]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self.adamw.step(closure)
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


Optimizer = torch.optim.Optimizer | MuonWithAdamW


def build_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> Optimizer:
    """AdamW over every trainable tensor; with `optimizer=muon`, Muon takes the blocks' linear
    weights (attention qkv/proj, MLP fc/proj) and AdamW keeps the embeddings, the head, norms,
    biases and small extra tensors (the hybrid's score vectors), as in modded-nanogpt: Muon's
    orthogonal update suits hidden matrices, not an embedding's rows, which are looked up
    one token at a time. Muon's group carries `lr_scale` = muon_lr / learning_rate, so the one
    schedule (`set_learning_rate`) moves both."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "muon":
        hidden = {id(p) for p in hidden_matrices(model)}
        if hidden:
            adamw = _adamw([p for p in params if id(p) not in hidden], config, device_type)
            muon_params = [p for p in params if id(p) in hidden]
            muon = make_muon(
                muon_params, config.muon_lr, config.muon_momentum, config.weight_decay, device_type
            )
            muon.param_groups[0]["lr_scale"] = config.muon_lr / config.learning_rate
            return MuonWithAdamW(adamw, muon)
    return _adamw(params, config, device_type)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable weights of the `nn.Linear` layers inside the model's blocks."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return []
    linears = [m for m in blocks.modules() if isinstance(m, nn.Linear)]
    return [m.weight for m in linears if m.weight.requires_grad]


def _adamw(params: list[nn.Parameter], config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """Decay every tensor with 2+ dimensions (matmul weights, embeddings); never biases or norm
    gains, whose decay only pulls them away from their useful values (nanoGPT, GPT-3).

    The fused kernel updates all parameters in one pass instead of a dozen ops per tensor; it
    exists for CPU and CUDA in current PyTorch and gives the same result as the loop form.
    """
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    can_fuse = "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=can_fuse and device_type in ("cpu", "cuda"),
    )


def set_learning_rate(optimizer: Optimizer, lr: float) -> None:
    """Every group at `lr`, times its `lr_scale` where it has one (Muon's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
