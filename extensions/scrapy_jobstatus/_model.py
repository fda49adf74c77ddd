"""The job model: statuses, completion reasons, transitions, errors and the
status document. Pure Python: no Scrapy, no Twisted, no SQL."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ._defaults import DEFAULTS

# A job id is whatever Scrapyd can run: any text but a '/' (Scrapyd's launcher
# names the job's log and items files after it) or a control character, and
# short enough for that file name. It only ever reaches SQL as a bound value.
MAX_JOB_ID_BYTES = 200
_JOB_ID_REFUSED = re.compile(r"[/\x00-\x1f\x7f-\x9f]")


class JobStatus(StrEnum):
    PENDING = "pending"
    # Stopped with its crawl state kept in a JOBDIR: resumable, neither
    # active nor terminal.
    PAUSED = "paused"
    RUNNING = "running"
    # A pause requested: in-flight requests finish, then the job is paused.
    PAUSING = "pausing"
    CANCELLING = "cancelling"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


class CompletionReason(StrEnum):
    DONE = "done"
    TIMEOUT = "timeout"
    ERROR = "error"
    CANCELLED = "cancelled"
    # Cancelled by the stall watchdog: no progress for JOBSTATUS_STALL_TIMEOUT.
    STALLED = "stalled"


class ErrorType(StrEnum):
    DNS_ERROR = "dns_error"
    CONNECTION_ERROR = "connection_error"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    SPIDER_ERROR = "spider_error"
    ITEM_ERROR = "item_error"
    OTHER = "other"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(JobStatus) - TERMINAL_STATUSES - {JobStatus.PAUSED}

# A terminal job never moves again, and nothing leads back to pending or
# running once a job is being cancelled: a cancelled job is never restarted.
# Back to pending: a paused job resumed, a failed attempt retried.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # Completed straight from pending: a crawl that ran unmonitored (the
    # extension disabled in it) and exited normally. Pending again: a crawl
    # that died before it opened its job, retried.
    JobStatus.PENDING: frozenset(
        {
            JobStatus.PENDING,
            JobStatus.PAUSED,
            JobStatus.RUNNING,
            JobStatus.COMPLETED,
            JobStatus.CANCELLED,
            JobStatus.FAILED,
        }
    ),
    # Running again: `scrapy crawl` run again with the job's JOBDIR.
    JobStatus.PAUSED: frozenset(
        {JobStatus.PAUSED, JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.PENDING,
            JobStatus.RUNNING,
            JobStatus.PAUSING,
            JobStatus.PAUSED,
            JobStatus.CANCELLING,
            JobStatus.FINALIZING,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.PAUSING: frozenset(
        {
            JobStatus.PENDING,
            JobStatus.PAUSING,
            JobStatus.PAUSED,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.CANCELLING: frozenset(
        {
            JobStatus.CANCELLING,
            JobStatus.FINALIZING,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.FINALIZING: frozenset(
        {
            JobStatus.PENDING,
            JobStatus.FINALIZING,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

REASON_FOR_STATUS = {
    JobStatus.FAILED: CompletionReason.ERROR,
    JobStatus.CANCELLED: CompletionReason.CANCELLED,
}


def can_transition(current: JobStatus | str, new: JobStatus | str) -> bool:
    return JobStatus(new) in TRANSITIONS[JobStatus(current)]


def sources_of(new: JobStatus | str, crawl: bool = False) -> list[str]:
    """The statuses a job may be in to move to ``new``; for a ``crawl``'s
    write of its running job, never pending nor paused: only starting a job
    takes it out of the queue or a pause, and a crawl whose attempt was
    retried, or that paused, writes no more."""
    held = (JobStatus.PENDING, JobStatus.PAUSED) if crawl else ()
    return [
        str(s) for s, targets in TRANSITIONS.items() if JobStatus(new) in targets and s not in held
    ]


# Scrapy close reasons: limits reached are a normal end, timeouts keep partial
# results, a shutdown is a cancel; anything not listed is fatal.
_DONE_CLOSE_REASONS = {
    "finished",
    "closespider_itemcount",
    "closespider_pagecount",
    "closespider_pagecount_no_item",
}
_TIMEOUT_CLOSE_REASONS = {"closespider_timeout", "closespider_timeout_no_item"}
_CANCEL_CLOSE_REASONS = {"shutdown", "cancelled"}


def reason_for_close(close_reason: str | None) -> CompletionReason:
    if close_reason in _DONE_CLOSE_REASONS:
        return CompletionReason.DONE
    if close_reason in _TIMEOUT_CLOSE_REASONS:
        return CompletionReason.TIMEOUT
    if close_reason in _CANCEL_CLOSE_REASONS:
        return CompletionReason.CANCELLED
    return CompletionReason.ERROR


def status_for_reason(reason: CompletionReason) -> JobStatus:
    if reason in (CompletionReason.CANCELLED, CompletionReason.STALLED):
        return JobStatus.CANCELLED
    if reason is CompletionReason.ERROR:
        return JobStatus.FAILED
    return JobStatus.COMPLETED


# A job's history and its stages_completed keep their first and their last
# HISTORY_KEPT entries, and count those left out between: a spider that
# reports a stage on every page keeps its documents, webhook bodies and store
# rows small.
HISTORY_KEPT = 100


def keep_ends(entries: list[Any], kept: int = HISTORY_KEPT) -> int:
    """Drop the entries between the first and the last ``kept`` of
    ``entries`` (in place); return how many went."""
    extra = len(entries) - 2 * kept
    if extra <= 0:
        return 0
    del entries[kept : kept + extra]
    return extra


# Characters of a value a message quotes: a client's or a user's text never
# makes a long answer or log line.
SHOWN_CHARS = 40


def shown(value: object) -> str:
    """A value as a message quotes it: ``repr``, cut to ``SHOWN_CHARS``."""
    text = str(value)
    return repr(value) if len(text) <= SHOWN_CHARS else repr(text[:SHOWN_CHARS]) + "..."


# Characters a spider's own text keeps in the job's document and webhook
# bodies (a stage name, an event's details, a failure message): whatever a
# spider does, they stay small.
STAGE_CHARS = 200
DETAILS_CHARS = 1000
# Scrapy's own URLLENGTH_LIMIT: a page URL an error names.
URL_CHARS = 2083


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in "..." where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The warning of a crawl that kept only its first JOBSTATUS_PENDING_ERRORS
# errors while its store was unreachable: the job's error report reads the
# number back from it (the document has no field of its own for it).
NOT_RECORDED_WARNING = (
    "{count} errors not recorded: more than {limit} (JOBSTATUS_PENDING_ERRORS)"
    " waited for the job store"
)
_NOT_RECORDED = re.compile(r"(\d+) errors not recorded: ")


def not_recorded_warning(count: int, limit: int) -> str:
    return NOT_RECORDED_WARNING.format(count=count, limit=limit)


def errors_not_recorded(warnings: list[str]) -> int:
    """How many of a job's errors were counted but not recorded, from its
    warnings."""
    for warning in warnings:
        match = _NOT_RECORDED.match(warning)
        if match:
            return int(match.group(1))
    return 0


class InvalidJobId(ValueError):
    pass


def validate_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str):
        raise InvalidJobId(f"invalid job id {job_id!r}: it must be text")
    if not job_id:
        raise InvalidJobId("invalid job id: it must not be empty")
    value = shown(job_id)
    try:
        size = len(job_id.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: undecodable bytes
        raise InvalidJobId(f"invalid job id {value}: it must be valid UTF-8") from None
    if size > MAX_JOB_ID_BYTES:
        raise InvalidJobId(
            f"invalid job id {value}: it must be at most {MAX_JOB_ID_BYTES} bytes in UTF-8"
        )
    if _JOB_ID_REFUSED.search(job_id):
        raise InvalidJobId(f"invalid job id {value}: it must not contain '/' or control characters")
    return job_id


class InvalidSetting(ValueError):
    """A setting's value breaks its rule; the message names the setting."""


