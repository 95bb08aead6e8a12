import asyncio
import time

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generate.decode import prompt_logprobs
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.serve.worker import (
    Choice,
    Delta,
    Finished,
    GenerationWorker,
    PromptScores,
    ServerBusy,
)
from tinygpt.tokenizers.char import CharTokenizer


def make_worker(max_waiting: int, max_batch: int = 8) -> GenerationWorker:
    tokenizer = CharTokenizer.train("abc")
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16
    )
    torch.manual_seed(0)
    return GenerationWorker(GPT(config), tokenizer, max_waiting, max_batch)


def one(prompt: list[int], settings: GenerationSettings) -> list[Choice]:
    return [Choice(prompt, settings)]


def test_a_full_queue_refuses_instead_of_waiting():
    worker = make_worker(max_waiting=3)

    async def submit_twice() -> None:
        worker.submit(one([0], GenerationSettings(max_new_tokens=2)))
        two = one([0], GenerationSettings(max_new_tokens=2)) * 2
        worker.submit(two)
        with pytest.raises(ServerBusy, match="3 of 3 places in the queue are taken"):
            worker.submit(one([0], GenerationSettings(max_new_tokens=2)))

    asyncio.run(submit_twice())


def test_a_request_whose_choices_do_not_all_fit_is_refused_whole():
    worker = make_worker(max_waiting=3)

    async def submit() -> None:
        worker.submit(one([0], GenerationSettings(max_new_tokens=2)) * 2)
        with pytest.raises(ServerBusy, match="no room for 2 more"):
            worker.submit(one([0], GenerationSettings(max_new_tokens=2)) * 2)
        assert worker.waiting == 2  # nothing of the refused request was queued

    asyncio.run(submit())


def test_a_job_cancelled_while_waiting_is_skipped():
    worker = make_worker(max_waiting=2)

    async def run() -> list[object]:
        gone = worker.submit(one([0], GenerationSettings(max_new_tokens=2)))
        gone.cancelled.set()
        worker.start()
        kept = worker.submit(one([1], GenerationSettings(max_new_tokens=3, seed=0)))
        events = [event async for _, event in kept.stream()]
        worker.stop()
        assert gone.events.empty()
        return events

    events = asyncio.run(run())
    assert events[-1] == Finished("length", prompt_tokens=1, completion_tokens=3)
    assert worker_text(events)[0] != ""


def worker_text(events: list[object]) -> tuple[str, object]:
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]


def alone(worker: GenerationWorker, prompt: list[int], settings: GenerationSettings):
    stream = stream_text(worker.model, worker.tokenizer, prompt, settings)
    text = stream.text()
    return text, Finished(stream.finish_reason, len(prompt), stream.completion_tokens)


def serve_all(
    worker: GenerationWorker, requests: list[tuple[list[int], GenerationSettings]]
) -> list[list[object]]:
    """Queue every request, then start the worker; each request's events, in order."""

    async def run() -> list[list[object]]:
        tickets = [worker.submit(one(prompt, settings)) for prompt, settings in requests]
        worker.start()
        results = [[event async for _, event in ticket.stream()] for ticket in tickets]
        worker.stop()
        return results

    return asyncio.run(run())


REQUESTS = [  # (prompt ids, settings): different lengths, settings and stops
    ([0, 1, 2], GenerationSettings(max_new_tokens=9, seed=1)),
    ([2], GenerationSettings(max_new_tokens=4, temperature=0)),
    ([1, 1, 0, 2, 1], GenerationSettings(max_new_tokens=12, top_k=2, seed=7)),
]


@pytest.mark.parametrize("max_batch", [8, 1])
def test_waiting_requests_share_a_batch_up_to_max_batch_each_as_if_alone(max_batch):
    worker = make_worker(max_waiting=8, max_batch=max_batch)
    results = serve_all(worker, REQUESTS)
    assert worker.peak_batch == min(max_batch, len(REQUESTS))
    for events, (prompt, settings) in zip(results, REQUESTS, strict=True):
        assert worker_text(events) == alone(worker, prompt, settings)


