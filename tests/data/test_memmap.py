from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.data.memmap import BatchSampler, fixed_eval_batches, open_tokens
from tinygpt.errors import DataError


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.bin"
    np.arange(1000, dtype="<u2").tofile(path)
    return path


@settings(max_examples=50, deadline=None)
@given(
    n_tokens=st.integers(2, 300),
    block_size=st.integers(1, 64),
    batch_size=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_batches_are_in_bounds_and_y_is_x_shifted(
    n_tokens: int, block_size: int, batch_size: int, seed: int
):
    tokens = np.arange(n_tokens, dtype=np.uint16)  # each token is its own position
    if n_tokens <= block_size:
        with pytest.raises(DataError):
            BatchSampler(tokens, block_size, batch_size, seed)
        return
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    for _ in range(3):
        x, y = sampler.next_batch()
        assert x.shape == y.shape == (batch_size, block_size)
        assert x.dtype == y.dtype == torch.int64
        assert int(x.min()) >= 0
        assert int(y.max()) <= n_tokens - 1
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(y[:, -1], x[:, -1] + 1)
        assert torch.equal(x - x[:, :1], torch.arange(block_size).expand(batch_size, -1))


def test_memmapped_tokens_give_the_same_batches_as_an_array(token_file: Path):
    tokens = open_tokens(token_file, "uint16")
    assert not tokens.flags.writeable
    mapped = BatchSampler(tokens, 16, 4, seed=7).next_batch()
    in_memory = BatchSampler(np.array(tokens), 16, 4, seed=7).next_batch()
    assert all(torch.equal(a, b) for a, b in zip(mapped, in_memory, strict=True))


def test_same_seed_gives_same_batches_and_leaves_the_global_rng_alone(token_file: Path):
    tokens = open_tokens(token_file, "uint16")
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [BatchSampler(tokens, 8, 4, seed=1).next_batch() for _ in range(2)]
    second = [BatchSampler(tokens, 8, 4, seed=1).next_batch() for _ in range(2)]
    other = BatchSampler(tokens, 8, 4, seed=2).next_batch()
    assert torch.equal(torch.get_rng_state(), before)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][0], other[0])


def test_restoring_the_state_reproduces_the_continuation(token_file: Path):
    tokens = open_tokens(token_file, "uint16")
    sampler = BatchSampler(tokens, 8, 4, seed=3)
    sampler.next_batch()
    state = sampler.get_state()
    expected = [sampler.next_batch() for _ in range(3)]
    resumed = BatchSampler(tokens, 8, 4, seed=999)
    resumed.set_state(state)
    for (x1, y1), (x2, y2) in zip(expected, (resumed.next_batch() for _ in range(3)), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_fixed_eval_batches_repeat_for_the_same_seed(token_file: Path):
    tokens = open_tokens(token_file, "uint16")
    first = list(fixed_eval_batches(tokens, 8, 4, n_batches=3, seed=5))
    second = list(fixed_eval_batches(tokens, 8, 4, n_batches=3, seed=5))
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_a_split_no_longer_than_block_size_raises():
    message = "the split has 8 tokens but block_size is 8; use a smaller --block_size or more text"
    with pytest.raises(DataError, match=message):
        BatchSampler(np.arange(8, dtype=np.uint16), 8, 2, seed=0)
    with pytest.raises(DataError, match=message):
        fixed_eval_batches(np.arange(8, dtype=np.uint16), 8, 2, n_batches=1, seed=0)


def test_open_tokens_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        open_tokens(tmp_path / "missing.bin", "uint16")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="could not open"):
        open_tokens(empty, "uint16")
    with pytest.raises(DataError, match="not one of"):
        open_tokens(empty, "int8")