def new_job_id() -> str:
    return uuid.uuid1().hex


def pending_job(
    job_id: str,
    *,
    project: str | None,
    spider: str | None,
    node: str | None,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    created_at: float | None = None,
    priority: float = 0.0,
    version: str | None = None,
    webhooks: list[str] | None = None,
    job_webhooks: list[str] | None = None,
    job_webhook_secret: str | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
) -> JobState:
    """A job scheduled and waiting for a free slot: the one way to make one.
    ``node`` None queues it for the first node with a free slot."""
    return JobState(
        priority=priority,
        version=version,
        webhooks=list(webhooks or []),
        job_webhooks=list(job_webhooks or []),
        job_webhook_secret=job_webhook_secret,
        retries=retries,
        retry_delay=retry_delay,
        job_id=job_id,
        project=project,
        spider=spider,
        node=node,
        status=JobStatus.PENDING,
        created_at=time.time() if created_at is None else created_at,
        args=dict(args or {}),
        settings=dict(settings or {}),
    )


def isoformat(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class JobError:
    error_type: str
    error_message: str
    stage: str | None = None
    page_url: str | None = None
    http_status: int | None = None
    timestamp: float = 0.0
    is_recoverable: bool = False
    error_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_id": self.error_id,
            "stage": self.stage,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "page_url": self.page_url,
            "http_status": self.http_status,
            "timestamp": isoformat(self.timestamp),
            "is_recoverable": self.is_recoverable,
        }


