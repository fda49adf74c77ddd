"""The crawl's writes to the job store, off the event loop.

Every store call of a crawl runs in one thread of its own, in order, so that
the crawl never waits for the store: a lock held by another crawl, a slow or
full disk. A write that fails is retried with backoff while the crawl keeps
counting; what it carried goes with the next one.
"""

from __future__ import annotations

import copy
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ._jobdir import remove_pruned_jobdirs
from ._loop import EventLoop
from ._model import JobStatus
from ._retention import prune
from ._store import SaveResult, StoreError, display_location, open_store
from ._webhooks import CrawlDelivery

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._model import JobState
    from ._retention import Retention
    from ._settings import Lease
    from ._store import JobStore, StartResult
    from ._tracker import JobTracker
    from ._webhooks import WebhookSettings

logger = logging.getLogger("scrapy_jobstatus.extension")

MAX_BACKOFF = 30.0
# A crawl holding its job by a lease on a shared store retries sooner: it
# pauses while it cannot renew, and goes on as soon as it can.
LEASE_BACKOFF = 2.0


class StoreWriter:
    def __init__(
        self,
        location: str,
        interval: float,
        webhooks: WebhookSettings | None = None,
        lease: Lease | None = None,
        retention: Retention | None = None,
    ):
        self.location = location
        self.lease = lease
        shared = lease is not None and lease.shared
        # A write that cannot renew the lease before the crawl pauses fails
        # then, and is tried again on a fresh connection.
        self._deadline = lease.pause_after if lease is not None and shared else None
        self._max_backoff = LEASE_BACKOFF if shared else MAX_BACKOFF
        # Applied once, one small batch, after the final status is written.
        self.retention = retention
        # Delivers the job's webhooks once the job is recorded, and what is
        # left of them when the writer stops.
        self.webhooks = webhooks
        self._delivery: CrawlDelivery | None = None
        self.shown = display_location(location)
        self.interval = interval
        self.writes = 0
        self.failures = 0
        self._store: JobStore | None = None
        # One thread, so that the store's calls run in order. Made on the
        # loop's thread: the results go back to it.
        self._loop = EventLoop()
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: Deferred[Any] | None = None
        self._retry_at = 0.0
        # The job is recorded once start_job went through; until then (the
        # store was unusable at start) every write starts it first.
        self._job_started = False
        self._resume = False
        # Errors beyond JOBSTATUS_PENDING_ERRORS: said once.
        self._warned_not_recorded = False

    def start(self) -> None:
        # An idle thread of the executor ends with the interpreter, whatever
        # happens to the crawl.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobstatus-store")

    async def stop(self) -> None:
        pool = self._pool
        if pool is None:
            return  # not started, or stopped already
        try:
            await self._finish_delivery()
            if self.retention is not None and self._job_started:
                await maybe_deferred_to_future(self._call(self._prune_once))
            await maybe_deferred_to_future(self._call(self._close_store))
        finally:
            self._pool = None
            pool.shutdown(wait=False)

    def _start_delivery(self, job_id: str) -> None:
        if self.webhooks is not None and self.webhooks.urls and self._delivery is None:
            self._delivery = CrawlDelivery(self.location, job_id, self.webhooks)
            self._delivery.start()

    async def _finish_delivery(self) -> None:
        delivery, self._delivery = self._delivery, None
        if delivery is None:
            return
        # In the store's thread: it waits for the deliveries, bounded.
        left = await maybe_deferred_to_future(self._call(delivery.finish))
        if left < 0:
            logger.warning(
                "Could not count the webhook deliveries of job %(job)s left for scrapy jobnotify",
                {"job": delivery.job_id},
            )
        elif left:
            logger.warning(
                "%(left)d webhook deliveries of job %(job)s not made within %(wait)g s "
                "(JOBSTATUS_WEBHOOK_WAIT): left for scrapy jobnotify",
                {"left": left, "job": delivery.job_id, "wait": delivery.wait},
            )

    # -- calls ---------------------------------------------------------------------

    def _call(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """``function(*args)`` in the store's thread; the Deferred fires on
        the loop's thread."""
        assert self._pool is not None
        d: Deferred[Any] = Deferred()

        def done(future: Future[Any]) -> None:
            self._loop.call_soon_threadsafe(_fire, d, future)

        self._pool.submit(function, *args).add_done_callback(done)
        return d

    def _prune_once(self) -> None:
        """One batch of the store's retention: the crawls of a store prune
        it a little each, never for long."""
        assert self.retention is not None
        try:
            report = prune(
                self._open_store(), self.retention, batches=1, pruned=remove_pruned_jobdirs
            )
        except StoreError as e:
            logger.warning(
                "Could not prune the job store %(db)s: %(error)s", {"db": self.shown, "error": e}
            )
            self._close_store()
            return
        if report.jobs:
            logger.info(
                "Pruned %(jobs)d ended jobs from the job store (%(retention)s)",
                {"jobs": report.jobs, "retention": self.retention.describe()},
            )

    def _open_store(self) -> JobStore:
        if self._store is None:
            self._store = open_store(self.location, deadline=self._deadline)
        return self._store

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _in_thread(self, method: str, *args: Any) -> Any:
        store = self._open_store()
        try:
            return getattr(store, method)(*args)
        except StoreError:
            # A broken connection is opened anew at the next try.
            self._close_store()
            raise
        finally:
            if self._store is not None:
                self.writes = self._store.writes

    async def start_job(self, state: JobState, resume: bool = False) -> StartResult:
        """Raises StoreError when the store cannot be used: the crawl goes on
        and its writes start the job once the store can be used."""
        self._resume = resume
        try:
            result = await maybe_deferred_to_future(
                self._call(self._in_thread, "start_job", state, resume, self._lease_seconds)
            )
        except StoreError:
            self.failures = 1
            raise
        self._job_started = True
        if result.started:
            self._start_delivery(state.job_id)
        return result

    def _save_in_thread(
        self, state: JobState, errors: Any, events: Any, history: Any
    ) -> SaveResult:
        lease = self._lease_seconds
        if not self._job_started:
            started = self._in_thread("start_job", state, self._resume, lease)
            if not started.started:  # ended, or run, elsewhere meanwhile
                return SaveResult(False, False, started.job.cancel_requested_at, False)
            self._job_started = True
            self._loop.call_soon_threadsafe(self._start_delivery, state.job_id)
            events = history  # the record was just made: its whole history
        return self._in_thread("save", state, errors, events, history, lease)

    @property
    def _lease_seconds(self) -> float | None:
        return self.lease.seconds if self.lease is not None else None

    # -- saves ---------------------------------------------------------------------

    def save(self, tracker: JobTracker, now: float) -> Deferred[SaveResult | None] | None:
        """Write the job as it is now, unless a write is under way or the
        store is being retried later; fires with None when the write failed."""
        if tracker.dropped_errors and not self._warned_not_recorded:
            self._warned_not_recorded = True
            logger.warning(
                "Job %(job)s: more than %(limit)d errors (JOBSTATUS_PENDING_ERRORS) wait for "
                "the job store %(db)s; the next ones are counted but not recorded",
                {"job": tracker.state.job_id, "limit": tracker.pending_errors, "db": self.shown},
            )
        if self._in_flight is not None or now < self._retry_at:
            return None
        errors, events = tracker.take_unsaved()
        snapshot = copy.deepcopy(tracker.state)
        history = list(tracker.history)
        d = self._call(self._save_in_thread, snapshot, errors, events, history)

        def failed(failure: Any) -> None:
            # Whatever went wrong, the crawl goes on and the write is retried.
            failure.trap(Exception)
            tracker.put_back_unsaved(errors, events)
            self._failed(failure.value, now)

        def written(result: SaveResult) -> SaveResult:
            tracker.unsaved_written()
            return self._succeeded(result, snapshot.job_id)

        d.addCallbacks(written, failed)
        self._in_flight = d
        d.addBoth(self._done)
        return d

    def _succeeded(self, result: SaveResult, job_id: str) -> SaveResult:
        if self.failures:
            logger.info("The job store %(db)s is usable again", {"db": self.shown})
        self.failures = 0
        self._retry_at = 0.0
        if result.recreated:
            logger.warning(
                "Job %(job)s was missing from the job store %(db)s: written again from memory",
                {"job": job_id, "db": self.shown},
            )
        return result

    def _failed(self, error: BaseException, now: float) -> None:
        self.failures += 1
        backoff = min(self._max_backoff, self.interval * 2**self.failures)
        self._retry_at = now + backoff
        if self.failures == 1:
            if not isinstance(error, StoreError):
                error = StoreError(f"cannot write the job to {self.shown}: {error!r}")
            logger.error(
                "%(error)s; the crawl goes on and the job is written when the store is "
                "usable again (retried with backoff)",
                {"error": error},
            )

    def _done(self, result: Any) -> Any:
        self._in_flight = None
        return result

    async def settle(self) -> None:
        """Wait for the write under way, if any."""
        if self._in_flight is not None:
            d: Deferred[None] = Deferred()

            def settled(result: Any) -> Any:
                d.callback(None)
                return result

            self._in_flight.addBoth(settled)
            await maybe_deferred_to_future(d)

    def save_now(self, tracker: JobTracker, wait: float) -> bool:
        """Write the job as it is now, blocking the loop's thread for up to
        ``wait`` seconds: the process exits at once after it and the loop
        turns no more. Whether the write went through in time."""
        if self._pool is None:
            return False
        errors, events = tracker.take_unsaved()
        snapshot = copy.deepcopy(tracker.state)
        # In the store's thread, after the write under way if any.
        future = self._pool.submit(
            self._save_in_thread, snapshot, errors, events, list(tracker.history)
        )
        try:
            future.result(timeout=wait)
        except Exception:  # the store failed, or the time is up
            return False
        return True

    async def save_final(
        self, tracker: JobTracker, clock: Callable[[], float], wait: float
    ) -> SaveResult | None:
        """Write the job's final status, retrying for up to ``wait`` seconds
        while the store is unusable; None when it could not be written."""
        result = await self._save_final(tracker, clock, wait)
        state = tracker.state
        if result is None:
            logger.error(
                "The final status of job %(job)s (%(status)s) could not be written to the "
                "job store %(db)s within %(wait)g s (JOBSTATUS_STORE_WAIT)",
                {"job": state.job_id, "status": state.status, "db": self.shown, "wait": wait},
            )
        elif (
            result.written
            and result.status == JobStatus.PENDING
            and tracker.final_status() is JobStatus.FAILED
        ):
            logger.warning(
                "Job %(job)s: attempt %(attempt)d failed and is retried: a Scrapyd node "
                "sharing the store runs attempt %(next)d; a plain crawl runs it when run "
                "again with -a _job=%(job)s (or its JOBDIR)",
                {"job": state.job_id, "attempt": state.attempt, "next": state.attempt + 1},
            )
        return result

    async def _save_final(
        self, tracker: JobTracker, clock: Callable[[], float], wait: float
    ) -> SaveResult | None:
        deadline = clock() + wait
        self._retry_at = 0.0
        while True:
            await self.settle()
            now = clock()
            d = self.save(tracker, now)
            result = await maybe_deferred_to_future(d) if d is not None else None
            if result is not None:
                return result
            if clock() >= deadline:
                return None
            await _sleep(min(max(self._retry_at - clock(), 0.05), deadline - clock()))


def _fire(d: Deferred[Any], future: Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        d.errback(Failure(error))
    else:
        d.callback(future.result())


async def _sleep(seconds: float) -> None:
    d: Deferred[None] = Deferred()
    call_later(seconds, d.callback, None)
    await maybe_deferred_to_future(d)
