"""Decoding: greedy, cached and recomputed decoding agree, beam search finds likelier text, and
the prompt's log-probabilities are what the decoder would see."""

import pytest
import torch

from tinygpt.generate.decode import BatchDecoder, beam_search, prompt_logprobs, without_padding_ids
from tinygpt.model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def greedy_ids(model: GPT, prompt: list[int], steps: int, use_cache: bool = True) -> list[int]:
    """The most likely token at every step, `steps` times."""
    decoder = BatchDecoder(model, [prompt], use_cache)
    ids = []
    for _ in range(steps):
        token = decoder.next_logits().argmax(dim=-1)  # (1,)
        decoder.push(token)
        ids.append(int(token))
    return ids


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
    cached = greedy_ids(model, prompt, 40)
    plain = greedy_ids(model, prompt, 40, use_cache=False)
    assert cached[:20] == plain[:20]  # identical until the context first slides (32 tokens)


def test_prompt_logprobs_see_what_the_decoder_would_past_the_context(model):
    ids = [(7 * i) % 30 for i in range(56)]  # the 32-token context slides 3 times
    scored = prompt_logprobs(model, ids, top=2, vocab_size=32)
    assert [record.token_id for record in scored] == ids[1:]
    decoder = BatchDecoder(model, [ids[:1]])  # fed the prompt token by token
    for position in range(1, len(ids)):
        expected = without_padding_ids(decoder.next_logits().clone(), 32).log_softmax(-1)[0]
        record = scored[position - 1]
        assert record.logprob == pytest.approx(expected[ids[position]].item(), abs=1e-4)
        assert [i for i, _ in record.top] == expected.topk(2).indices.tolist()
        decoder.push(torch.tensor([ids[position]]))
