"""One thread that runs every generation, fed by a bounded queue.

The model is not thread-safe, so one thread owns it. It decodes the requests in hand as one
batch (`BatchedGeneration`, up to `max_batch` rows): each step advances every row by a token,
and requests that arrive meanwhile join at the next step, so a new client starts getting text
without waiting for the others to finish. A decoding step reads every weight whatever the
batch size, which is why a batch of 8 costs far less than 8 single steps. Beam search cannot
share a batch and runs alone, between steps.

A request may ask for several continuations (OpenAI's `n`, a list of prompts): each is a
`Choice`, decoded as a row of its own. The worker hands text pieces (with the drawn token's
log-probability, when asked) to the request's event loop as they come, tagged with the choice's
index; a request that goes away (a client that disconnects mid-stream) sets its `cancelled` flag
and the worker drops its rows before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tinygpt.generate.decode import prompt_logprobs
from tinygpt.generate.engine import BatchedGeneration, GenerationSettings, stream_text
from tinygpt.generate.generation import FinishReason, Generation
from tinygpt.generate.sampling import TokenLogprob
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)

MAX_BATCH = 8  # rows decoded together; more requests wait in the queue


class ServerBusy(Exception):
    """Too many requests are already waiting; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class Choice:
    """One continuation a request asks for."""

    prompt_ids: Sequence[int]
    settings: GenerationSettings
    # echo with logprobs: score the prompt's tokens first, with this many likeliest alternatives
    score_prompt: int | None = None
    # choice j of a prompt draws from seed + j (`Generation`'s seed_offset), so it equals that
    # prompt sent alone with seed + j
    seed_offset: int = 0


@dataclass(frozen=True)
class Delta:
    """What one step (or a beam search, all at once) added to a choice: text, often "", and the
    drawn token's log-probability when the choice's settings ask for it."""

    text: str
    token: TokenLogprob | None = None


@dataclass(frozen=True)
class PromptScores:
    """The log-probabilities of the prompt's tokens after the first (`Choice.score_prompt`)."""

    tokens: list[TokenLogprob]


@dataclass(frozen=True)
class Finished:
    """The last event of a choice: why it stopped and what it used."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


Event = Delta | PromptScores | Finished | BaseException


@dataclass
class Ticket:
    """A request's view of its choices: their events, tagged with the choice's index, arrive in
    `events`; `cancelled` tells the worker to stop them all."""

    choices: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[int, Event]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, index: int, event: Event) -> None:
        """Called from the worker thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, (index, event))

    async def stream(self) -> AsyncIterator[tuple[int, Delta | PromptScores | Finished]]:
        """(choice index, event) until every choice has Finished; an error is raised here.
        Leaving early (the client is gone, the task is cancelled) tells the worker to stop."""
        running = self.choices
        try:
            while running:
                index, event = await self.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield index, event
                running -= isinstance(event, Finished)
        finally:
            self.cancelled.set()


@dataclass
class Job:
    """A choice in the worker's hands."""

    choice: Choice
    ticket: Ticket
    index: int

    @property
    def cancelled(self) -> bool:
        return self.ticket.cancelled.is_set()

    def emit(self, event: Event) -> None:
        self.ticket.emit(self.index, event)


