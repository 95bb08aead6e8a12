"""Sampling: filters hold, draws stay inside them, penalties lower what they should."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.generate.sampling import (
    apply_presence_and_frequency_penalties,
    apply_repetition_penalty,
    filter_logits,
    sample_next_token,
)


@settings(max_examples=40, deadline=None)
@given(
    # distinct values: which of several tied logits is "the k-th" is arbitrary
    logits=st.lists(st.floats(-5, 5, width=32), min_size=8, max_size=8, unique=True),
    top_k=st.integers(0, 8),
    top_p=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_samples_never_leave_the_top_k_and_top_p_set(logits, top_k, top_p, seed):
    scores = torch.tensor([logits])
    allowed = filter_logits(scores, top_k, top_p).isfinite()[0]
    assert allowed[scores[0].argmax()]  # the most likely token always survives
    if top_k:  # nothing below the k-th largest logit
        kth_largest = scores[0].sort(descending=True).values[top_k - 1]
        assert not allowed[scores[0] < kth_largest].any()
    probabilities = scores.softmax(-1)[0]
    if not top_k:  # the nucleus: the kept tokens reach top_p, the most likely ones first
        assert probabilities[allowed].sum() >= top_p - 1e-6
        if not allowed.all():
            assert probabilities[allowed].min() >= probabilities[~allowed].max() - 1e-7
    generator = torch.Generator().manual_seed(seed)
    draws = sample_next_token(scores.expand(64, -1), 1.0, top_k, top_p, generator).view(-1)
    assert allowed[draws].all()


def test_repetition_penalty_lowers_only_tokens_already_seen():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    seen = torch.tensor([[0, 1, -1, 0]])  # -1: padding, not a token
    out = apply_repetition_penalty(logits, seen, 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 3.0, 0.5]]))


def test_openai_penalties_subtract_presence_once_and_frequency_per_count():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    counts = torch.tensor([[0, 1, 3, 0]])
    out = apply_presence_and_frequency_penalties(logits, counts, presence=0.5, frequency=0.25)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.25, 1.75, 4.0]]))
