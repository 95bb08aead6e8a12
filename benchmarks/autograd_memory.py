"""How many bytes autograd keeps from forward to backward: the activation memory that gradient
checkpointing trades for recomputation. Measured, not estimated: every tensor autograd saves
passes through a hook, and each storage counts once (parameters excluded: they exist whatever
the batch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class SavedBytes:
    """Storages seen so far, by address; `total` is their size in bytes."""

    def __init__(self, model: nn.Module) -> None:
        self._parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: dict[int, int] = {}

    def add(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._parameters:
            self._seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self._seen.values())


@contextmanager
def saved_for_backward(model: nn.Module) -> Iterator[SavedBytes]:
    """Count what autograd saves for backward while the block runs a forward of `model`.
    `add` also takes tensors kept by other means (a checkpointed block's input)."""
    saved = SavedBytes(model)
    with torch.autograd.graph.saved_tensors_hooks(saved.add, lambda tensor: tensor):
        yield saved
