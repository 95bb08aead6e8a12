"""The KV cache gives the logits of full recomputation, for every attention variant, batched
prompts of different lengths (left padding) included; through the model, and through the
decoder that fills, slides and joins it."""

import dataclasses

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generate.decode import BatchDecoder
from tinygpt.model.gpt import GPT

BASE = ModelConfig(vocab_size=50, block_size=24, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
VARIANTS = {
    "mha": BASE,
    "gqa": dataclasses.replace(BASE, n_kv_head=2),
    "mqa": dataclasses.replace(BASE, n_kv_head=1),
    "rope": dataclasses.replace(BASE, position="rope", norm="rmsnorm", ffn="swiglu"),
    "hybrid": dataclasses.replace(
        BASE, attention="hybrid", n_kv_head=2, local_window=4, local_dim=8
    ),
    "hybrid-rope": dataclasses.replace(
        BASE, attention="hybrid", position="rope", local_window=3, local_dim=4
    ),
    "adaptive": dataclasses.replace(
        BASE, output="adaptive", tie_weights=False, adaptive_cutoffs="10,30"
    ),
    # issue 14's model ideas, together (tests/model/test_model_ideas.py checks each alone)
    "model-ideas": dataclasses.replace(
        BASE,
        position="rope",
        qk_norm=True,
        activation="relu2",
        zero_init_proj=True,
        logit_softcap=2.0,
        embed_mix=True,
        tie_weights=False,
    ),
}


@pytest.fixture(params=list(VARIANTS))
def model(request, perturbed) -> GPT:
    torch.manual_seed(0)
    return perturbed(GPT(VARIANTS[request.param])).eval()


def test_cached_logits_equal_full_recomputation_token_by_token(model):
    idx = torch.randint(0, 50, (1, 20))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(1)
        chunks = [model(idx[:, :7], cache=cache)]  # prefill, then one token at a time
        chunks += [model(idx[:, t : t + 1], cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_a_left_padded_cache_gives_each_row_the_logits_it_gets_alone(model):
    lengths = (9, 3, 6)
    longest = max(lengths)
    idx = torch.randint(0, 50, (len(lengths), longest + 4))
    cache = model.new_cache(len(lengths), first_slot=torch.tensor([longest - n for n in lengths]))
    with torch.no_grad():
        chunks = [model(idx[:, :longest], cache=cache)]  # prefill, then one token at a time
        chunks += [model(idx[:, t : t + 1], cache=cache) for t in range(longest, idx.size(1))]
        cached = torch.cat(chunks, dim=1)
        for row, length in enumerate(lengths):
            alone = model(idx[row : row + 1, longest - length :])
            torch.testing.assert_close(
                cached[row, longest - length :], alone[0], rtol=1e-5, atol=1e-5
            )
    assert cache.length == idx.size(1)


def test_a_step_is_counted_once_every_layer_has_stored_it(model):
    cache = model.new_cache(2, capacity=8)
    step = cache.begin(3)
    assert (step.start, step.end, cache.length) == (0, 3, 0)
    assert step.positions.tolist() == [[0, 1, 2], [0, 1, 2]]
    cache.end(step)
    assert cache.length == 3
    with pytest.raises(ValueError, match="starts at slot 0"):
        cache.end(step)  # counted already
    with pytest.raises(ValueError, match="KV cache full: 3 \\+ 6 tokens exceed its 8 slots"):
        cache.begin(6)


def test_left_padded_batch_gives_each_prompt_its_own_logits(model):
    prompts = [torch.randint(0, 50, (n,)).tolist() for n in (9, 3, 6)]
    continuation = torch.randint(0, 50, (3, 5))
    decoder = BatchDecoder(model, prompts)
    steps = []
    for t in range(5):
        steps.append(decoder.next_logits())
        decoder.push(continuation[:, t])
    steps.append(decoder.next_logits())
    cached = torch.stack(steps, dim=1)  # (3, 6, V)
    with torch.no_grad():
        for row, prompt in enumerate(prompts):
            alone = torch.tensor(prompt + continuation[row].tolist()).unsqueeze(0)
            expected = model(alone)[0, len(prompt) - 1 :]
            torch.testing.assert_close(cached[row], expected, rtol=1e-5, atol=1e-5)


def test_past_the_context_the_kept_tail_is_re_encoded(model):
    block = model.config.block_size
    decoder = BatchDecoder(model, [torch.randint(0, 50, (block - 2,)).tolist()])
    for _ in range(10):  # fills the context, then slides
        logits = decoder.next_logits()
        decoder.push(logits.argmax(dim=-1))
    logits = decoder.next_logits()
    kept = decoder.tokens  # the re-encoded tail and what followed it
    assert block - block // 4 <= kept.size(1) <= block
    with torch.no_grad():
        expected = model(kept)[:, -1]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_gqa_cache_is_smaller_by_the_head_ratio():
    mha = GPT(BASE).new_cache(2)
    gqa = GPT(VARIANTS["gqa"]).new_cache(2)
    mqa = GPT(VARIANTS["mqa"]).new_cache(2)
    assert mha.nbytes() == 2 * gqa.nbytes() == 4 * mqa.nbytes()


def test_float16_decoding_stays_close_to_float32(model):
    prompts = [[5, 9, 2, 8], [1, 2]]  # padded batch: prefill, then one token per step
    logits = {}
    for dtype in (torch.float32, torch.float16):
        decoder = BatchDecoder(model, prompts, precision=dtype)
        steps = []
        for token in (3, 4, 5):
            steps.append(decoder.next_logits())
            decoder.push(torch.tensor([token, token]))
        logits[dtype] = torch.stack(steps)
    exact, half = logits[torch.float32], logits[torch.float16]
    assert half.dtype == torch.float32 and not torch.equal(half, exact)
    torch.testing.assert_close(half, exact, rtol=0, atol=1e-2 * exact.abs().max().item())


def test_a_sequence_joining_a_stepped_batch_gets_the_logits_of_a_fresh_batch(model):
    prompts = [[5, 9, 2, 8, 1, 7], [3, 4]]
    decoder = BatchDecoder(model, prompts)
    for token in (6, 11):  # two steps, so the cache holds more than the joining prompt
        decoder.next_logits()
        decoder.push(torch.tensor([token, token]))
    joining = [10, 12, 14, 16]
    assert decoder.join(joining)
    contexts = [*([*p, 6, 11] for p in prompts), joining]
    expected = BatchDecoder(model, contexts).next_logits()
    torch.testing.assert_close(decoder.next_logits(), expected, rtol=1e-5, atol=1e-5)
    too_long = list(range(1, 20))  # longer than the 9 cached slots: the caller must rebuild
    decoder.push(torch.tensor([1, 2, 3]))
    assert not decoder.join(too_long)
