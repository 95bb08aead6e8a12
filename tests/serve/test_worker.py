import asyncio

import pytest

from tinygpt.config import ModelConfig
from tinygpt.generate.engine import GenerationSettings
from tinygpt.model.gpt import GPT
from tinygpt.serve.worker import Finished, GenerationWorker, ServerBusy
from tinygpt.tokenizers.char import CharTokenizer


def make_worker(max_waiting: int) -> GenerationWorker:
    tokenizer = CharTokenizer.train("abc")
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16
    )
    return GenerationWorker(GPT(config), tokenizer, max_waiting)


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