def test_a_request_joins_a_running_batch_and_gets_what_it_gets_alone(monkeypatch):
    worker = make_worker(max_waiting=8)
    (first_prompt, _), (late_prompt, late) = REQUESTS[2], REQUESTS[0]
    # 11 steps of 20 ms or more to join during; 5 + 11 tokens fill the 16-token context exactly
    # (past it a batch slides all rows at once, not as alone)
    first = GenerationSettings(max_new_tokens=11, top_k=2, seed=7)
    forward = worker.model.forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.02)
        return forward(*args, **kwargs)

    monkeypatch.setattr(worker.model, "forward", slow_forward)

    async def run() -> tuple[list[object], list[object]]:
        worker.start()
        early = worker.submit(one(first_prompt, first))
        stream = early.stream()
        events = [(await anext(stream))[1]]  # the first is running: the second joins mid-way
        joined = worker.submit(one(late_prompt, late))
        events += [event async for _, event in stream]
        late_events = [event async for _, event in joined.stream()]
        worker.stop()
        return events, late_events

    events, late_events = asyncio.run(run())
    assert worker.peak_batch == 2
    assert worker_text(events) == alone(worker, first_prompt, first)
    assert worker_text(late_events) == alone(worker, late_prompt, late)


def test_a_request_in_another_precision_waits_for_the_batch_to_empty():
    worker = make_worker(max_waiting=8)
    requests = [
        ([0, 1], GenerationSettings(max_new_tokens=5, seed=1, precision="float32")),
        ([2, 1], GenerationSettings(max_new_tokens=5, seed=2, precision="float16")),
        ([1, 0], GenerationSettings(max_new_tokens=5, seed=3, precision="float32")),
    ]
    results = serve_all(worker, requests)
    assert worker.peak_batch == 2  # the two float32 requests; the float16 one ran after them
    for events, (prompt, settings) in zip(results, requests, strict=True):
        assert worker_text(events) == alone(worker, prompt, settings)


def test_beam_search_runs_alone_between_steps_of_the_batch():
    worker = make_worker(max_waiting=8)
    requests = [
        ([0, 1], GenerationSettings(max_new_tokens=6, seed=1)),
        ([2, 1], GenerationSettings(max_new_tokens=6, num_beams=3)),
        ([1, 0], GenerationSettings(max_new_tokens=6, seed=3)),
    ]
    results = serve_all(worker, requests)
    assert worker.peak_batch == 2  # the beam search never joined the batch
    for events, (prompt, settings) in zip(results, requests, strict=True):
        assert worker_text(events) == alone(worker, prompt, settings)


def test_the_choices_of_one_request_share_a_batch_each_as_if_alone():
    worker = make_worker(max_waiting=8)
    choices = [Choice(prompt, settings) for prompt, settings in REQUESTS]

    async def run() -> list[list[object]]:
        ticket = worker.submit(choices)
        worker.start()
        events: list[list[object]] = [[] for _ in choices]
        async for index, event in ticket.stream():
            events[index].append(event)
        worker.stop()
        return events

    results = asyncio.run(run())
    assert worker.peak_batch == len(choices)
    for events, (prompt, settings) in zip(results, REQUESTS, strict=True):
        assert worker_text(events) == alone(worker, prompt, settings)


def test_a_scored_prompt_comes_first_then_a_token_with_each_step():
    worker = make_worker(max_waiting=8)
    prompt = [0, 1, 2, 1, 0]
    settings = GenerationSettings(max_new_tokens=3, temperature=0, logprobs=2)

    async def run() -> list[object]:
        ticket = worker.submit([Choice(prompt, settings, score_prompt=2)])
        worker.start()
        events = [event async for _, event in ticket.stream()]
        worker.stop()
        return events

    scores, *deltas, finished = asyncio.run(run())
    expected = prompt_logprobs(worker.model, prompt, 2, worker.tokenizer.vocab_size)
    assert scores == PromptScores(expected)
    assert finished == Finished("length", prompt_tokens=5, completion_tokens=3)
    assert len(deltas) == 3 and all(len(delta.token.top) == 2 for delta in deltas)
    text, _ = alone(worker, prompt, settings)
    assert "".join(delta.text for delta in deltas) == text