@dataclass
class HistoryEvent:
    step: str
    timestamp: float
    status: str
    duration_ms: int | None = None
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "timestamp": isoformat(self.timestamp),
            "duration_ms": self.duration_ms,
            "status": self.status,
            "details": self.details,
        }


@dataclass
class JobState:
    """What a job knows of itself; the store persists it, the status document
    is built from it."""

    job_id: str
    spider: str | None = None
    project: str | None = None
    node: str | None = None
    status: JobStatus = JobStatus.PENDING
    message: str | None = None
    completion_reason: str | None = None
    close_reason: str | None = None
    error_message: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    updated_at: float | None = None
    cancel_requested_at: float | None = None
    estimated_completion: float | None = None
    timeout: float | None = None
    progress: float | None = None
    stage: str | None = None
    stages_completed: list[str] = field(default_factory=list)
    # Stages and history events left out between the first and the last
    # HISTORY_KEPT (the store counts the history's, as it drops them).
    stages_omitted: int = 0
    history_omitted: int = 0
    total_pages_crawled: int = 0
    total_documents_found: int = 0
    requests_pending: int = 0
    requests_in_flight: int = 0
    responses_failed: int = 0
    responses_finished: int = 0
    error_count: int = 0
    current_page: int | None = None
    pagination_complete: bool | None = None
    warnings: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    interval: float | None = None
    # Scrapyd's queue: the claim order, and the egg version to run.
    priority: float = 0.0
    version: str | None = None
    # The URLs called on the job's events (Standard Webhooks): the node's
    # and the project's receivers, signed with their webhook_secret.
    webhooks: list[str] = field(default_factory=list)
    # The job's own receivers (schedule.json's ``webhook``), signed with the
    # job's own key, never the node's: a receiver that can verify could
    # otherwise forge events to every other one. The key is never shown.
    job_webhooks: list[str] = field(default_factory=list)
    job_webhook_secret: str | None = field(default=None, repr=False)
    # Pause and resume: the crawl's JOBDIR (None: the job cannot be paused
    # while it runs), a pause request (like cancel_requested_at, polled by
    # the crawl), and the feeds each run of the job wrote.
    jobdir: str | None = None
    pause_requested_at: float | None = None
    feeds: list[dict[str, Any]] = field(default_factory=list)
    # Seconds the job ran before its current run (its runs before a pause).
    ran_for: float = 0.0
    # Automatic retries: the attempt under way (from 1), the attempts that
    # ended (dicts of ``attempt_record``), how many retries the job may
    # have and their base delay, when the current one may start, and
    # whether the crawl's own failure may be retried (a failure ratio above
    # the threshold; bad arguments or settings may not).
    attempt: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    attempt_started_at: float | None = None
    retries: int | None = None
    retry_delay: float | None = None
    run_after: float | None = None
    retryable: bool = False
    # The periodic schedule that made the job and its tick (a run asked
    # for at once: that moment); a one-off job's overlap key
    # (schedule.json's overlap_key).
    schedule: str | None = None
    scheduled_for: float | None = None
    overlap_key: str | None = None

    @property
    def failure_ratio(self) -> float:
        if not self.responses_finished:
            return 0.0
        return self.responses_failed / self.responses_finished

    def to_document(
        self, errors: list[JobError], history: list[HistoryEvent], now: float
    ) -> dict[str, Any]:
        """The status document; a listing's has no errors nor history."""
        status = shown_status(self)
        active = status.is_active
        started = self.started_at
        end = now if active else self.completed_at
        elapsed = None if started is None or end is None else round(end - started, 3)
        return {
            "job_id": self.job_id,
            "project": self.project,
            "spider": self.spider,
            "node": self.node,
            "status": str(status),
            "is_active": active,
            "message": (self.message if status is self.status else None) or default_message(status),
            "completion_reason": self.completion_reason,
            "close_reason": self.close_reason,
            "error_message": self.error_message,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "completed_at": isoformat(self.completed_at),
            "updated_at": isoformat(self.updated_at),
            "cancel_requested_at": isoformat(self.cancel_requested_at),
            "estimated_completion": isoformat(self.estimated_completion) if active else None,
            # A job waiting in the queue (for its retry, say) is not running.
            "running_time": elapsed if active and status is not JobStatus.PENDING else None,
            "processing_time": None if active else elapsed,
            "timeout": self.timeout,
            "progress": self.progress,
            "stage": self.stage,
            "stages_completed": list(self.stages_completed),
            "stages_omitted": self.stages_omitted,
            "total_pages_crawled": self.total_pages_crawled,
            "total_documents_found": self.total_documents_found,
            "requests_pending": self.requests_pending,
            "requests_in_flight": self.requests_in_flight,
            "responses_failed": self.responses_failed,
            "failure_ratio": round(self.failure_ratio, 4),
            "current_page": self.current_page,
            "pagination_complete": self.pagination_complete,
            "error_count": self.error_count,
            "has_errors": self.error_count > 0,
            "errors": [e.to_dict() for e in errors],
            "warnings": list(self.warnings),
            "history": [h.to_dict() for h in history],
            "history_omitted": self.history_omitted,
            "args": dict(self.args),
            "webhooks": [
                redact_url(url) for url in dict.fromkeys([*self.webhooks, *self.job_webhooks])
            ],
            "pausable": self.jobdir is not None,
            "feeds": [{**f, "uri": redact_url(f["uri"])} for f in self.feeds],
            "attempt": self.attempt,
            "attempts": [
                _attempt_document(a) for a in [*self.attempts, attempt_record(self, status)]
            ],
            "retries": self.retries or 0,
            "retry_at": isoformat(self.run_after) if status is JobStatus.PENDING else None,
            "schedule": self.schedule,
            "scheduled_for": isoformat(self.scheduled_for),
        }


