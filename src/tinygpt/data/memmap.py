"""Random (x, y) batches from token files mapped into memory, as in nanoGPT's `get_batch`.

The sampler owns its RNG so that a checkpoint can save and restore exactly where the data stream
was, independently of dropout or any other use of torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tinygpt.data.prepare.meta import TOKEN_DTYPES
from tinygpt.errors import DataError
from tinygpt.model.loss import IGNORE_INDEX


def open_tokens(path: Path, dtype: str) -> np.memmap:
    """Map a `train.bin`/`val.bin` read-only; pages load on demand, so corpus size is no limit."""
    if dtype not in TOKEN_DTYPES:
        raise DataError(f"token dtype {dtype!r} is not one of {', '.join(TOKEN_DTYPES)}")
    try:
        return np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    except FileNotFoundError:
        raise DataError(f"token file {path} does not exist; prepare the data again") from None
    except (OSError, ValueError) as err:  # ValueError: numpy cannot map an empty file
        raise DataError(
            f"could not open token file {path} ({err}); prepare the data again"
        ) from None


def open_loss_mask(path: Path) -> np.memmap:
    """A split's loss mask: one byte a token, 1 where the token is a target to learn."""
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as err:
        raise DataError(
            f"could not open loss mask {path} ({err}); prepare the data again"
        ) from None


class BatchSampler:
    """Draws `batch_size` windows of `block_size + 1` tokens at uniformly random offsets.

    With several ranks, `batch_size` is the global batch: every rank draws the same
    `batch_size` offsets from the same generator and reads only its own consecutive
    `batch_size / world_size` of them. So no two ranks see the same rows, 2 ranks of b rows
    read exactly the rows 1 rank of 2b reads, and the generator state (what a checkpoint
    stores) is the same whatever the number of ranks, which lets a resume change it.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        loss_mask: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(tokens) <= block_size:
            raise DataError(
                f"the split has {len(tokens)} tokens but block_size is {block_size}; "
                "use a smaller --block_size or more text"
            )
        if batch_size % world_size:
            raise DataError(
                f"batch_size={batch_size} does not divide across {world_size} ranks; "
                f"use a multiple of {world_size}"
            )
        self.tokens = tokens
        self.loss_mask = loss_mask  # 1 where the token is a target worth learning (dialog bots)
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._window = np.arange(block_size + 1)
        rows = batch_size // world_size
        self._rows = slice(rank * rows, (rank + 1) * rows)  # this rank's share of each draw

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """(x, y), both int64 of shape (batch_size / world_size, block_size), with
        y[:, t] == x[:, t + 1]."""
        # the highest offset is len - block_size - 1, so the last target is the last token
        high = len(self.tokens) - self.block_size
        offsets = torch.randint(high, (self.batch_size,), generator=self.generator).numpy()
        offsets = offsets[self._rows]
        positions = offsets[:, None] + self._window  # (B, T + 1)
        windows = torch.from_numpy(np.asarray(self.tokens[positions]).astype(np.int64))
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        if self.loss_mask is not None:
            learn = torch.from_numpy(np.asarray(self.loss_mask[positions[:, 1:]]).astype(bool))
            y = y.masked_fill(~learn, IGNORE_INDEX)  # targets outside Bot turns do not count
        return x, y

    def get_state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)


def fixed_eval_batches(
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    n_batches: int,
    seed: int,
    loss_mask: np.ndarray | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The same `n_batches` batches for the same seed: evaluations compare, and training's RNG
    is never advanced by evaluating."""
    sampler = BatchSampler(tokens, block_size, batch_size, seed, loss_mask)  # raises now
    return (sampler.next_batch() for _ in range(n_batches))
