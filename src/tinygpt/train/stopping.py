"""Ctrl-C and SIGTERM while training: a request to stop at the next step boundary, so that the
checkpoint saved on the way out never captures a half-applied optimizer step."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class StopFlag:
    requested: bool = False


@contextlib.contextmanager
def stop_requests() -> Iterator[StopFlag]:
    """Turn the first Ctrl-C (or SIGTERM) into a request to stop at the next step boundary;
    a second Ctrl-C interrupts at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        log.info("stopping after this step; Ctrl-C again to abort without saving")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does, until training's own
    handler (`stop_requests`) takes over: a `kill` while the data is prepared or the model is
    built unwinds (locks released, half-written files removed, exit 130) instead of ending the
    process mid-write. For the command line, whose process is the run's."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
