"""How a job's crawl stops: the tracker's decisions (timeout, stall, cancel,
pause, a shutdown signal) made into engine calls.

A stop is graceful: no new requests, the in-flight ones finish. After the
grace period (``JOBSTATUS_CANCEL_GRACE``), or on a forced cancel or a second
signal, the in-flight requests are dropped so that the close goes on; feeds
are still closed and the final status still written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import call_later, create_looping_call
from scrapy.utils.defer import deferred_from_coro

from ._engine import (
    closing_with_requests_in_flight,
    drop_in_flight_requests,
    requests_in_flight,
    unsupported_reason,
)
from ._tracker import STALL_CANCEL

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.core.engine import ExecutionEngine
    from scrapy.crawler import Crawler
    from twisted.python.failure import Failure

    from ._jobdir import JobDir
    from ._store import SaveResult
    from ._tracker import JobTracker

logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_TIMEOUT = "jobstatus_timeout"
CLOSE_STALLED = "jobstatus_stalled"
CLOSE_CANCEL = "cancelled"
CLOSE_PAUSED = "paused"
CLOSE_SHUTDOWN = "shutdown"


class StopController:
    def __init__(
        self,
        crawler: Crawler,
        grace: float,
        save: Callable[[], None],
        write_now: Callable[[float], None],
    ):
        self.crawler = crawler
        self.grace = grace
        # Writes the job now: a stop decided is written at once.
        self._save = save
        # Writes the job and waits for the write, up to the seconds given:
        # for a process that exits at once.
        self._write_now = write_now
        self.engine_unsupported = unsupported_reason()
        if self.engine_unsupported:
            logger.error("%(reason)s", {"reason": self.engine_unsupported})
        self.tracker: JobTracker | None = None
        # Where a pause keeps the crawl's state; without one, a crawl stops
        # by cancelling.
        self.jobdir: JobDir | None = None
        # When the process got a shutdown signal before the job opened.
        self.signalled_at: float | None = None
        self._ticker: Any = None
        self._deadline_call: Any = None
        self._grace_call: Any = None

    def follow(self, tracker: JobTracker | None, jobdir: JobDir | None = None) -> None:
        """The job whose stops this controls; None: the crawl is untracked."""
        self.tracker, self.jobdir = tracker, jobdir

    def start(self, interval: float, tick: Callable[[], None]) -> None:
        """The job runs: its tick, and its deadline if it has a timeout."""
        tracker = self.tracker
        assert tracker is not None
        if self.signalled_at is not None:
            # A signal came while the crawl was starting: the job is
            # cancelled (paused, with a JOBDIR) as soon as it exists.
            self.stop_on_signal(self.signalled_at)
            return
        self._ticker = create_looping_call(tick)
        self._ticker.start(interval, now=False)
        timeout = tracker.state.timeout
        if timeout:
            # The timeout counts the job's whole running time, its runs
            # before a pause included.
            left = max(0.0, timeout - tracker.state.ran_for)
            self._deadline_call = call_later(left, self._timeout_reached)

    def stop_timers(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        for call in (self._deadline_call, self._grace_call):
            if call is not None:
                call.cancel()
        self._deadline_call = self._grace_call = None

    # -- decisions ---------------------------------------------------------------------

    def requested(self, result: SaveResult | None) -> None:
        """What the store asked of the crawl in a write's answer: a cancel, a
        pause, or a forced stop of a cancel under way."""
        tracker = self.tracker
        if result is None or tracker is None:
            return
        if result.cancel_requested_at is not None and not tracker.closing:
            self.cancel(result.cancel_requested_at, source="store", force=result.cancel_force)
        elif result.pause_requested_at is not None and not tracker.closing:
            self.pause(result.pause_requested_at, source="store")
        elif result.cancel_force and tracker.closing and not tracker.ended:
            self.force_stop()

    def _timeout_reached(self) -> None:
        self._deadline_call = None
        tracker = self.tracker
        if tracker is None or not tracker.timeout_reached():
            return
        logger.info(
            "Job timeout (%(timeout)s s) reached: no new requests; in-flight requests finish",
            {"timeout": tracker.state.timeout},
        )
        self._start_grace()
        self._save()
        self.close(CLOSE_TIMEOUT)

    def check_stall(self) -> None:
        tracker = self.tracker
        assert tracker is not None
        action = tracker.stall_check()
        if action is None:
            return
        state = tracker.state
        logger.warning(
            "Job stalled: no progress for %(timeout)g s with %(pending)d requests pending "
            "and %(in_flight)d in flight",
            {
                "timeout": tracker.stall_timeout,
                "pending": state.requests_pending,
                "in_flight": state.requests_in_flight,
            },
        )
        if action == STALL_CANCEL:
            # The cancel path: the tracker took the cancel, with the stall as
            # its reason; in-flight requests get the grace period.
            logger.info(
                "Cancelling the stalled job (JOBSTATUS_STALL_ACTION=cancel): no new requests; "
                "in-flight requests finish"
            )
            self._start_grace()
            self.close(CLOSE_STALLED)
        # The tick's write carries the warning and the event (and so the
        # job.stalled webhook).

    def cancel(self, requested_at: float, source: str, force: bool = False) -> None:
        tracker = self.tracker
        assert tracker is not None
        if not tracker.cancel(requested_at, source, force):
            return
        logger.info(
            "Cancel requested (%(source)s): no new requests; in-flight requests finish",
            {"source": source},
        )
        self._start_grace()
        self.close(CLOSE_SHUTDOWN if source == "signal" else CLOSE_CANCEL)
        if force:
            call_later(0, self.force_stop)
        self._save()

    def pause(self, requested_at: float, source: str) -> None:
        tracker = self.tracker
        assert tracker is not None
        if self.jobdir is None or not tracker.pause(requested_at, source):
            return
        logger.info(
            "Pause requested (%(source)s): no new requests; in-flight requests finish; "
            "the crawl's state is kept in %(jobdir)s",
            {"source": source, "jobdir": self.jobdir.path},
        )
        self._start_grace()
        self.close(CLOSE_PAUSED)
        self._save()

    def stop_on_signal(self, received_at: float) -> None:
        """Ctrl-C (or SIGTERM): with a JOBDIR the job pauses, else it is
        cancelled."""
        if self.jobdir is not None:
            self.pause(received_at, source="signal")
        else:
            self.cancel(received_at, source="signal")

    def shutdown_signal(self, name: str, count: int, received_at: float) -> None:
        """The process got its first or second shutdown signal (the
        process's one handler calls every crawl's)."""
        tracker = self.tracker
        if tracker is None:
            # The job is not open yet: it is cancelled as soon as it is.
            if self.signalled_at is None:
                self.signalled_at = received_at
                logger.info("Received %(signal)s while starting: cancelling", {"signal": name})
            return
        if tracker.ended:
            return
        if count == 1 and not tracker.closing:
            self.stop_on_signal(received_at)
            return
        logger.info("Received %(signal)s again: forcing the stop", {"signal": name})
        self.force_stop()
        self._save()

    def exit_now(self, name: str, received_at: float, wait: float) -> None:
        """The process exits at once (a third signal): the job's end is
        written now, within ``wait`` seconds, for the loop turns no more."""
        tracker = self.tracker
        if tracker is None:
            return
        self.stop_timers()
        if tracker.state.status.is_active:
            if not tracker.ended and not tracker.forced:
                tracker.forced_stop(requests_in_flight(self.crawler.engine))
            # A crawl that closed and is finishing ends as it closed, but a
            # pause: its JOBDIR is not marked resumable yet.
            if not tracker.ended or tracker.pausing:
                tracker.exited(received_at, source="signal")
            if not tracker.ended:
                tracker.closed(CLOSE_SHUTDOWN)
            tracker.finish()
        self._write_now(wait)

    # -- engine calls ------------------------------------------------------------------

    def close(self, reason: str) -> None:
        # Not awaited: the close waits for in-flight requests, which need the loop.
        call_later(0, self._close_now, reason)

    def _close_now(self, reason: str) -> None:
        engine = self.crawler.engine
        if engine is None:
            return
        dfd = deferred_from_coro(self._close_engine(engine, reason))
        dfd.addErrback(self._close_failed)

    async def _close_engine(self, engine: ExecutionEngine, reason: str) -> None:
        await engine.close_spider_async(reason=reason)
        if engine.running and not self.crawler.crawling:
            # Scrapy's Ctrl-C handler stopped the crawler while it was
            # starting, before its engine ran: nothing else stops the engine,
            # and the crawl would wait for it forever.
            await engine.stop_async()

    def _close_failed(self, failure: Failure) -> None:
        logger.error("Could not close the spider: %(error)s", {"error": failure.getErrorMessage()})

    def _start_grace(self) -> None:
        if self._grace_call is None:
            self._grace_call = call_later(self.grace, self.force_stop)

    def force_stop(self) -> None:
        """Drop the in-flight requests so that the close goes on; feeds are
        still closed and the final status still written."""
        self._grace_call = None
        tracker = self.tracker
        engine = self.crawler.engine
        # Nothing to drop once the in-flight requests are done and the close
        # has gone on by itself.
        if (
            tracker is None
            or tracker.forced
            or self.engine_unsupported
            or engine is None
            or not closing_with_requests_in_flight(engine)
        ):
            return
        dropped = drop_in_flight_requests(engine, requeue=tracker.pausing)
        tracker.forced_stop(dropped)
        logger.warning(
            "Forced stop: %(count)d in-flight requests dropped; their results may be lost",
            {"count": dropped},
        )
