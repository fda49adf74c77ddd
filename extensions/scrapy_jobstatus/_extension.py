"""The JobStatus extension: turns a Scrapy crawl into a job with a live status
in the job store.

It translates Scrapy's signals into calls of the job tracker, and the
tracker's decisions (timeout, stall, cancel) into engine calls. The job is written
once per ``JOBSTATUS_INTERVAL`` and at each transition, off the event loop;
the same write polls the job's cancel request. Monitoring never costs the
user the crawl: an unusable store leaves the crawl running, unmonitored, and
is retried, unless ``JOBSTATUS_REQUIRED`` is set.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.extensions.feedexport import FeedExporter
from scrapy.utils.asyncio import call_later, create_looping_call
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from ._addon import BUSY_JOBDIR
from ._defaults import default
from ._engine import (
    DROPPED,
    closing_with_requests_in_flight,
    drop_in_flight_requests,
    queued_requests,
    requests_in_flight,
    responses_in_callbacks,
    unsupported_reason,
)
from ._errors import classify_exception, classify_response
from ._jobdir import JobDir, release
from ._loop import before_reactor_stops
from ._middleware import download_failed
from ._model import (
    TERMINAL_STATUSES,
    ErrorType,
    InvalidJobId,
    InvalidSetting,
    JobError,
    JobState,
    JobStatus,
    isoformat,
    new_job_id,
    validate_job_id,
)
from ._progress import progress_reported
from ._rows import STARTED_OVER_WARNING
from ._settings import JobSettings, store_location
from ._signals import SHUTDOWN
from ._store import StoreError, node_name
from ._tracker import STALL_CANCEL, JobTracker
from ._webhooks import WebhookSettings
from ._writer import StoreWriter

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.core.engine import ExecutionEngine
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

    from ._store import SaveResult

logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_TIMEOUT = "jobstatus_timeout"
CLOSE_STALLED = "jobstatus_stalled"
CLOSE_CANCEL = "cancelled"
CLOSE_PAUSED = "paused"
CLOSE_SHUTDOWN = "shutdown"
CLOSE_BAD_SETTING = "jobstatus_bad_setting"
CLOSE_START_ERROR = "jobstatus_start_error"
CLOSE_INVALID_ID = "jobstatus_invalid_job_id"
CLOSE_STORE_UNAVAILABLE = "jobstatus_store_unavailable"
# The job id names a job that cannot run again (it ran, runs, or was cancelled).
CLOSE_NOT_STARTABLE = "jobstatus_job_not_startable"


class JobStatusExtension:
    def __init__(
        self,
        crawler: Crawler,
        config: JobSettings | None,
        error: str | None,
        webhooks: WebhookSettings | None = None,
    ):
        self.crawler: Crawler = crawler
        self.config = config
        self.setting_error = error
        self.webhooks = webhooks
        self.engine_unsupported = unsupported_reason()
        if self.engine_unsupported:
            logger.error("%(reason)s", {"reason": self.engine_unsupported})
        self.tracker: JobTracker | None = None
        self.writer: StoreWriter | None = None
        # When the process got a shutdown signal before the job opened.
        self._signal_at: float | None = None
        self._ticker: Any = None
        self._deadline_call: Any = None
        self._grace_call: Any = None
        self._feeds_closed: Deferred[None] = Deferred()
        self._opening = False
        self._opened: Deferred[None] = Deferred()
        self._stopped: Deferred[None] = Deferred()
        self._done = False
        self._ended_elsewhere = False
        # The crawl's JOBDIR, and whether the crawl goes on from it (the job
        # was paused); requests in the JOBDIR's queue when the crawl opened.
        self.jobdir: JobDir | None = None
        self.resuming = False
        self._queued_at_open = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("JOBSTATUS_ENABLED", default("JOBSTATUS_ENABLED")):
            raise NotConfigured
        try:
            return cls._from_crawler(crawler)
        except Exception as exc:
            # Monitoring never costs the user the crawl.
            logger.error(
                "Job status monitoring could not start (%(error)s): the crawl goes on unmonitored",
                {"error": _one_line(exc)},
            )
            raise NotConfigured from None

    @classmethod
    def _from_crawler(cls, crawler: Crawler) -> Self:
        config = webhooks = error = None
        try:
            config = JobSettings.from_settings(crawler.settings)
            webhooks = WebhookSettings.from_settings(crawler.settings)
        except InvalidSetting as exc:
            # A bad setting fails the job rather than the process: the job is
            # still recorded, with the reason.
            error = str(exc)
        ext = cls(crawler, config, error, webhooks)
        ext._prepare_jobdir()
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(ext.response_received, signal=signals.response_received)
        crawler.signals.connect(ext.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(ext.item_error, signal=signals.item_error)
        crawler.signals.connect(ext.spider_error, signal=signals.spider_error)
        crawler.signals.connect(ext.feed_exporter_closed, signal=signals.feed_exporter_closed)
        crawler.signals.connect(ext.feed_slot_closed, signal=signals.feed_slot_closed)
        crawler.signals.connect(ext.download_failed, signal=download_failed)
        crawler.signals.connect(ext.progress_reported, signal=progress_reported)
        # A crawl that never opened its job still gives the signals back.
        crawler.signals.connect(ext.engine_stopped, signal=signals.engine_stopped)
        # Ctrl-C and SIGTERM from the start: a signal at any moment of
        # start-up cancels the job.
        SHUTDOWN.register(ext)
        before_reactor_stops(ext._reactor_stopping)
        return ext

    def _prepare_jobdir(self) -> None:
        """Decide whether the crawl goes on from its JOBDIR (the job was
        paused), before the scheduler opens it."""
        settings = self.crawler.settings
        if (
            self.config
            and self.config.pausable
            and settings.get("JOBSTATUS_JOBDIR")
            and not settings.get("JOBDIR")
        ):
            logger.error(
                "JOBSTATUS_PAUSABLE needs the add-on (ADDONS = {'scrapy_jobstatus.Addon': 100}), "
                "which gives the crawl its JOBDIR: the job cannot be paused"
            )
        busy = settings.get(BUSY_JOBDIR)
        if busy and not self.setting_error:
            self.setting_error = f"the JOBDIR {busy} is used by another crawl"
        path = settings.get("JOBDIR")
        if not path:
            return
        self.jobdir = jobdir = JobDir(os.path.abspath(path))
        marker = jobdir.read()
        self.resuming = marker.get("resumable") is True
        # The JOBDIR a Scrapyd node gives a job is never resumed but after
        # a pause; one of the user's is left as it is, unless it is ours.
        given_by_node = settings.get("JOBSTATUS_JOBDIR") == path
        if not self.resuming and (marker or given_by_node):
            # Killed, failed or ended before: what is there cannot be gone on
            # from (Scrapy writes its queue's index only when it closes).
            jobdir.start_over()

    # -- lifecycle -------------------------------------------------------------------

    async def spider_opened(self, spider: Spider) -> None:
        self._opening = True
        try:
            await self._open_job(spider)
        except Exception as exc:
            await self._unmonitored(exc)
        finally:
            self._opened.callback(None)

    async def _unmonitored(self, error: Exception) -> None:
        # Monitoring never costs the user the crawl.
        logger.error(
            "Job status monitoring could not start (%(error)s): the crawl goes on unmonitored",
            {"error": _one_line(error)},
        )
        self._stop_timers()
        self.tracker = None
        try:
            await self._stop_writer()
        except Exception:  # the writer failed to start: nothing to stop
            self._done = True
            SHUTDOWN.unregister(self)

    async def _open_job(self, spider: Spider) -> None:
        settings = self.crawler.settings
        job_id = getattr(spider, "_job", None)
        jobdir = self.jobdir
        # `scrapy crawl` run again with its JOBDIR goes on with that job.
        marked = jobdir.job_id if jobdir is not None else None
        if job_id is None and marked is not None:
            job_id = marked
        if job_id is None:
            job_id = new_job_id()
            logger.info("Job id: %(job)s", {"job": job_id}, extra={"spider": spider})
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            logger.error("%(error)s", {"error": exc}, extra={"spider": spider})
            self._close(CLOSE_INVALID_ID)
            return
        if self.resuming and job_id != marked and not self.setting_error:
            self.setting_error = (
                f"the JOBDIR {jobdir and jobdir.path} holds the paused crawl of job "
                f"{marked!r}, not of job {job_id!r}"
            )
            self.resuming = False
        config = self.config or JobSettings.defaults()
        now = time.time()
        # A plain crawl delivers its webhooks; under Scrapyd, the node does.
        deliver = self.webhooks if self.webhooks and self.webhooks.deliver else None
        self.writer = writer = StoreWriter(store_location(settings), config.interval, deliver)
        state = JobState(
            job_id=job_id,
            spider=spider.name,
            project=settings.get("JOBSTATUS_PROJECT"),
            node=node_name(),
            status=JobStatus.RUNNING,
            created_at=now,
            started_at=now,
            attempt_started_at=now,
            updated_at=now,
            timeout=config.timeout,
            pid=os.getpid(),
            interval=config.interval,
            webhooks=list(self.webhooks.urls) if self.webhooks else [],
            jobdir=str(jobdir.path) if jobdir is not None else None,
            retries=config.retries,
            retry_delay=config.retry_delay,
        )
        tracker = JobTracker(
            state,
            failure_ratio=config.failure_ratio,
            stall_timeout=config.stall_timeout,
            stall_action=config.stall_action,
        )
        self.crawler.stats.set_value("jobstatus/job_id", job_id)
        writer.start()
        try:
            started = await writer.start_job(state, self.resuming)
            if not started.started and job_id == marked and not self.resuming:
                # The JOBDIR's job ended: this is a new crawl, a new job.
                state.job_id = job_id = new_job_id()
                logger.info("Job id: %(job)s", {"job": job_id}, extra={"spider": spider})
                started = await writer.start_job(state)
        except StoreError as exc:
            if config.required:
                logger.error("%(error)s: not crawling (JOBSTATUS_REQUIRED is set)", {"error": exc})
                await self._stop_writer()
                self._close(CLOSE_STORE_UNAVAILABLE)
                return
            logger.error(
                "%(error)s; the crawl goes on unmonitored and the store is retried with backoff",
                {"error": exc},
            )
        else:
            if not started.started:
                # A job id names one job: a cancelled pending job never starts,
                # and a finished or running one is not run again.
                hint = ""
                if job_id == marked and started.job.status in TERMINAL_STATUSES:
                    hint = f" (its JOBDIR {jobdir and jobdir.path}: remove it to crawl anew)"
                logger.error(
                    "Job %(job)s is %(status)s already: not crawling%(hint)s",
                    {"job": job_id, "status": started.job.status, "hint": hint},
                )
                await self._stop_writer()
                self._close(CLOSE_NOT_STARTABLE)
                return
        self.tracker = tracker
        self.crawler.stats.set_value("jobstatus/job_id", job_id)
        tracker.event("opened", details=f"pid {os.getpid()}")
        tracker.resumed(self.resuming)
        if STARTED_OVER_WARNING in state.warnings:
            logger.warning(
                "Job %(job)s %(warning)s", {"job": job_id, "warning": STARTED_OVER_WARNING}
            )
        if jobdir is not None and not self.setting_error:
            jobdir.mark(job_id, resumable=False)  # until it pauses
            if self.resuming:
                self._queued_at_open = queued_requests(self.crawler.engine)
        SHUTDOWN.install()  # if Scrapy installed its handlers since from_crawler
        if self.setting_error:
            tracker.fail(self.setting_error)
            logger.error("Job failing: %(message)s", {"message": self.setting_error})
            self._close(CLOSE_BAD_SETTING)
            return
        self._save()
        if self._signal_at is not None:
            # A signal came while the crawl was starting: the job is cancelled
            # (paused, with a JOBDIR) as soon as it exists.
            self._stop_on_signal(self._signal_at)
            return
        self._ticker = create_looping_call(self._tick)
        self._ticker.start(config.interval, now=False)
        if config.timeout:
            # The timeout counts the job's whole running time, its runs
            # before a pause included.
            left = max(0.0, config.timeout - tracker.state.ran_for)
            self._deadline_call = call_later(left, self._timeout_reached)

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        tracker, writer = self.tracker, self.writer
        if tracker is None or writer is None:
            if not self._done:  # the job never opened
                await self._stop_writer()
            return
        if tracker.ended:  # ended by the reactor stopping: that path owns the writer
            return
        try:
            await self._close_job(tracker, writer, reason)
        finally:
            await self._stop_writer()

    async def _close_job(self, tracker: JobTracker, writer: StoreWriter, reason: str) -> None:
        self._stop_timers()
        self._refresh()
        final = tracker.closed(reason)
        if final is JobStatus.FAILED and tracker.failure_message:
            logger.error("Job failing: %(message)s", {"message": tracker.failure_message})
        # Stats consumers (Spidermon, the stats dump) read the stats in their
        # own spider_closed handlers: they get the final figures and the
        # status the job is ending with, not "finalizing".
        self._write_stats()
        await writer.settle()
        self._save()
        # FeedExporter closes its files in its own spider_closed handler, run
        # beside this one: the terminal status waits for them.
        if any(isinstance(ext, FeedExporter) for ext in self.crawler.extensions.middlewares):
            await maybe_deferred_to_future(self._feeds_closed)
        tracker.finish()
        self._write_stats()
        if tracker.pausing and self.jobdir is not None:
            # Scrapy has written the crawl's state (the scheduler closed
            # before spider_closed): whole, before any crawl may resume it.
            self.jobdir.mark(tracker.state.job_id, resumable=True)
        await self._save_final(tracker, writer)
        self._write_stats()
        if self.jobdir is not None:
            release(self.jobdir.path)  # the next run's crawl may start

    async def _save_final(self, tracker: JobTracker, writer: StoreWriter) -> None:
        wait = (self.config or JobSettings.defaults()).store_wait
        result = await writer.save_final(tracker, time.time, wait)
        if result is None:
            logger.error(
                "The final status of job %(job)s (%(status)s) could not be written to the "
                "job store %(db)s within %(wait)g s (JOBSTATUS_STORE_WAIT)",
                {
                    "job": tracker.state.job_id,
                    "status": tracker.state.status,
                    "db": writer.shown,
                    "wait": wait,
                },
            )
        else:
            self._saved(result)
            if result.status == JobStatus.PENDING and tracker.final_status() is JobStatus.FAILED:
                state = tracker.state
                logger.warning(
                    "Job %(job)s: attempt %(attempt)d failed and is retried: a Scrapyd node "
                    "sharing the store runs attempt %(next)d; a plain crawl runs it when run "
                    "again with -a _job=%(job)s (or its JOBDIR)",
                    {"job": state.job_id, "attempt": state.attempt, "next": state.attempt + 1},
                )

    async def _stop_writer(self) -> None:
        self._done = True
        if self.writer is not None:
            await self.writer.stop()
        SHUTDOWN.unregister(self)
        if not self._stopped.called:
            self._stopped.callback(None)

    async def _end_interrupted(self) -> None:
        """The reactor is stopping before the crawl closed: a signal that
        Scrapy took while the crawl was starting stops the reactor without
        closing the engine. The job ends cancelled, as the process does."""
        await maybe_deferred_to_future(self._opened)
        tracker, writer = self.tracker, self.writer
        if self._done or tracker is None or writer is None:
            return
        if tracker.ended:
            # spider_closed is writing the end: the reactor waits for it.
            await maybe_deferred_to_future(self._stopped)
            return
        self._stop_timers()
        logger.info("The crawl was stopped while starting: the job is cancelled")
        tracker.cancel(self._signal_at or time.time(), source="signal")
        tracker.closed(CLOSE_SHUTDOWN)
        tracker.finish()
        self._write_stats()
        try:
            await self._save_final(tracker, writer)
        finally:
            await self._stop_writer()

    def _reactor_stopping(self) -> Deferred[None] | None:
        if self._done or not self._opening:
            return None
        # The reactor waits for this deferred before it stops.
        return deferred_from_coro(self._end_interrupted())

    def engine_stopped(self) -> None:
        SHUTDOWN.unregister(self)

    def feed_slot_closed(self, slot: Any) -> None:
        # The feeds of each run: a resumed job's runs write to the same URIs
        # (appended) or, with %(time)s in them, to one file per run.
        if self.tracker is not None:
            state = self.tracker.state
            state.feeds.append(
                {
                    "uri": slot.uri,
                    "format": slot.format,
                    "items": slot.itemcount,
                    "attempt": state.attempt,
                    "closed_at": isoformat(time.time()),
                }
            )

    def feed_exporter_closed(self) -> None:
        if self.tracker is not None:
            self.tracker.event("feeds closed")
        if not self._feeds_closed.called:
            self._feeds_closed.callback(None)

    # -- periodic write and cancel poll ------------------------------------------------

    def _tick(self) -> None:
        self._refresh()
        self._check_stall()
        self._write_stats()
        self._save()

    def _refresh(self) -> None:
        assert self.tracker is not None
        stats = self.crawler.stats
        engine = self.crawler.engine
        pending = (
            self._queued_at_open
            + (stats.get_value("scheduler/enqueued") or 0)
            - (stats.get_value("scheduler/dequeued") or 0)
        )
        in_flight = len(engine.downloader.active) if engine else 0
        self.tracker.refresh(max(0, pending), in_flight, responses_in_callbacks(engine))

    def _save(self) -> None:
        assert self.tracker is not None and self.writer is not None
        self.tracker.state.updated_at = now = time.time()
        d = self.writer.save(self.tracker, now)
        if d is not None:
            d.addCallback(self._saved)

    def _saved(self, result: SaveResult | None) -> None:
        tracker = self.tracker
        if result is None or tracker is None:
            return
        if result.recreated:
            logger.warning(
                "Job %(job)s was missing from the job store %(db)s: written again from memory",
                {"job": tracker.state.job_id, "db": self.writer and self.writer.shown},
            )
        if not result.written and not self._ended_elsewhere:
            self._ended_elsewhere = True
            logger.warning(
                "Job %(job)s was ended by another process; its status is no longer updated",
                {"job": tracker.state.job_id},
            )
        if result.cancel_requested_at is not None and not tracker.closing:
            self._cancel(result.cancel_requested_at, source="store", force=result.cancel_force)
        elif result.pause_requested_at is not None and not tracker.closing:
            self._pause(result.pause_requested_at, source="store")
        elif result.cancel_force and tracker.closing and not tracker.ended:
            self._force_stop()

    def _write_stats(self) -> None:
        assert self.tracker is not None
        stats = self.crawler.stats
        for key, value in self.tracker.stats().items():
            stats.set_value(key, value)
        if self.writer is not None:
            stats.set_value("jobstatus/store_writes", self.writer.writes)

    # -- decisions into engine calls ---------------------------------------------------

    def _close(self, reason: str) -> None:
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
        self._close(CLOSE_TIMEOUT)

    def _check_stall(self) -> None:
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
            self._close(CLOSE_STALLED)
        # The tick's write carries the warning and the event (and so the
        # job.stalled webhook).

    def _cancel(self, requested_at: float, source: str, force: bool = False) -> None:
        tracker = self.tracker
        assert tracker is not None
        if not tracker.cancel(requested_at, source, force):
            return
        logger.info(
            "Cancel requested (%(source)s): no new requests; in-flight requests finish",
            {"source": source},
        )
        self._start_grace()
        self._close(CLOSE_SHUTDOWN if source == "signal" else CLOSE_CANCEL)
        if force:
            call_later(0, self._force_stop)
        self._save()

    def _pause(self, requested_at: float, source: str) -> None:
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
        self._close(CLOSE_PAUSED)
        self._save()

    def _stop_on_signal(self, received_at: float) -> None:
        """Ctrl-C (or SIGTERM): with a JOBDIR the job pauses, else it is
        cancelled."""
        if self.jobdir is not None:
            self._pause(received_at, source="signal")
        else:
            self._cancel(received_at, source="signal")

    def _start_grace(self) -> None:
        grace = (self.config or JobSettings.defaults()).cancel_grace
        if self._grace_call is None:
            self._grace_call = call_later(grace, self._force_stop)

    def _force_stop(self) -> None:
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

    def _stop_timers(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        for call in (self._deadline_call, self._grace_call):
            if call is not None:
                call.cancel()
        self._deadline_call = self._grace_call = None

    # -- signals: Ctrl-C and Scrapyd's cancel.json ---------------------------------------

    def shutdown_signal(self, name: str, count: int, received_at: float) -> None:
        """The process got its first or second shutdown signal (the
        process's one handler calls every crawl's)."""
        tracker = self.tracker
        if tracker is None:
            # The job is not open yet: it is cancelled as soon as it is.
            if self._signal_at is None and not self._done:
                self._signal_at = received_at
                logger.info("Received %(signal)s while starting: cancelling", {"signal": name})
            return
        if tracker.ended:
            return
        if count == 1 and not tracker.closing:
            self._stop_on_signal(received_at)
            return
        logger.info("Received %(signal)s again: forcing the stop", {"signal": name})
        self._force_stop()
        self._save()

    def exit_now(self, name: str, received_at: float, wait: float) -> None:
        """The process exits at once (a third signal): the job's end is
        written now, within ``wait`` seconds, for the loop turns no more."""
        tracker, writer = self.tracker, self.writer
        if tracker is None or writer is None or self._done:
            return
        self._stop_timers()
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
        if not writer.save_now(tracker, wait):
            logger.error(
                "Exiting at once: the end of job %(job)s could not be written to the job "
                "store %(db)s within %(wait)g s",
                {"job": tracker.state.job_id, "db": writer.shown, "wait": wait},
            )

    # -- counters --------------------------------------------------------------------

    def response_received(self, response: Response, request: Request, spider: Spider) -> None:
        if self.tracker is not None and not _not_a_page(request):
            self.tracker.response_received(response.url, classify_response(response))

    def download_failed(self, request: Request, exception: BaseException) -> None:
        if self.tracker is not None and not _not_a_page(request):
            self.tracker.download_failed(classify_exception(exception, request.url))

    def item_scraped(self, item: Any, spider: Spider) -> None:
        if self.tracker is not None:
            self.tracker.item_scraped()

    def item_error(
        self, item: Any, response: Response | None, spider: Spider, failure: Failure
    ) -> None:
        self._record_callback_error(ErrorType.ITEM_ERROR, failure, response)

    def spider_error(self, failure: Failure, response: Response | None, spider: Spider) -> None:
        self._record_callback_error(ErrorType.SPIDER_ERROR, failure, response)
        if response is None and self.tracker is not None:
            # The spider could not even produce its start requests (bad
            # arguments, say): nothing it does after can be trusted. A
            # ValueError's message says it all ("urls: ... is not a URL").
            value = failure.value
            message = " ".join(str(value).split()) if isinstance(value, ValueError) else None
            self.tracker.fail(message or _one_line(value))
            self._close(CLOSE_START_ERROR)

    def progress_reported(self, field: str, value: Any) -> None:
        if self.tracker is not None:
            self.tracker.report(field, value)

    def _record_callback_error(
        self, error_type: ErrorType, failure: Failure, response: Response | None
    ) -> None:
        if self.tracker is None:
            return
        self.tracker.record_error(
            JobError(
                error_type=error_type,
                error_message=_one_line(failure.value),
                page_url=response.url if response is not None else None,
                http_status=response.status if response is not None else None,
            )
        )


def _one_line(value: object) -> str:
    text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    return " ".join(text.split())[:1000]


def _not_a_page(request: Request) -> bool:
    # RobotsTxtMiddleware's own requests are not pages of the job, nor are
    # those a forced stop dropped.
    if request.meta.get(DROPPED):
        return True
    return bool(request.meta.get("dont_obey_robotstxt")) and request.url.endswith("/robots.txt")