class GenerationWorker:
    def __init__(
        self, model: GPT, tokenizer: Tokenizer, max_waiting: int = 64, max_batch: int = MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.peak_batch = 0  # the most rows decoded together so far
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._running: dict[Generation, Job] = {}
        self._held_back: list[Job] = []  # jobs for another precision than the batch's
        # the last prompt scored (request, ids, scores): an echoed prompt's n choices share it
        self._last_scored: tuple[Ticket, Sequence[int], list[TokenLogprob]] | None = None

    @property
    def waiting(self) -> int:
        return self._jobs.qsize() + len(self._held_back)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tinygpt-generate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the current step; jobs still waiting are dropped."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.ticket.cancelled.set()
        for job in [*self._running.values(), *self._held_back]:
            job.ticket.cancelled.set()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def max_waiting(self) -> int:
        return self._jobs.maxsize

    def submit(self, choices: Sequence[Choice]) -> Ticket:
        """Queue a request's choices, all or none; call from the event loop. Raises ServerBusy
        if the queue has no room for them all (only this thread adds to it, so room checked
        here is still there when they are put)."""
        if len(choices) > self.max_waiting - self._jobs.qsize():
            raise ServerBusy(
                f"{self._jobs.qsize()} of {self.max_waiting} places in the queue are taken; "
                f"no room for {len(choices)} more; retry in a moment"
            )
        ticket = Ticket(len(choices), asyncio.get_running_loop())
        for index, choice in enumerate(choices):
            self._jobs.put_nowait(Job(choice, ticket, index))
        return ticket

    def _run(self) -> None:
        batch: BatchedGeneration | None = None
        while True:
            arrivals = self._arrivals(wait=not self._running)
            if arrivals is None:
                return
            for job in arrivals:
                batch = self._admit(job, batch)
            self._drop_cancelled(batch)
            if batch is not None and batch.rows:
                self._step(batch)

    def _arrivals(self, wait: bool) -> list[Job] | None:
        """Jobs to admit now: none to many, as room allows; None when the worker must stop.
        With nothing running, wait for the next job."""
        room = self.max_batch - len(self._running)
        if not self._running and self._held_back:  # the batch is empty: its precision is free
            resumed, self._held_back = self._held_back[:room], self._held_back[room:]
            return resumed
        arrivals: list[Job] = []
        while len(arrivals) < room:
            try:
                job = self._jobs.get(block=wait and not arrivals)
            except queue.Empty:
                break
            if job is None:
                return None
            arrivals.append(job)
        return arrivals

    def _admit(self, job: Job, batch: BatchedGeneration | None) -> BatchedGeneration | None:
        """Start `job`: as a row of the batch (a new batch if none runs), or alone (beam
        search), or later (another precision). Returns the batch."""
        if job.cancelled:
            return batch
        choice = job.choice
        if choice.settings.num_beams > 1:
            self._generate_alone(job)
            return batch
        try:
            generation = Generation(
                self.tokenizer, choice.prompt_ids, choice.settings, choice.seed_offset
            )
        except Exception as err:  # handed to the request: 400 for TinyGPTError, else 500
            job.emit(err)
            return batch
        if batch is None or not batch.rows:
            batch = BatchedGeneration(self.model, self.tokenizer, choice.settings.precision)
        if not batch.accepts(generation):
            self._held_back.append(job)
            return batch
        if choice.score_prompt is not None and not self._score_prompt(job):
            return batch
        batch.add(generation)
        if generation.finished:  # max_tokens 0
            job.emit(Finished("length", len(choice.prompt_ids), 0))
        else:
            self._running[generation] = job
            self.peak_batch = max(self.peak_batch, len(batch.rows))
        return batch

    def _score_prompt(self, job: Job) -> bool:
        """Send the prompt's log-probabilities; False if that failed (the request is told). The
        n choices of one echoed prompt share the request and its list of ids: scored once."""
        choice = job.choice
        last = self._last_scored
        if last is not None and last[0] is job.ticket and last[1] is choice.prompt_ids:
            job.emit(PromptScores(last[2]))
            return True
        try:
            scores = prompt_logprobs(
                self.model, choice.prompt_ids, choice.score_prompt or 0, self.tokenizer.vocab_size
            )
        except Exception as err:  # handed to the request: a 500
            log.debug("scoring the prompt failed", exc_info=True)
            job.emit(err)
            return False
        self._last_scored = (job.ticket, choice.prompt_ids, scores)
        job.emit(PromptScores(scores))
        return True

    def _drop_cancelled(self, batch: BatchedGeneration | None) -> None:
        for generation, job in list(self._running.items()):
            if job.cancelled:
                log.info("client gone; stopped after %d tokens", len(generation.generated))
                if batch is not None:
                    batch.drop(generation)
                del self._running[generation]

    def _step(self, batch: BatchedGeneration) -> None:
        try:
            events = batch.step()
        except Exception as err:  # every row of a failed step fails: 500
            log.debug("generation failed", exc_info=True)
            for generation, job in list(self._running.items()):
                job.emit(err)
                batch.drop(generation)
            self._running.clear()
            return
        for generation, piece in events:
            job = self._running[generation]
            asks_logprobs = generation.settings.logprobs is not None
            if piece or asks_logprobs:
                job.emit(Delta(piece, generation.token_logprobs[-1] if asks_logprobs else None))
            if generation.finished:
                assert generation.finish_reason is not None
                job.emit(
                    Finished(
                        generation.finish_reason,
                        len(generation.prompt_ids),
                        len(generation.generated),
                    )
                )
                del self._running[generation]

    def _generate_alone(self, job: Job) -> None:
        """Beam search, which cannot share a batch, runs to its end (or its client's leaving)."""
        try:
            choice = job.choice
            stream = stream_text(self.model, self.tokenizer, choice.prompt_ids, choice.settings)
            for piece in stream:
                if job.cancelled:
                    log.info("client gone; stopped after %d tokens", stream.completion_tokens)
                    return
                job.emit(Delta(piece))
        except Exception as err:  # handed to the request: 400 for TinyGPTError, else 500
            log.debug("generation failed", exc_info=True)
            job.emit(err)
            return
        assert stream.finish_reason is not None  # set once the stream is exhausted
        job.emit(Finished(stream.finish_reason, stream.prompt_tokens, stream.completion_tokens))
