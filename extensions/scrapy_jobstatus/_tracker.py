"""The job tracker: what a crawl knows of its job, and the decisions it takes
(progress, estimate, timeout, stall, cancel, failure, the final status).

Plain Python: no Scrapy, no Twisted. The clock is injected, so the
arithmetic is tested without a crawl, as Scrapy's AutoThrottle keeps its
delay arithmetic apart from its signal handlers. The Scrapy extension only
translates signals into these calls and decisions into engine calls.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._defaults import DEFAULTS
from ._model import (
    DETAILS_CHARS,
    STAGE_CHARS,
    URL_CHARS,
    CompletionReason,
    HistoryEvent,
    JobError,
    JobState,
    JobStatus,
    bounded,
    errors_not_recorded,
    isoformat,
    keep_ends,
    not_recorded_warning,
    reason_for_close,
    status_for_reason,
)

if TYPE_CHECKING:
    from collections.abc import Callable

FORCED_STOP_WARNING = "forced stop: in-flight requests were dropped and their results may be lost"
# Samples of (time, finished work) kept for the recent rate.
RATE_WINDOW = 30
# JOBSTATUS_STALL_ACTION: what a stall does besides its warning.
STALL_WARN = "warn"
STALL_CANCEL = "cancel"
STALL_ACTIONS = (STALL_WARN, STALL_CANCEL)


def stall_warning(stall_timeout: float) -> str:
    return f"stalled: no progress for {stall_timeout:g} s"


class JobTracker:
    def __init__(
        self,
        state: JobState,
        *,
        failure_ratio: float = 0.5,
        stall_timeout: float = 0.0,
        stall_action: str = STALL_WARN,
        pending_errors: int = DEFAULTS["JOBSTATUS_PENDING_ERRORS"],
        clock: Callable[[], float] = time.time,
    ):
        self.state = state
        # Errors kept for the store's next write (JOBSTATUS_PENDING_ERRORS):
        # beyond, while the store is unreachable, they are counted only.
        self.pending_errors = pending_errors
        self.errors_not_recorded = errors_not_recorded(state.warnings)
        # Whether this run has had to leave errors unrecorded.
        self.dropped_errors = False
        # Errors taken by the write under way: they count against the limit.
        self._errors_writing = 0
        self.failure_ratio = failure_ratio
        # The stall watchdog: off at 0.
        self.stall_timeout = stall_timeout
        self.stall_action = stall_action
        self.clock = clock
        self.expected_total: int | None = None
        self.end_reason: CompletionReason | None = None
        self.failure_message: str | None = None
        self.closing = False
        # A pause under way: the crawl closes, its state kept in its JOBDIR,
        # and the job ends paused instead of terminal.
        self.pausing = False
        # The crawl has closed: the job is finalizing, its end decided.
        self.ended = False
        self.forced = False
        # The job is no longer this crawl's: another attempt holds it.
        self.lost = False
        self.errors_by_type: dict[str, int] = {}
        # The history as the store keeps it (its first and last events): a
        # record lost with its store file is written again from it.
        self.history: list[HistoryEvent] = []
        self._unsaved_errors: list[JobError] = []
        self._unsaved_events: list[HistoryEvent] = []
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW)
        # Since when the crawl has made no progress while it had work: the
        # last response, item or error, or the last tick that found no work.
        self.progress_at = clock()
        # When this run of the job began (a resumed job has several).
        self.run_started_at = clock()
        # Whether the current stall was warned of (each stall is, once).
        self.stalled = False
        self.stalls = 0

    # -- counting ----------------------------------------------------------------

    def response_received(self, url: str, error: JobError | None) -> None:
        self._progressed()
        state = self.state
        state.total_pages_crawled += 1
        state.responses_finished += 1
        if state.total_pages_crawled == 1:
            self.event("first response", details=url)
        if error is not None:
            state.responses_failed += 1
            self.record_error(error)

    def download_failed(self, error: JobError) -> None:
        self.state.responses_finished += 1
        self.state.responses_failed += 1
        self.record_error(error)

    def item_scraped(self) -> None:
        self._progressed()
        self.state.total_documents_found += 1

    def record_error(self, error: JobError) -> None:
        self._progressed()
        error.error_message = bounded(error.error_message, DETAILS_CHARS)
        if error.page_url is not None:
            error.page_url = bounded(error.page_url, URL_CHARS)
        error.stage = error.stage or self.state.stage
        error.timestamp = error.timestamp or self.clock()
        self.state.error_count += 1
        self.errors_by_type[error.error_type] = self.errors_by_type.get(error.error_type, 0) + 1
        # Written once, with the next write of the job.
        if len(self._unsaved_errors) + self._errors_writing < self.pending_errors:
            self._unsaved_errors.append(error)
        else:
            self._not_recorded(1)

    def report(self, field: str, value: Any) -> None:
        """What the spider tells of its progress (the spider-facing API)."""
        if field == "stage":
            self.set_stage(value)
        elif field == "expected_total":
            self.expected_total = value
        elif field == "current_page":
            self.state.current_page = value
        elif field == "pagination_complete":
            self.state.pagination_complete = value

    def set_stage(self, stage: str) -> None:
        # A spider's text: kept short in every document and webhook body.
        stage = bounded(str(stage), STAGE_CHARS)
        state = self.state
        if stage != state.stage:
            if state.stage:
                self._stage_done(state.stage)
            state.stage = stage
            self.event(f"stage {stage}")

    def event(self, step: str, details: str | None = None) -> None:
        now = self.clock()
        last = self.history[-1].timestamp if self.history else None
        event = HistoryEvent(
            step=step,
            timestamp=now,
            status=str(self.state.status),
            duration_ms=0 if last is None else round((now - last) * 1000),
            details=None if details is None else bounded(details, DETAILS_CHARS),
        )
        self.history.append(event)
        self.state.history_omitted += keep_ends(self.history)
        self._unsaved_events.append(event)

    def _stage_done(self, stage: str) -> None:
        self.state.stages_completed.append(stage)
        self.state.stages_omitted += keep_ends(self.state.stages_completed)

    # -- progress ----------------------------------------------------------------

    def refresh(
        self, requests_pending: int, requests_in_flight: int, in_callbacks: int = 0
    ) -> None:
        """Take the crawl's frontier and update progress and the estimate;
        ``in_callbacks``: responses whose callbacks still run, whose requests
        are still to come."""
        state = self.state
        state.requests_pending = requests_pending
        state.requests_in_flight = requests_in_flight
        now = self.clock()
        if self.expected_total:
            done = state.total_documents_found
            remaining = max(0, self.expected_total - done)
            progress: float | None = min(100.0, 100.0 * done / self.expected_total)
        else:
            done = state.responses_finished
            remaining = requests_pending + requests_in_flight + in_callbacks
            progress = 100.0 * done / (done + remaining) if done + remaining else None
            if progress is not None:
                # An estimate from the frontier: never backwards, never 100
                # before the end.
                progress = min(99.0, max(progress, state.progress or 0.0))
        state.progress = None if progress is None else round(progress, 2)
        self._rate_samples.append((now, done))
        state.estimated_completion = self._estimate_completion(now, remaining)

    def _progressed(self) -> None:
        """A response received, an item scraped or an error recorded: the
        crawl moves, and a stall is over."""
        self.progress_at = self.clock()
        self.stalled = False

    def _estimate_completion(self, now: float, remaining: int) -> float | None:
        if len(self._rate_samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._rate_samples[0], self._rate_samples[-1]
        if t1 <= t0 or d1 <= d0:
            return None
        eta = now + remaining / ((d1 - d0) / (t1 - t0))
        state = self.state
        if state.timeout:
            eta = min(eta, self.run_started_at + state.timeout - state.ran_for)
        return eta

    # -- decisions -----------------------------------------------------------------

    def fail(self, message: str, retryable: bool = False) -> None:
        """The job fails; ``retryable``: a new attempt may succeed (a failure
        ratio above the threshold), where bad arguments or settings may not."""
        self.end_reason = CompletionReason.ERROR
        self.failure_message = bounded(message, DETAILS_CHARS)
        self.state.retryable = retryable

    def timeout_reached(self) -> bool:
        """Whether the timeout stops the crawl (it does unless it is closing)."""
        if self.closing:
            return False
        self.end_reason = CompletionReason.TIMEOUT
        self.event("timeout reached", details=f"after {self.state.timeout or 0:g} s")
        self.closing = True
        return True

    def stall_check(self) -> str | None:
        """At each tick, after ``refresh``: the stall watchdog's decision.
        None, or a new stall and what it does: ``warn``, or ``cancel`` (the
        crawl stops, as on a cancel request, and the job ends ``cancelled``
        with the completion reason ``stalled``).

        The job is stalled when it has made no progress (no response, item
        nor error) for ``stall_timeout`` seconds while requests are pending
        or in flight; a job with no work is finishing or idle, never
        stalled, and its stall clock starts again. A stall is warned of once
        (the warning, a ``stalled`` event); progress ends it, and the next
        stall is warned of again with a new event. A closing job is left to
        its grace period."""
        if not self.stall_timeout or self.closing:
            return None
        state = self.state
        now = self.clock()
        pending, in_flight = state.requests_pending, state.requests_in_flight
        if not pending and not in_flight:
            self.progress_at = now
            self.stalled = False
            return None
        if self.stalled or now - self.progress_at < self.stall_timeout:
            return None
        self.stalled = True
        self.stalls += 1
        warning = stall_warning(self.stall_timeout)
        if warning not in state.warnings:
            state.warnings.append(warning)
        self.event(
            "stalled",
            details=(
                f"no progress since {isoformat(self.progress_at)}: "
                f"{pending} requests pending, {in_flight} in flight"
            ),
        )
        if self.stall_action == STALL_CANCEL:
            self.cancel(now, "stall watchdog", reason=CompletionReason.STALLED)
            return STALL_CANCEL
        return STALL_WARN

    def cancel(
        self,
        requested_at: float,
        source: str,
        force: bool = False,
        reason: CompletionReason = CompletionReason.CANCELLED,
    ) -> bool:
        """Whether a cancel request stops the crawl (it does unless it is
        closing already). ``reason``: the completion reason it ends with."""
        if self.closing:
            return False
        self.end_reason = reason
        self.state.cancel_requested_at = requested_at
        self._set_status(JobStatus.CANCELLING)
        self.event("cancel requested", details=f"by {source}" + (", forced" if force else ""))
        self.closing = True
        return True

    def pause(self, requested_at: float, source: str) -> bool:
        """Whether a pause request stops the crawl (it does unless it is
        closing already); the job ends paused, resumable from its JOBDIR."""
        if self.closing:
            return False
        self.pausing = True
        self.state.pause_requested_at = requested_at
        self._set_status(JobStatus.PAUSING)
        self.event("pause requested", details=f"by {source}")
        self.closing = True
        return True

    def superseded(self) -> bool:
        """The job is no longer this crawl's: another attempt holds it (its
        lease ran out while the crawl was cut off from the store), or
        another process ended it. Whether this stops the crawl (it does
        unless it is closing already); what it writes is refused."""
        if self.lost:
            return False
        self.lost = True
        if self.closing:
            return False
        self.end_reason = CompletionReason.ERROR
        self.failure_message = "superseded: another attempt holds the job"
        self.closing = True
        return True

    def resumed(self, resumed: bool) -> None:
        """The job started: a new attempt, a run going on from its JOBDIR, or
        the first run."""
        state = self.state
        if resumed:
            self.event(
                "resumed",
                details=(
                    f"from its JOBDIR, after {state.total_pages_crawled} pages and "
                    f"{state.total_documents_found} items"
                ),
            )
        elif state.attempt > 1:
            self.event("retry started", details=f"attempt {state.attempt}, from the start")

    def forced_stop(self, dropped: int) -> None:
        self.forced = True
        self.state.warnings.append(FORCED_STOP_WARNING)
        self.event("forced stop", details=f"{dropped} in-flight requests dropped")

    def exited(self, requested_at: float, source: str) -> None:
        """The process exits at once, before the crawl closed (a third
        Ctrl-C): the job ends cancelled, even one that was pausing, whose
        crawl state Scrapy has not written to its JOBDIR."""
        if not self.closing:
            self.cancel(requested_at, source, force=True)
        self.pausing = False
        self.end_reason = CompletionReason.CANCELLED
        if self.state.cancel_requested_at is None:
            self.state.cancel_requested_at = requested_at
        self.event("exited", details=f"by {source}: the process exits at once")

    def closed(self, close_reason: str) -> JobStatus:
        """The crawl closed: decide how the job ends and move to finalizing.
        Returns the status the job is ending with."""
        state = self.state
        self.closing = self.ended = True
        # A spider may name its own (CloseSpider's reason).
        close_reason = bounded(str(close_reason), STAGE_CHARS)
        state.close_reason = close_reason
        if self.pausing:
            state.requests_in_flight = 0
            self.event("closing", details=f"close reason {close_reason}: pausing")
            return JobStatus.PAUSED
        if self.end_reason is None:
            self.end_reason = reason_for_close(close_reason)
            if self.end_reason is CompletionReason.ERROR and not self.failure_message:
                self.failure_message = f"The crawl closed with reason {close_reason!r}."
            if self.end_reason is CompletionReason.CANCELLED and state.cancel_requested_at is None:
                state.cancel_requested_at = self.clock()
        self._check_failure_ratio()
        state.requests_in_flight = 0
        final = self.final_status()
        if final is JobStatus.COMPLETED and self.end_reason is CompletionReason.DONE:
            state.progress = 100.0
        self.event("closing", details=f"close reason {close_reason}")
        self.set_stage("finalizing")
        self._set_status(JobStatus.FINALIZING)
        return final

    def final_status(self) -> JobStatus:
        if self.pausing:
            return JobStatus.PAUSED
        return status_for_reason(self.end_reason or CompletionReason.DONE)

    def finish(self) -> None:
        """Every feed is closed: the job ends, or is paused."""
        state = self.state
        final = self.final_status()
        if final is JobStatus.PAUSED:
            state.ran_for += self.clock() - self.run_started_at
            state.estimated_completion = None
            self._set_status(final)
            state.message = (
                "The job is paused; its crawl state is kept in its JOBDIR: "
                "resume it to continue where it stopped."
            )
            self.event("paused", details=f"{state.requests_pending} requests left to crawl")
            return
        if state.stage:
            self._stage_done(state.stage)
        state.stage = None
        state.completion_reason = str(self.end_reason or CompletionReason.DONE)
        state.completed_at = self.clock()
        state.estimated_completion = None
        self._set_status(final)
        if final is JobStatus.FAILED:
            state.error_message = self.failure_message
            state.message = f"The job failed: {self.failure_message}"
        elif self.end_reason is CompletionReason.STALLED:
            state.message = (
                f"The job stalled (no progress for {self.stall_timeout:g} s) and was "
                "cancelled; the results of finished requests were kept."
            )
        elif final is JobStatus.CANCELLED:
            state.message = "The job was cancelled; the results of finished requests were kept."
        elif self.end_reason is CompletionReason.TIMEOUT:
            state.message = "The job reached its timeout; partial results were kept."
        else:
            state.message = "The job completed."
        self.event("finished", details=state.message)

    def _check_failure_ratio(self) -> None:
        state = self.state
        if self.end_reason is not CompletionReason.DONE or not state.responses_finished:
            return
        if state.failure_ratio > self.failure_ratio:
            self.fail(
                f"{state.responses_failed} of {state.responses_finished} responses failed "
                f"({state.failure_ratio:.0%}), above JOBSTATUS_FAILURE_RATIO={self.failure_ratio}.",
                retryable=True,
            )

    def _set_status(self, status: JobStatus) -> None:
        if self.state.status is not status:
            self.state.status = status
            self.state.message = None

    # -- what a store write carries ----------------------------------------------

    def take_unsaved(self) -> tuple[list[JobError], list[HistoryEvent]]:
        errors, events = self._unsaved_errors, self._unsaved_events
        self._unsaved_errors, self._unsaved_events = [], []
        self._errors_writing = len(errors)
        return errors, events

    def unsaved_written(self) -> None:
        """The write of what ``take_unsaved`` gave went through."""
        self._errors_writing = 0

    def put_back_unsaved(self, errors: list[JobError], events: list[HistoryEvent]) -> None:
        """A write failed: its errors and events go with the next one; the
        oldest ``pending_errors`` errors are kept, the others counted."""
        self._errors_writing = 0
        self._unsaved_errors[:0] = errors
        self._unsaved_events[:0] = events
        extra = len(self._unsaved_errors) - self.pending_errors
        if extra > 0:
            del self._unsaved_errors[self.pending_errors :]
            self._not_recorded(extra)

    def _not_recorded(self, count: int) -> None:
        """``count`` more errors counted but never recorded: the job's
        warning says how many."""
        warnings = self.state.warnings
        self.dropped_errors = True
        self.errors_not_recorded += count
        new = not_recorded_warning(self.errors_not_recorded, self.pending_errors)
        for i, warning in enumerate(warnings):
            if errors_not_recorded([warning]):
                warnings[i] = new
                break
        else:
            warnings.append(new)

    def stats(self) -> dict[str, int | float | str]:
        """The job's figures as Scrapy stats: numbers and strings only."""
        state = self.state
        stats: dict[str, int | float | str] = {
            "jobstatus/status": str(state.status),
            "jobstatus/pages_crawled": state.total_pages_crawled,
            "jobstatus/documents_found": state.total_documents_found,
            "jobstatus/responses_failed": state.responses_failed,
            "jobstatus/failure_ratio": round(state.failure_ratio, 4),
            "jobstatus/requests_pending": state.requests_pending,
            "jobstatus/requests_in_flight": state.requests_in_flight,
        }
        if state.progress is not None:
            stats["jobstatus/progress"] = state.progress
        if self.stalls:
            stats["jobstatus/stalls"] = self.stalls
        for error_type, count in self.errors_by_type.items():
            stats[f"jobstatus/errors/{error_type}"] = count
        if self.ended:
            # From the close on: the status the job is ending with.
            stats["jobstatus/status"] = str(self.final_status())
            if not self.pausing:
                stats["jobstatus/completion_reason"] = str(self.end_reason)
        return stats
