"""Sampling, beam search and the text engine: filters hold, seeds repeat, stops stop."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.config import ModelConfig
from tinygpt.errors import DataError
from tinygpt.generate.decode import beam_search, sample_tokens
from tinygpt.generate.engine import (
    BatchedGeneration,
    Generation,
    GenerationSettings,
    generate_batch,
    stream_text,
)
from tinygpt.generate.sampling import apply_repetition_penalty, filter_logits, sample_next_token
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.char import CharTokenizer


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_embd=32, dropout=0)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,!?\n")


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


def greedy_ids(model, prompt, steps):
    return [int(t) for t in sample_tokens(model, [prompt], steps, temperature=0.0)]


def test_greedy_equals_beam_search_of_width_one(model):
    prompt = [3, 1, 4, 1, 5]
    assert beam_search(model, prompt, num_beams=1, max_new_tokens=12) == greedy_ids(
        model, prompt, 12
    )


def sequence_log_prob(model, prompt, new_ids):
    ids = torch.tensor([prompt + new_ids])
    with torch.no_grad():
        log_probs = model(ids).log_softmax(-1)[0, len(prompt) - 1 : -1]
    return log_probs.gather(-1, torch.tensor(new_ids).view(-1, 1)).sum().item()


def test_beam_search_finds_a_continuation_at_least_as_likely_as_greedy(model):
    prompt = [7, 7, 2]
    greedy = greedy_ids(model, prompt, 8)
    beam = beam_search(model, prompt, num_beams=4, max_new_tokens=8, length_penalty=0.0)
    assert len(beam) == 8
    assert sequence_log_prob(model, prompt, beam) >= sequence_log_prob(model, prompt, greedy) - 1e-5


def test_beam_search_stops_at_an_end_id_and_leaves_it_out(model):
    prompt = [1, 2, 3]
    first = greedy_ids(model, prompt, 1)[0]
    found = beam_search(model, prompt, 3, 10, end_ids=[first], min_new_tokens=2)
    assert first not in found  # never emitted: before min_new_tokens it cannot be drawn,
    assert len(found) >= 2  # and after that drawing it ends the search and is left out


def test_cached_and_recomputed_decoding_agree(model):
    prompt = [5, 9, 2, 8]
    cached = [int(t) for t in sample_tokens(model, [prompt], 40, temperature=0.0)]
    plain = [int(t) for t in sample_tokens(model, [prompt], 40, temperature=0.0, use_cache=False)]
    assert cached[:20] == plain[:20]  # identical until the context first slides (32 tokens)


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_the_engine_decodes_with_the_precision_it_is_given(model, tokenizer, precision):
    settings = GenerationSettings(8, temperature=0, precision=precision)
    assert len(stream_text(model, tokenizer, "hello", settings).text()) == 8
    assert model.lm_head._decoding_weight.dtype == getattr(torch, precision)  # the copy it read


def test_same_seed_same_text_and_a_different_seed_differs(model, tokenizer):
    def text(seed):
        return stream_text(model, tokenizer, "hello", GenerationSettings(40, seed=seed)).text()

    assert text(7) == text(7)
    assert text(7) != text(8)


def test_a_stop_string_ends_the_text_and_is_not_emitted(model, tokenizer):
    full = stream_text(
        model, tokenizer, "hello", GenerationSettings(60, temperature=0, stop_at_end_of_text=False)
    ).text()
    stop = full[10:12]
    stream = stream_text(
        model, tokenizer, "hello", GenerationSettings(60, temperature=0, stop=(stop,))
    )
    pieces = list(stream)
    assert "".join(pieces) == full[: full.index(stop)]
    assert stream.finish_reason == "stop"
    long = stream_text(model, tokenizer, "hello", GenerationSettings(5, temperature=0))
    assert long.text() == full[:5] and long.finish_reason == "length"
    assert long.completion_tokens == 5 and long.prompt_tokens == 5


def test_batched_greedy_completions_equal_one_at_a_time(model, tokenizer):
    prompts = ["hello there", "a", "the quick brown"]
    greedy = GenerationSettings(20, temperature=0)
    batched = generate_batch(model, tokenizer, prompts, greedy)
    for prompt, completion in zip(prompts, batched, strict=True):
        alone = stream_text(model, tokenizer, prompt, greedy)
        assert completion.text == alone.text()
        assert completion.completion_tokens == alone.completion_tokens == 20


def test_bad_settings_are_one_line_errors():
    with pytest.raises(DataError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(DataError, match="min_new_tokens"):
        GenerationSettings(max_new_tokens=2, min_new_tokens=3)
    with pytest.raises(
        DataError, match="precision='bfloat16' is not one of auto, float16, float32"
    ):
        GenerationSettings(precision="bfloat16")
    assert math.isfinite(GenerationSettings().temperature)


# requests a server may batch together, each with its own settings; prompt + reply stay within
# the test model's 32-token context (past it, a batch slides all rows at once, not as alone)
MIXED = {
    "greedy": GenerationSettings(12, temperature=0, stop_at_end_of_text=False),
    "sampled": GenerationSettings(10, temperature=1.0, top_k=5, seed=11),
    "penalised": GenerationSettings(9, temperature=0, repetition_penalty=1.5, min_new_tokens=4),
    "stopped": GenerationSettings(20, temperature=0.7, top_p=0.9, seed=5, stop=("e",)),
}
PROMPTS = {"greedy": "hello", "sampled": "a cat", "penalised": "the the the", "stopped": "xyz"}


def alone(model, tokenizer, name):
    stream = stream_text(model, tokenizer, PROMPTS[name], MIXED[name])
    return stream.text(), stream.finish_reason, stream.completion_tokens


def test_rows_joining_and_leaving_a_batch_get_what_they_get_alone(model, tokenizer):
    batch = BatchedGeneration(model, tokenizer, "auto")
    rows: dict[str, Generation] = {}
    streamed = dict.fromkeys(MIXED, "")
    joins = {0: ["greedy"], 3: ["sampled", "penalised"], 5: ["stopped"]}  # at these steps
    step = widest = 0
    while step == 0 or batch.rows:
        for name in joins.get(step, []):
            rows[name] = Generation(tokenizer, tokenizer.encode(PROMPTS[name]), MIXED[name])
            batch.add(rows[name])
        widest = max(widest, len(batch.rows))
        for generation, piece in batch.step():
            streamed[next(n for n, g in rows.items() if g is generation)] += piece
        step += 1
    assert rows.keys() == MIXED.keys() and widest == 4  # all four shared steps
    for name, generation in rows.items():
        completion = generation.completion()
        assert streamed[name] == completion.text
        got = (completion.text, completion.finish_reason, completion.completion_tokens)
        assert got == alone(model, tokenizer, name), name


def test_a_dropped_row_leaves_the_others_untouched(model, tokenizer):
    batch = BatchedGeneration(model, tokenizer, "auto")
    kept = Generation(tokenizer, tokenizer.encode(PROMPTS["sampled"]), MIXED["sampled"])
    gone = Generation(tokenizer, tokenizer.encode(PROMPTS["greedy"]), MIXED["greedy"])
    batch.add(gone)
    batch.add(kept)
    batch.step()
    batch.drop(gone)
    while batch.rows:
        batch.step()
    assert len(gone.generated) == 1 and not gone.finished
    text, reason, tokens = alone(model, tokenizer, "sampled")
    assert (kept.text, kept.finish_reason, len(kept.generated)) == (text, reason, tokens)