def shown_status(state: JobState) -> JobStatus:
    """The status a reader is shown: a running job with a cancel or pause
    request is cancelling or pausing already (the crawl picks the request up
    within one interval), and a pausing one asked to cancel, cancelling."""
    status = JobStatus(state.status)
    if status in (JobStatus.RUNNING, JobStatus.PAUSING) and state.cancel_requested_at is not None:
        return JobStatus.CANCELLING
    if status is JobStatus.RUNNING and state.pause_requested_at is not None:
        return JobStatus.PAUSING
    return status


# The status of an attempt whose job another node took over, its crawl's
# lease on the job having run out (its node died, or was cut off from the
# store); the job's own status is never this.
SUPERSEDED = "superseded"


def attempt_record(state: JobState, status: JobStatus | None = None) -> dict[str, Any]:
    """The current attempt of a job, as the ``attempts`` list keeps it."""
    status = status or state.status
    return {
        "attempt": state.attempt,
        "started_at": state.attempt_started_at,
        "ended_at": state.completed_at if status in TERMINAL_STATUSES else None,
        "status": str(status),
        "completion_reason": state.completion_reason,
        "error_message": state.error_message,
        "node": state.node,
    }


def _attempt_document(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **record,
        "started_at": isoformat(record["started_at"]),
        "ended_at": isoformat(record["ended_at"]),
    }


