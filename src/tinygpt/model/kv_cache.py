"""The key/value cache: each attention layer's keys and values of past positions, kept so a new
token costs one position's work instead of a pass over the whole context.

Tensors are allocated once, for `capacity` positions ("slots"). A batch of prompts of different
lengths is left-padded to a common length: sequence b's tokens start at slot `first_slot[b]`,
its positions count from there (slot - first_slot), and slots before it are masked out of every
attention. With grouped-query attention the cache holds n_kv_head heads, not n_head: that is
GQA's memory saving. The hybrid attention also keeps its local key features (`local_dim` per
key/value head), of which it reads the last `local_window` slots.

A forward pass over new tokens opens a `CacheStep` (`KVCache.begin`): what every layer needs to
know about those tokens, handed to each layer as an argument beside the layer's own
`LayerCache`; `KVCache.end` then counts the slots as filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tinygpt.config import ModelConfig


@dataclass(frozen=True)
class CacheStep:
    """The new tokens of one forward pass, as every layer sees them."""

    start: int  # slot of the first new token: where the layers write its keys and values
    count: int  # new tokens per sequence
    positions: Tensor  # (B, count) position of each new token within its own sequence
    mask: Tensor | None  # (B, 1, count, start + count) True where a key may be seen; None: all
    first_slot: Tensor  # (B,) slot of each sequence's first token (left padding before it)

    @property
    def end(self) -> int:
        """One past the slot of the last new token: how many slots hold keys after the pass."""
        return self.start + self.count


class LayerCache:
    """One attention layer's slice of the cache."""

    def __init__(self, keys: Tensor, values: Tensor, local_keys: Tensor | None) -> None:
        self.keys = keys  # (B, K, capacity, D)
        self.values = values  # (B, K, capacity, D)
        self.local_keys = local_keys  # (B, K, capacity, A), hybrid attention only

    def append(self, k: Tensor, v: Tensor, step: CacheStep) -> tuple[Tensor, Tensor]:
        """Store the new keys and values (B, K, count, D) at the step's slots; return all of
        them so far, (B, K, step.end, D) each."""
        self.keys[:, :, step.start : step.end] = k
        self.values[:, :, step.start : step.end] = v
        return self.keys[:, :, : step.end], self.values[:, :, : step.end]

    def append_local(self, key_features: Tensor, step: CacheStep) -> Tensor:
        """Store the hybrid's new local key features (B, K, count, A); return all so far."""
        if self.local_keys is None:
            raise ValueError("this cache was made for a model without hybrid attention")
        self.local_keys[:, :, step.start : step.end] = key_features
        return self.local_keys[:, :, : step.end]


class KVCache:
    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype,
        first_slot: Tensor | None = None,
    ) -> None:
        K, D = config.kv_heads, config.head_dim
        self.capacity = capacity
        self.length = 0  # slots filled
        if first_slot is None:
            first_slot = torch.zeros(batch, dtype=torch.long)
        self.first_slot = first_slot.to(device)  # (B,) slot of each sequence's first token
        hybrid = config.attention == "hybrid"
        self.layers = [
            LayerCache(
                torch.zeros(batch, K, capacity, D, device=device, dtype=dtype),
                torch.zeros(batch, K, capacity, D, device=device, dtype=dtype),
                torch.zeros(batch, K, capacity, config.local_dim, device=device, dtype=dtype)
                if hybrid
                else None,
            )
            for _ in range(config.n_layer)
        ]

    @property
    def batch(self) -> int:
        return self.first_slot.size(0)

    def nbytes(self) -> int:
        tensors = [t for layer in self.layers for t in (layer.keys, layer.values, layer.local_keys)]
        return sum(t.nbytes for t in tensors if t is not None)

    def begin(self, count: int) -> CacheStep:
        """The step of a forward pass over `count` new tokens per sequence."""
        if self.length + count > self.capacity:
            raise ValueError(
                f"KV cache full: {self.length} + {count} tokens exceed its {self.capacity} slots"
            )
        device = self.first_slot.device
        slots = torch.arange(self.length, self.length + count, device=device)  # (count,)
        positions = (slots.view(1, -1) - self.first_slot.view(-1, 1)).clamp(min=0)  # (B, count)
        return CacheStep(self.length, count, positions, self._mask(slots), self.first_slot)

    def end(self, step: CacheStep) -> None:
        """Count the step's slots as filled, once every layer has stored its keys."""
        if step.start != self.length:
            raise ValueError(f"the step starts at slot {step.start}, the cache at {self.length}")
        self.length = step.end

    def _mask(self, query_slots: Tensor) -> Tensor | None:
        """(B, 1, count, length + count): a query sees keys of its own sequence up to itself."""
        if query_slots.numel() == 1 and not bool(self.first_slot.any()):
            return None  # one new token and no padding: every cached key is visible
        key_slots = torch.arange(int(query_slots[-1]) + 1, device=query_slots.device)
        causal = key_slots.view(1, -1) <= query_slots.view(-1, 1)  # (count, keys)
        own = key_slots.view(1, -1) >= self.first_slot.view(-1, 1)  # (B, keys)
        # a padding slot sees itself only: a row with nothing visible would make NaNs, which
        # then leak into real rows through 0 * NaN in the weights-times-values product
        itself = key_slots.view(1, -1) == query_slots.view(-1, 1)  # (count, keys)
        return ((causal.unsqueeze(0) & own.unsqueeze(1)) | itself.unsqueeze(0)).unsqueeze(1)

    def add_row(self, other: KVCache, start: int) -> None:
        """Append the one sequence of `other` as a new row: its slots [0, other.length) land at
        [start, start + other.length), so it ends where this cache ends; the slots before are
        padding (its first_slot is `start`)."""
        if other.batch != 1 or start + other.length != self.length:
            raise ValueError("add_row takes one sequence that ends where this cache ends")
        end = start + other.length
        for layer, new in zip(self.layers, other.layers, strict=True):
            for name in ("keys", "values", "local_keys"):
                mine: Tensor | None = getattr(layer, name)
                if mine is None:
                    continue
                row = torch.zeros_like(mine[:1])
                row[:, :, start:end] = getattr(new, name)[:, :, : other.length]
                setattr(layer, name, torch.cat((mine, row)))
        slot = torch.tensor([start], device=self.first_slot.device)
        self.first_slot = torch.cat((self.first_slot, slot))

    def reorder(self, indices: Tensor) -> None:
        """Keep sequences `indices` (B_new,) in that order: beam search's survivors."""
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, indices)
            layer.values = layer.values.index_select(0, indices)
            if layer.local_keys is not None:
                layer.local_keys = layer.local_keys.index_select(0, indices)
        self.first_slot = self.first_slot.index_select(0, indices)
