"""One thread that runs every generation, fed by a bounded queue.

The model is not thread-safe and one CPU or GPU is busy with one sequence anyway, so requests
wait their turn instead of running side by side. The worker hands text pieces to the request's
event loop as they come; a request that goes away (a client that disconnects mid-stream) sets
its `cancelled` flag and the worker drops it at the next piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tinygpt.generate.engine import FinishReason, GenerationSettings, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)


class ServerBusy(Exception):
    """Too many requests are already waiting; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class Finished:
    """The last event of a job: why it stopped and what it used."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


Event = str | Finished | BaseException


@dataclass
class Job:
    prompt_ids: list[int]
    settings: GenerationSettings
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        """Called from the worker thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    async def stream(self) -> AsyncIterator[str | Finished]:
        """Text pieces, then one Finished; a generation error is raised here. Leaving early
        (the client is gone, the task is cancelled) tells the worker to stop this job."""
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self.cancelled.set()


class GenerationWorker:
    def __init__(self, model: GPT, tokenizer: Tokenizer, max_waiting: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._current: Job | None = None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tinygpt-generate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current piece and end the thread; jobs still waiting are dropped."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancelled.set()
        if (current := self._current) is not None:
            current.cancelled.set()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, prompt_ids: Sequence[int], settings: GenerationSettings) -> Job:
        """Queue a generation; call from the event loop. Raises ServerBusy if the queue is full."""
        job = Job(list(prompt_ids), settings, asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise ServerBusy(
                f"{self._jobs.maxsize} requests are already waiting; retry in a moment"
            ) from None
        return job

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            self._current = job
            try:
                self._generate(job)
            except Exception as err:  # handed to the request: 400 for TinyGPTError, else 500
                log.debug("generation failed", exc_info=True)
                job.emit(err)
            finally:
                self._current = None

    def _generate(self, job: Job) -> None:
        stream = stream_text(self.model, self.tokenizer, job.prompt_ids, job.settings)
        for piece in stream:
            if job.cancelled.is_set():
                log.info("client gone; stopped after %d tokens", stream.completion_tokens)
                return
            job.emit(piece)
        assert stream.finish_reason is not None  # set once the stream is exhausted
        job.emit(Finished(stream.finish_reason, stream.prompt_tokens, stream.completion_tokens))
