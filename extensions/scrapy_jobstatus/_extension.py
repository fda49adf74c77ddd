"""The JobStatus extension: turns a Scrapy crawl into a job with a live status
in the job store.

It translates Scrapy's signals into calls of the job tracker; the stop
controller makes the tracker's decisions (timeout, stall, cancel, pause)
into engine calls. The job is written once per ``JOBSTATUS_INTERVAL`` and at
each transition, off the event loop; the same write polls the job's cancel
request. Monitoring never costs the user the crawl: an unusable store leaves
the crawl running, unmonitored, and is retried, unless ``JOBSTATUS_REQUIRED``
is set.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.extensions.feedexport import FeedExporter
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from ._defaults import default
from ._engine import DROPPED, queued_requests, responses_in_callbacks
from ._errors import classify_exception, classify_response
from ._jobdir import JobDirSession
from ._lease import CLOSE_SUPERSEDED, LeaseKeeper
from ._lifecycle import Lifecycle, Phase
from ._loop import before_reactor_stops
from ._middleware import download_failed
from ._model import ErrorType, InvalidSetting, JobError, JobStatus, isoformat
from ._opening import open_job
from ._progress import progress_reported
from ._settings import JobSettings
from ._signals import SHUTDOWN
from ._stopper import CLOSE_SHUTDOWN, StopController
from ._transitions import STARTED_OVER_WARNING
from ._webhooks import WebhookSettings

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

    from ._store import SaveResult
    from ._tracker import JobTracker
    from ._writer import StoreWriter

logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_BAD_SETTING = "jobstatus_bad_setting"
CLOSE_START_ERROR = "jobstatus_start_error"


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
        self.webhooks = webhooks
        self.lifecycle = Lifecycle()
        pausable = config is not None and config.pausable
        self.jobdir = JobDirSession.from_settings(crawler.settings, pausable)
        # Why the job fails at once: a bad setting, or its JOBDIR.
        self.setting_error = error or self.jobdir.error
        self.stopper = StopController(
            crawler, self._settings.cancel_grace, self._save, self._write_now
        )
        self.tracker: JobTracker | None = None
        self.writer: StoreWriter | None = None
        self.lease: LeaseKeeper | None = None
        self._feeds_closed: Deferred[None] = Deferred()
        # Requests in the JOBDIR's queue when a resumed crawl opened.
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
        SHUTDOWN.register(ext.stopper)
        before_reactor_stops(ext._reactor_stopping)
        return ext

    @property
    def _settings(self) -> JobSettings:
        return self.config or JobSettings.defaults()

    # -- the job's lifecycle -------------------------------------------------------------

    async def spider_opened(self, spider: Spider) -> None:
        self.lifecycle.advance(Phase.OPENING)
        try:
            opened = await open_job(
                self.crawler, self._settings, self.webhooks, self.jobdir, bool(self.setting_error)
            )
            if opened.tracker is None or opened.writer is None:
                assert opened.refusal is not None
                await self._stop_writer()
                self.stopper.close(opened.refusal)
                return
            self._track(opened.tracker, opened.writer)
        except Exception as exc:
            await self._unmonitored(exc)

    def _track(self, tracker: JobTracker, writer: StoreWriter) -> None:
        self.tracker, self.writer = tracker, writer
        state, jobdir = tracker.state, self.jobdir
        if writer.lease is not None:
            self.lease = LeaseKeeper(self.crawler, writer.lease, state.job_id, self._superseded)
        self.stopper.follow(tracker, jobdir.jobdir)
        tracker.event("opened", details=f"pid {os.getpid()}")
        tracker.resumed(jobdir.resuming)
        if STARTED_OVER_WARNING in state.warnings:
            logger.warning(
                "Job %(job)s %(warning)s", {"job": state.job_id, "warning": STARTED_OVER_WARNING}
            )
        error = self.setting_error or jobdir.error
        if not error:
            jobdir.opened(state.job_id)
            if jobdir.resuming:
                self._queued_at_open = queued_requests(self.crawler.engine)
        SHUTDOWN.install()  # if Scrapy installed its handlers since from_crawler
        self.lifecycle.advance(Phase.TRACKED)
        if error:
            tracker.fail(error)
            logger.error("Job failing: %(message)s", {"message": error})
            self.stopper.close(CLOSE_BAD_SETTING)
            return
        self._save()
        self.stopper.start(self._settings.interval, self._tick)

    async def _unmonitored(self, error: Exception) -> None:
        # Monitoring never costs the user the crawl.
        logger.error(
            "Job status monitoring could not start (%(error)s): the crawl goes on unmonitored",
            {"error": _one_line(error)},
        )
        self.stopper.stop_timers()
        self.stopper.follow(None)
        self.tracker = None
        try:
            await self._stop_writer()
        except Exception:  # the writer failed to start: nothing to stop
            return

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.lifecycle.phase is Phase.OPENING:
            await maybe_deferred_to_future(self.lifecycle.when(Phase.TRACKED))
        if self.lifecycle.phase is Phase.ENDING:
            return  # ended by the reactor stopping: that path owns the writer
        if self.lifecycle.phase is not Phase.TRACKED:
            await self._stop_writer()
            return
        self.lifecycle.advance(Phase.ENDING)
        tracker, writer = self.tracker, self.writer
        assert tracker is not None and writer is not None
        try:
            await self._close_job(tracker, writer, reason)
        finally:
            await self._stop_writer()

    async def _close_job(self, tracker: JobTracker, writer: StoreWriter, reason: str) -> None:
        self.stopper.stop_timers()
        self._refresh()
        final = tracker.closed(reason)
        if final is JobStatus.FAILED and tracker.failure_message and not tracker.lost:
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
        if tracker.pausing:
            self.jobdir.paused(tracker.state.job_id)
        await self._save_final(tracker, writer)
        self._write_stats()
        self.jobdir.close()

    def _reactor_stopping(self) -> Deferred[None] | None:
        if self.lifecycle.phase in (Phase.NEW, Phase.DONE):
            return None
        # The reactor waits for this deferred before it stops.
        return deferred_from_coro(self._end_interrupted())

    async def _end_interrupted(self) -> None:
        """The reactor is stopping before the crawl closed: a signal that
        Scrapy took while the crawl was starting stops the reactor without
        closing the engine. The job ends cancelled, as the process does."""
        await maybe_deferred_to_future(self.lifecycle.when(Phase.TRACKED))
        if self.lifecycle.phase is Phase.ENDING:
            # spider_closed is writing the end: the reactor waits for it.
            await maybe_deferred_to_future(self.lifecycle.when(Phase.DONE))
            return
        if self.lifecycle.phase is not Phase.TRACKED:
            return
        self.lifecycle.advance(Phase.ENDING)
        tracker, writer = self.tracker, self.writer
        assert tracker is not None and writer is not None
        self.stopper.stop_timers()
        logger.info("The crawl was stopped while starting: the job is cancelled")
        tracker.cancel(self.stopper.signalled_at or time.time(), source="signal")
        tracker.closed(CLOSE_SHUTDOWN)
        tracker.finish()
        self._write_stats()
        try:
            await self._save_final(tracker, writer)
        finally:
            await self._stop_writer()

    async def _save_final(self, tracker: JobTracker, writer: StoreWriter) -> None:
        result = await writer.save_final(tracker, time.time, self._settings.store_wait)
        self.stopper.requested(result)

    async def _stop_writer(self) -> None:
        if self.lifecycle.phase is Phase.DONE:
            return
        try:
            if self.writer is not None:
                await self.writer.stop()
        finally:
            SHUTDOWN.unregister(self.stopper)
            self.lifecycle.advance(Phase.DONE)

    def engine_stopped(self) -> None:
        SHUTDOWN.unregister(self.stopper)

    # -- the periodic write and cancel poll ----------------------------------------------

    def _tick(self) -> None:
        if self.lease is not None:
            self.lease.check(time.time())
        self._refresh()
        self.stopper.check_stall()
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
            d.addCallback(self._saved, now)

    def _saved(self, result: SaveResult | None, started_at: float) -> None:
        if self.lease is not None:
            self.lease.written(result, started_at, time.time())
        self.stopper.requested(result)

    def _superseded(self) -> None:
        """Another attempt holds the job: the crawl closes at once."""
        if self.tracker is not None and self.tracker.superseded():
            self.stopper.close(CLOSE_SUPERSEDED)

    def _write_now(self, wait: float) -> None:
        tracker, writer = self.tracker, self.writer
        if tracker is None or writer is None or self.lifecycle.phase is Phase.DONE:
            return
        if not writer.save_now(tracker, wait):
            logger.error(
                "Exiting at once: the end of job %(job)s could not be written to the job "
                "store %(db)s within %(wait)g s",
                {"job": tracker.state.job_id, "db": writer.shown, "wait": wait},
            )

    def _write_stats(self) -> None:
        assert self.tracker is not None
        stats = self.crawler.stats
        for key, value in self.tracker.stats().items():
            stats.set_value(key, value)
        if self.writer is not None:
            stats.set_value("jobstatus/store_writes", self.writer.writes)

    # -- signals of the crawl ------------------------------------------------------------

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
            self.stopper.close(CLOSE_START_ERROR)

    def progress_reported(self, field: str, value: Any) -> None:
        if self.tracker is not None:
            self.tracker.report(field, value)

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
