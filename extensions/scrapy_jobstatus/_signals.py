"""Ctrl-C and SIGTERM: one handler for the process, shared by its crawls.

A process may run several crawls (several ``crawl()`` calls of a
``CrawlerProcess`` or a runner), each its own job. A shutdown signal ends
every job of the process at once: cancelled, or paused where the crawl has a
JOBDIR. The second signal forces the stop (in-flight requests are dropped,
the jobs still written), a third exits at once, once each job's end is
written (cancelled, within a short bound).

The handler takes over whatever handled the signals (Scrapy's own, Twisted's,
asyncio's, Python's default) while crawls are registered, and gives it back
when the last one ends. Scrapy installs its handlers once its loop runs: they
are taken over then too, and a signal Scrapy took before counts as the first.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from scrapy.crawler import AsyncCrawlerProcess, CrawlerProcessBase
from scrapy.utils.asyncio import call_later

from ._loop import EventLoop

if TYPE_CHECKING:
    from types import FrameType

logger = logging.getLogger("scrapy_jobstatus.extension")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds the process's crawls get, together, to write their jobs' end
# before a third signal's exit.
EXIT_WAIT = 2.0
# Scrapy's handlers of a second signal: installed once it took a first one.
_SCRAPY_KILL_HANDLERS = tuple(
    handler
    for handler in (
        CrawlerProcessBase._signal_kill,
        getattr(AsyncCrawlerProcess, "_signal_kill_reactorless", None),  # Scrapy 2.15+
    )
    if handler is not None
)


class SignalledCrawl(Protocol):
    def shutdown_signal(self, name: str, count: int, received_at: float) -> None:
        """The process got its ``count``-th shutdown signal (1 or 2)."""

    def exit_now(self, name: str, received_at: float, wait: float) -> None:
        """The process exits at once: write the job's end within ``wait`` s."""


class ShutdownSignals:
    def __init__(self) -> None:
        # Weak: a crawl that is gone without saying so holds nothing up.
        self._crawls: weakref.WeakSet[SignalledCrawl] = weakref.WeakSet()
        self._previous: dict[int, Any] = {}
        self._loop: EventLoop | None = None
        self.received = 0
        # The first signal's name and time, once one came.
        self.first: tuple[str, float] | None = None

    def register(self, crawl: SignalledCrawl) -> None:
        """Called on the loop's thread as the crawl is made. A crawl that
        comes after the first signal hears of it at once: the process is
        shutting down."""
        self._crawls.add(crawl)
        self._loop = EventLoop()
        self.install()
        # Scrapy installs its handlers once its loop runs: taken over then.
        call_later(0, self.install)
        if self.first is not None:
            crawl.shutdown_signal(self.first[0], 1, self.first[1])

    def unregister(self, crawl: SignalledCrawl) -> None:
        self._crawls.discard(crawl)
        if not self._crawls:
            self._restore()

    def install(self) -> None:
        if not self._crawls:
            return
        try:
            for signum in SHUTDOWN_SIGNALS:
                current = signal.getsignal(signum)
                if current == self._handle or current in (signal.SIG_IGN, None):
                    continue
                if getattr(current, "__func__", None) in _SCRAPY_KILL_HANDLERS:
                    if self.first is None:
                        # Scrapy took a first signal before any job existed.
                        self._dispatch(signum, 1)
                    self.received = max(self.received, 1)
                self._previous[signum] = current
                signal.signal(signum, self._handle)
        except ValueError:
            # Not the main thread: whoever runs the crawl handles signals.
            return

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        try:
            for signum, handler in previous.items():
                if signal.getsignal(signum) == self._handle:
                    signal.signal(signum, handler)
        except ValueError:
            pass  # not the main thread: nothing was installed from it

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._crawls or self._loop is None:
            self._chain(signum, frame)
            return
        # Nothing else may run inside a signal handler: hand over to the loop.
        self.received += 1
        self._loop.call_soon_threadsafe(self._dispatch, signum, self.received)

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        """No crawl is left: the signal goes where it went before."""
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _dispatch(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        now = time.time()
        if self.first is None:
            self.first = (name, now)
        if count <= 2:
            for crawl in list(self._crawls):
                crawl.shutdown_signal(name, count, now)
            return
        logger.info("Received %(signal)s again: exiting at once", {"signal": name})
        # No job is left active: each crawl writes its job's end first.
        deadline = time.monotonic() + EXIT_WAIT
        for crawl in list(self._crawls):
            try:
                crawl.exit_now(name, now, max(0.0, deadline - time.monotonic()))
            except Exception as e:  # the exit goes on
                logger.error("Exiting at once: %(error)r", {"error": e})
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


# The process's one handler.
SHUTDOWN = ShutdownSignals()