# JOBSTATUS_RETRY_DELAY's default: a failed attempt's first retry waits about
# a minute.
JOB_RETRY_DELAY: float = DEFAULTS["JOBSTATUS_RETRY_DELAY"]
MAX_RETRY_DELAY = 3600.0


def backoff(base: float, attempt: int, jitter: float, cap: float = MAX_RETRY_DELAY) -> float:
    """The delay before try ``attempt + 1``: ``base`` doubling with each
    attempt, at most ``cap``, with equal jitter (``jitter`` in [0, 1)), so
    that what failed together does not come back all at once."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + jitter * delay / 2


def retry_left(state: JobState) -> bool:
    """Whether a failed attempt of the job is retried."""
    return state.attempt <= (state.retries or 0)


def queue_retry(state: JobState, now: float, jitter: float) -> float:
    """A failed attempt ends and the job waits in the queue for the next:
    the same job id, its history and errors kept. Returns the delay."""
    state.attempts.append(attempt_record(state))
    delay = backoff(
        state.retry_delay if state.retry_delay is not None else JOB_RETRY_DELAY,
        state.attempt,
        jitter,
    )
    state.attempt += 1
    state.attempt_started_at = None
    state.ran_for = 0.0  # it starts over
    state.run_after = now + delay
    requeue(state, f"Attempt {state.attempt - 1} failed; attempt {state.attempt} is queued.")
    return delay


def requeue(state: JobState, message: str) -> None:
    """Back to the queue, for the first node with a free slot."""
    state.status = JobStatus.PENDING
    state.message = message
    state.node = None
    state.pid = None
    state.completion_reason = state.close_reason = state.error_message = None
    state.completed_at = None
    state.pause_requested_at = None
    state.requests_in_flight = 0
    state.retryable = False


def pause_refusal(job_id: str, status: JobStatus) -> str:
    """Why a job (shown as ``status``) cannot be paused."""
    if status is JobStatus.RUNNING:
        return (
            f"job '{job_id}' runs without a JOBDIR and cannot be paused: crawl with "
            "-s JOBDIR=DIR, or on Scrapyd set JOBSTATUS_PAUSABLE (or pausable = on in "
            "[jobstatus] of scrapyd.conf)"
        )
    return f"job '{job_id}' is {status}: only a pending or running job can be paused"


def resume_refusal(job_id: str, status: JobStatus) -> str:
    """Why a job (shown as ``status``) cannot be resumed."""
    if status is JobStatus.PAUSING:
        return f"job '{job_id}' is pausing: resume it once it is paused"
    return f"job '{job_id}' is {status}: only a paused job can be resumed"


def redact_url(url: str) -> str:
    """A URL as it may be shown: the password of its user part, and the
    values of its query (where tokens go), as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at:
        name = user.partition(":")[0]
        netloc = f"{name}:***@{host}" if ":" in user else f"***@{host}"
    if question:
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(
            f"{k}={'***' if eq else ''}".rstrip("=") if eq else k for k, eq, _ in pairs
        )
    return f"{scheme}://{netloc}{slash}{path}{question}{query}"


_MESSAGES = {
    JobStatus.PENDING: "The job is waiting for a free slot.",
    JobStatus.PAUSED: "The job is paused: resume it to continue where it stopped.",
    JobStatus.RUNNING: "The job is crawling.",
    JobStatus.PAUSING: "Pause requested: in-flight requests are finishing.",
    JobStatus.CANCELLING: "Cancellation requested: in-flight requests are finishing.",
    JobStatus.FINALIZING: "All responses processed: results are being written.",
    JobStatus.COMPLETED: "The job completed.",
    JobStatus.FAILED: "The job failed.",
    JobStatus.CANCELLED: "The job was cancelled.",
}


def default_message(status: JobStatus) -> str:
    return _MESSAGES[status]
