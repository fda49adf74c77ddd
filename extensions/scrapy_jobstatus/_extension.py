"""The JobStatus extension: turns a Scrapy crawl into a job with a live status
in the job store.

It counts in memory on every signal and writes the store once per
``JOBSTATUS_INTERVAL`` and at each transition, polling the job's cancel
request in the same write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.crawler import CrawlerProcessBase
from scrapy.exceptions import CloseSpider, NotConfigured
from scrapy.extensions.feedexport import FeedExporter
from scrapy.utils.asyncio import call_later, create_looping_call, is_asyncio_available
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from ._engine import (
    closing_with_requests_in_flight,
    drop_in_flight_requests,
    unsupported_reason,
)
from ._errors import classify_exception, classify_response
from ._middleware import download_failed
from ._model import (
    CompletionReason,
    ErrorType,
    HistoryEvent,
    InvalidJobId,
    InvalidSetting,
    JobError,
    JobState,
    JobStatus,
    new_job_id,
    reason_for_close,
    status_for_reason,
    validate_job_id,
)
from ._progress import progress_reported
from ._settings import JobSettings, store_location
from ._store import JobStore

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure


logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_TIMEOUT = "jobstatus_timeout"
CLOSE_CANCEL = "cancelled"
CLOSE_SHUTDOWN = "shutdown"
CLOSE_BAD_SETTING = "jobstatus_bad_setting"
CLOSE_START_ERROR = "jobstatus_start_error"
FORCED_STOP_WARNING = "forced stop: in-flight requests were dropped and their results may be lost"
# Samples of (time, finished work) kept for the recent rate.
RATE_WINDOW = 30


class JobStatusExtension:
    def __init__(self, crawler: Crawler, config: JobSettings | None, error: str | None):
        self.crawler: Crawler = crawler
        self.config = config
        self.setting_error = error
        self.engine_unsupported = unsupported_reason()
        if self.engine_unsupported:
            logger.error("%(reason)s", {"reason": self.engine_unsupported})
        self.store: JobStore | None = None
        self.state: JobState | None = None
        self.expected_total: int | None = None
        self.end_reason: CompletionReason | None = None
        self.failure_message: str | None = None
        self.signals_received = 0
        self.forced = False
        self.closing = False
        self.errors_by_type: dict[str, int] = {}
        self._new_errors: list[JobError] = []
        self._new_events: list[HistoryEvent] = []
        self._last_event_at: float | None = None
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        self._ticker: Any = None
        self._deadline_call: Any = None
        self._grace_call: Any = None
        self._feeds_closed: Deferred[None] = Deferred()
        self._ended_elsewhere = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("JOBSTATUS_ENABLED", True):
            raise NotConfigured
        try:
            config, error = JobSettings.from_settings(crawler.settings), None
        except InvalidSetting as exc:
            # A bad setting fails the job rather than the process: the job is
            # still recorded, with the reason.
            config, error = None, str(exc)
        ext = cls(crawler, config, error)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(ext.response_received, signal=signals.response_received)
        crawler.signals.connect(ext.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(ext.item_error, signal=signals.item_error)
        crawler.signals.connect(ext.spider_error, signal=signals.spider_error)
        crawler.signals.connect(ext.feed_exporter_closed, signal=signals.feed_exporter_closed)
        crawler.signals.connect(ext.download_failed, signal=download_failed)
        crawler.signals.connect(ext.progress_reported, signal=progress_reported)
        return ext

    # -- lifecycle -----------------------------------------------------------

    def spider_opened(self, spider: Spider) -> None:
        settings = self.crawler.settings
        job_id = getattr(spider, "_job", None)
        if job_id is None:
            job_id = new_job_id()
            logger.info("Job id: %(job)s", {"job": job_id}, extra={"spider": spider})
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            logger.error("%(error)s", {"error": exc}, extra={"spider": spider})
            raise CloseSpider("jobstatus_invalid_job_id") from None
        now = time.time()
        db = store_location(settings)
        self.store = JobStore(db)
        self.state = JobState(
            job_id=job_id,
            spider=spider.name,
            project=settings.get("JOBSTATUS_PROJECT"),
            node=self.store.node,
            status=JobStatus.RUNNING,
            created_at=now,
            started_at=now,
            updated_at=now,
            timeout=self.config.timeout if self.config else None,
            pid=os.getpid(),
            interval=self.config.interval if self.config else 1.0,
        )
        self.crawler.stats.set_value("jobstatus/job_id", job_id)
        try:
            stored = self.store.start_job(self.state)
        except (sqlite3.Error, OSError) as exc:
            logger.error(
                "Cannot use the job store %(db)s: %(error)s",
                {"db": db, "error": exc},
                extra={"spider": spider},
            )
            self.state = None
            raise CloseSpider("jobstatus_store_unavailable") from None
        if stored is not self.state:
            # A job id names one job: a cancelled pending job never starts,
            # and a finished or running one is not run again.
            logger.error(
                "Job %(job)s is %(status)s already: not crawling",
                {"job": job_id, "status": stored.status},
                extra={"spider": spider},
            )
            self.state = None
            raise CloseSpider(CLOSE_CANCEL)
        self._event("opened", details=f"pid {os.getpid()}")
        if self.setting_error:
            self._fail(self.setting_error)
            self._flush()
            raise CloseSpider(CLOSE_BAD_SETTING)
        assert self.config is not None
        self._flush()
        self._install_signal_handlers()
        self._ticker = create_looping_call(self._tick)
        self._ticker.start(self.config.interval, now=False)
        if self.config.timeout:
            self._deadline_call = call_later(self.config.timeout, self._timeout_reached)

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.state is None:
            return
        self._stop_timers()
        self.closing = True
        state = self.state
        state.close_reason = reason
        if self.end_reason is None:
            self.end_reason = reason_for_close(reason)
            if self.end_reason is CompletionReason.ERROR and not self.failure_message:
                self.failure_message = f"The crawl closed with reason {reason!r}."
            if self.end_reason is CompletionReason.CANCELLED and state.cancel_requested_at is None:
                state.cancel_requested_at = time.time()
        self._check_failure_ratio()
        self._refresh_counters()
        state.requests_in_flight = 0
        if self._final_status() is JobStatus.COMPLETED and self.end_reason is CompletionReason.DONE:
            state.progress = 100.0
        self._event("closing", details=f"close reason {reason}")
        self._set_stage("finalizing")
        self._set_status(JobStatus.FINALIZING)
        self._flush()
        # Stats consumers (Spidermon, the stats dump) read the stats in their
        # own spider_closed handlers: they get the final figures and the
        # status the job is ending with, not "finalizing".
        self._write_stats()
        self.crawler.stats.set_value("jobstatus/status", str(self._final_status()))
        self.crawler.stats.set_value("jobstatus/completion_reason", str(self.end_reason))
        # FeedExporter closes its files in its own spider_closed handler, run
        # beside this one: the terminal status waits for them.
        if any(isinstance(ext, FeedExporter) for ext in self.crawler.extensions.middlewares):
            await maybe_deferred_to_future(self._feeds_closed)
        self._finish()

    def feed_exporter_closed(self) -> None:
        if self.state is not None:
            self._event("feeds closed")
        if not self._feeds_closed.called:
            self._feeds_closed.callback(None)

    def _finish(self) -> None:
        assert self.state is not None and self.store is not None
        state = self.state
        final = self._final_status()
        if state.stage:
            state.stages_completed.append(state.stage)
        state.stage = None
        state.completion_reason = str(self.end_reason)
        state.completed_at = time.time()
        state.estimated_completion = None
        self._set_status(final)
        if final is JobStatus.FAILED:
            state.error_message = self.failure_message
            state.message = f"The job failed: {self.failure_message}"
        elif final is JobStatus.CANCELLED:
            state.message = "The job was cancelled; the results of finished requests were kept."
        elif self.end_reason is CompletionReason.TIMEOUT:
            state.message = "The job reached its timeout; partial results were kept."
        else:
            state.message = "The job completed."
        self._event("finished", details=state.message)
        self._write_stats()
        self._flush()
        self.store.close()
        self._restore_signal_handlers()

    def _final_status(self) -> JobStatus:
        assert self.end_reason is not None
        return status_for_reason(self.end_reason)

    # -- periodic write and cancel poll -------------------------------------

    def _tick(self) -> None:
        self._install_signal_handlers()
        self._refresh_counters()
        self._write_stats()
        self._flush()

    def _flush(self) -> None:
        assert self.store is not None and self.state is not None
        self.state.updated_at = time.time()
        try:
            written, cancel_at, force = self.store.save(
                self.state, self._new_errors, self._new_events
            )
        except sqlite3.Error as exc:
            # Kept in memory and written with the next successful write.
            logger.error("Cannot write the job status: %(error)s", {"error": exc})
            return
        self._new_errors = []
        self._new_events = []
        if not written and not self._ended_elsewhere:
            self._ended_elsewhere = True
            logger.warning(
                "Job %(job)s was ended by another process; its status is no longer updated",
                {"job": self.state.job_id},
            )
        if cancel_at is not None and not self.closing:
            self._cancel(requested_at=cancel_at, source="store", force=force)
        elif force and not self.forced and self.closing:
            self._force_stop()

    def _refresh_counters(self) -> None:
        state = self.state
        assert state is not None
        stats = self.crawler.stats
        engine = self.crawler.engine
        state.requests_pending = max(
            0,
            (stats.get_value("scheduler/enqueued") or 0)
            - (stats.get_value("scheduler/dequeued") or 0),
        )
        state.requests_in_flight = len(engine.downloader.active) if engine else 0
        self._update_progress()

    def _update_progress(self) -> None:
        state = self.state
        assert state is not None
        now = time.time()
        if self.expected_total:
            done = state.total_documents_found
            remaining = max(0, self.expected_total - done)
            progress = min(100.0, 100.0 * done / self.expected_total)
        else:
            done = state.responses_finished
            remaining = state.requests_pending + state.requests_in_flight
            progress = 100.0 * done / (done + remaining) if done + remaining else None
            if progress is not None:
                # An estimate from the frontier: never backwards, never 100
                # before the end.
                progress = min(99.0, max(progress, state.progress or 0.0))
        state.progress = None if progress is None else round(progress, 2)
        self._rate_samples.append((now, done))
        state.estimated_completion = self._estimate_completion(now, remaining)

    def _estimate_completion(self, now: float, remaining: int) -> float | None:
        if len(self._rate_samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._rate_samples[0], self._rate_samples[-1]
        if t1 <= t0 or d1 <= d0:
            return None
        eta = now + remaining / ((d1 - d0) / (t1 - t0))
        state = self.state
        assert state is not None
        if state.timeout and state.started_at:
            eta = min(eta, state.started_at + state.timeout)
        return eta

    def _write_stats(self) -> None:
        state = self.state
        assert state is not None
        stats = self.crawler.stats
        stats.set_value("jobstatus/pages_crawled", state.total_pages_crawled)
        stats.set_value("jobstatus/documents_found", state.total_documents_found)
        stats.set_value("jobstatus/responses_failed", state.responses_failed)
        stats.set_value("jobstatus/failure_ratio", round(state.failure_ratio, 4))
        if state.progress is not None:  # stats hold numbers and strings only
            stats.set_value("jobstatus/progress", state.progress)
        stats.set_value("jobstatus/requests_pending", state.requests_pending)
        stats.set_value("jobstatus/requests_in_flight", state.requests_in_flight)
        if self.store is not None:
            stats.set_value("jobstatus/store_writes", self.store.writes)
        for error_type, count in self.errors_by_type.items():
            stats.set_value(f"jobstatus/errors/{error_type}", count)

    # -- transitions ---------------------------------------------------------

    def _set_status(self, status: JobStatus) -> None:
        state = self.state
        assert state is not None
        if state.status is not status:
            state.status = status
            state.message = None
        self.crawler.stats.set_value("jobstatus/status", str(status))

    def _set_stage(self, stage: str) -> None:
        state = self.state
        assert state is not None
        if stage != state.stage:
            if state.stage:
                state.stages_completed.append(state.stage)
            state.stage = stage
            self._event(f"stage {stage}")

    def _event(self, step: str, details: str | None = None) -> None:
        state = self.state
        assert state is not None
        now = time.time()
        since = 0 if self._last_event_at is None else round((now - self._last_event_at) * 1000)
        self._last_event_at = now
        self._new_events.append(
            HistoryEvent(step=step, timestamp=now, status=str(state.status), duration_ms=since, details=details)
        )

    def _fail(self, message: str) -> None:
        self.end_reason = CompletionReason.ERROR
        self.failure_message = message
        logger.error("Job failing: %(message)s", {"message": message})

    def _check_failure_ratio(self) -> None:
        state = self.state
        assert state is not None
        if (
            self.config is None
            or self.end_reason is not CompletionReason.DONE
            or not state.responses_finished
        ):
            return
        if state.failure_ratio > self.config.failure_ratio:
            self._fail(
                f"{state.responses_failed} of {state.responses_finished} responses failed "
                f"({state.failure_ratio:.0%}), above JOBSTATUS_FAILURE_RATIO={self.config.failure_ratio}."
            )

    def _close(self, reason: str) -> None:
        self.closing = True
        engine = self.crawler.engine
        dfd = deferred_from_coro(engine.close_spider_async(reason=reason))
        dfd.addErrback(
            lambda failure: logger.error(
                "Could not close the spider: %(error)s", {"error": failure.getErrorMessage()}
            )
        )

    def _timeout_reached(self) -> None:
        self._deadline_call = None
        if self.closing or self.state is None:
            return
        assert self.config is not None
        self.end_reason = CompletionReason.TIMEOUT
        self._event("timeout reached", details=f"after {self.config.timeout:g} s")
        logger.info(
            "Job timeout (%(timeout)s s) reached: no new requests; in-flight requests finish",
            {"timeout": self.config.timeout},
        )
        self._start_grace()
        self._flush()
        self._close(CLOSE_TIMEOUT)

    def _cancel(self, requested_at: float, source: str, force: bool = False) -> None:
        state = self.state
        assert state is not None
        self.end_reason = CompletionReason.CANCELLED
        state.cancel_requested_at = requested_at
        self._set_status(JobStatus.CANCELLING)
        self._event("cancel requested", details=f"by {source}" + (", forced" if force else ""))
        logger.info(
            "Cancel requested (%(source)s): no new requests; in-flight requests finish",
            {"source": source},
        )
        self._start_grace()
        self._close(CLOSE_SHUTDOWN if source == "signal" else CLOSE_CANCEL)
        if force:
            self._force_stop()
        self._flush()

    def _start_grace(self) -> None:
        assert self.config is not None
        if self._grace_call is None:
            self._grace_call = call_later(self.config.cancel_grace, self._force_stop)

    def _force_stop(self) -> None:
        """Drop the in-flight requests so that the close goes on; feeds are
        still closed and the final status still written."""
        self._grace_call = None
        # Nothing to drop once the in-flight requests are done and the close
        # has gone on by itself.
        if (
            self.forced
            or self.state is None
            or self.engine_unsupported
            or not closing_with_requests_in_flight(self.crawler.engine)
        ):
            return
        self.forced = True
        dropped = drop_in_flight_requests(self.crawler.engine)
        self.state.warnings.append(FORCED_STOP_WARNING)
        self._event("forced stop", details=f"{dropped} in-flight requests dropped")
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

    # -- signals: Ctrl-C and Scrapyd's cancel.json ---------------------------

    def _install_signal_handlers(self) -> None:
        # Scrapy's own handlers go in after the reactor starts; wrap them once
        # they are there, so that the first signal is seen as a cancel.
        current = signal.getsignal(signal.SIGINT)
        if isinstance(getattr(current, "__self__", None), CrawlerProcessBase):
            self._scrapy_handlers = {
                s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
            }
            signal.signal(signal.SIGINT, self._on_os_signal)
            signal.signal(signal.SIGTERM, self._on_os_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in getattr(self, "_scrapy_handlers", {}).items():
            if signal.getsignal(signum) == self._on_os_signal:
                signal.signal(signum, handler)

    def _on_os_signal(self, signum: int, frame: Any) -> None:
        # Nothing else may run inside a signal handler: hand over to the loop.
        if is_asyncio_available():
            asyncio.get_event_loop().call_soon_threadsafe(self._os_signal_received, signum)
        else:
            from twisted.internet import reactor

            reactor.callFromThread(self._os_signal_received, signum)

    def _os_signal_received(self, signum: int) -> None:
        self.signals_received += 1
        name = signal.Signals(signum).name
        if self.signals_received == 1 and not self.closing:
            self._cancel(requested_at=time.time(), source="signal")
        elif self.signals_received <= 2 and not self.forced:
            logger.info("Received %(signal)s again: forcing the stop", {"signal": name})
            self.end_reason = self.end_reason or CompletionReason.CANCELLED
            self._force_stop()
            self._flush()
        else:
            logger.info("Received %(signal)s again: exiting at once", {"signal": name})
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    # -- counters ------------------------------------------------------------

    def response_received(self, response: Response, request: Request, spider: Spider) -> None:
        state = self.state
        if state is None or _is_robots_txt(request):
            return
        state.total_pages_crawled += 1
        state.responses_finished += 1
        if state.total_pages_crawled == 1:
            self._event("first response", details=response.url)
        error = classify_response(response)
        if error is not None:
            state.responses_failed += 1
            self._record_error(error)

    def download_failed(self, request: Request, exception: BaseException) -> None:
        state = self.state
        if state is None or _is_robots_txt(request):
            return
        state.responses_finished += 1
        state.responses_failed += 1
        self._record_error(classify_exception(exception, request.url))

    def item_scraped(self, item: Any, spider: Spider) -> None:
        if self.state is not None:
            self.state.total_documents_found += 1

    def item_error(self, item: Any, response: Response | None, spider: Spider, failure: Failure) -> None:
        self._record_callback_error(ErrorType.ITEM_ERROR, failure, response)

    def spider_error(self, failure: Failure, response: Response | None, spider: Spider) -> None:
        self._record_callback_error(ErrorType.SPIDER_ERROR, failure, response)
        if response is None and self.state is not None:
            # The spider could not even produce its start requests (bad
            # arguments, say): nothing it does after can be trusted. A
            # ValueError's message says it all ("urls: ... is not a URL").
            value = failure.value
            self._fail(" ".join(str(value).split()) if isinstance(value, ValueError) else _one_line(value))
            self._close(CLOSE_START_ERROR)

    def progress_reported(self, field: str, value: Any) -> None:
        state = self.state
        if state is None:
            return
        if field == "stage":
            self._set_stage(value)
        elif field == "expected_total":
            self.expected_total = value
        elif field == "current_page":
            state.current_page = value
        elif field == "pagination_complete":
            state.pagination_complete = value

    def _record_callback_error(
        self, error_type: ErrorType, failure: Failure, response: Response | None
    ) -> None:
        self._record_error(
            JobError(
                error_type=error_type,
                error_message=_one_line(failure.value),
                page_url=response.url if response is not None else None,
                http_status=response.status if response is not None else None,
            )
        )

    def _record_error(self, error: JobError) -> None:
        if self.state is None:
            return
        error.stage = error.stage or self.state.stage
        error.timestamp = error.timestamp or time.time()
        self.errors_by_type[error.error_type] = self.errors_by_type.get(error.error_type, 0) + 1
        # Buffered and written with the next interval's status write, so the
        # store is written per interval, not per error.
        self._new_errors.append(error)


def _one_line(value: object) -> str:
    text = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
    return " ".join(text.split())[:1000]


def _is_robots_txt(request: Request) -> bool:
    # RobotsTxtMiddleware's own requests are not pages of the job.
    return bool(request.meta.get("dont_obey_robotstxt")) and request.url.endswith("/robots.txt")
