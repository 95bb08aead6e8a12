import asyncio
import time

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.serve.worker import Finished, GenerationWorker, ServerBusy
from tinygpt.tokenizers.char import CharTokenizer


def make_worker(max_waiting: int, max_batch: int = 8) -> GenerationWorker:
    tokenizer = CharTokenizer.train("abc")
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16
    )
    torch.manual_seed(0)
    return GenerationWorker(GPT(config), tokenizer, max_waiting, max_batch)


def test_a_full_queue_refuses_instead_of_waiting():
    worker = make_worker(max_waiting=1)

    async def submit_twice() -> None:
        worker.submit([0], GenerationSettings(max_new_tokens=2))
        with pytest.raises(ServerBusy, match="1 requests are already waiting"):
            worker.submit([0], GenerationSettings(max_new_tokens=2))

    asyncio.run(submit_twice())


def test_a_job_cancelled_while_waiting_is_skipped():
    worker = make_worker(max_waiting=2)

    async def run() -> list[object]:
        gone = worker.submit([0], GenerationSettings(max_new_tokens=2))
        gone.cancelled.set()
        worker.start()
        kept = worker.submit([1], GenerationSettings(max_new_tokens=3, seed=0))
        events = [event async for event in kept.stream()]
        worker.stop()
        assert gone.events.empty()
        return events

    events = asyncio.run(run())
    assert events[-1] == Finished("length", prompt_tokens=1, completion_tokens=3)
    assert "".join(e for e in events if isinstance(e, str)) != ""


def worker_text(events: list[object]) -> tuple[str, object]:
    return "".join(e for e in events if isinstance(e, str)), events[-1]


def alone(worker: GenerationWorker, prompt: list[int], settings: GenerationSettings):
    stream = stream_text(worker.model, worker.tokenizer, prompt, settings)
    text = stream.text()
    return text, Finished(stream.finish_reason, len(prompt), stream.completion_tokens)


def serve_all(
    worker: GenerationWorker, requests: list[tuple[list[int], GenerationSettings]]
) -> list[list[object]]:
    """Queue every request, then start the worker; each request's events, in order."""

    async def run() -> list[list[object]]:
        jobs = [worker.submit(prompt, settings) for prompt, settings in requests]
        worker.start()
        results = [[event async for event in job.stream()] for job in jobs]
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
        early = worker.submit(first_prompt, first)
        stream = early.stream()
        events = [await anext(stream)]  # the first is running: the second joins mid-way
        joined = worker.submit(late_prompt, late)
        events += [event async for event in stream]
        late_events = [event async for event in joined.stream()]
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
