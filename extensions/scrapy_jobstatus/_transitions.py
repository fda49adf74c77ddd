"""The state machine of a job's row: how a crawl starts, pauses, resumes,
retries and ends a stored job, and the webhooks a change calls. Pure: it
changes a ``JobState`` and says what to record; the store writes it."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ._model import (
    REASON_FOR_STATUS,
    TERMINAL_STATUSES,
    CompletionReason,
    HistoryEvent,
    JobState,
    JobStatus,
    isoformat,
    queue_retry,
    requeue,
    retry_left,
    shown_status,
)
from ._store import UNMONITORED_WARNING

STARTED_OVER_WARNING = (
    "started over: the crawl state of the paused run was not found (a node that is not "
    "pausable, or nodes of a cluster that do not share one jobdirs directory)"
)
# What a crawl resuming from its JOBDIR carries over from the run before:
# it goes on from there. A retry without a resumable JOBDIR starts over.
_CARRIED = (
    "total_pages_crawled",
    "total_documents_found",
    "responses_failed",
    "responses_finished",
    "progress",
    "stages_completed",
    "stages_omitted",
    "current_page",
    "pagination_complete",
    "warnings",
    "ran_for",
)


def take_over_pending(state: JobState, pending: JobState, resume: bool = False) -> None:
    """A crawl starting a pending (or paused) job keeps what scheduling
    recorded, and what earlier runs and attempts of the job did: its
    attempts, its errors' count, its feeds; its counters too when it
    resumes from its JOBDIR."""
    state.created_at = pending.created_at
    # This run's start begins the attempt, unless it resumes one.
    state.attempt_started_at = pending.attempt_started_at or state.started_at
    state.started_at = pending.started_at or state.started_at
    state.attempt = pending.attempt
    state.attempts = pending.attempts
    state.error_count = pending.error_count
    state.feeds = pending.feeds
    if pending.retries is not None:
        state.retries = pending.retries
    if pending.retry_delay is not None:
        state.retry_delay = pending.retry_delay
    if resume:
        for name in _CARRIED:
            setattr(state, name, getattr(pending, name))
    elif pending.ran_for:
        # Paused before, but this crawl has no state to go on from.
        state.warnings.append(STARTED_OVER_WARNING)
    state.project = state.project or pending.project
    state.args = state.args or pending.args
    state.settings = state.settings or pending.settings
    state.priority = pending.priority
    state.version = state.version or pending.version
    # The crawl's own URLs (JOBSTATUS_WEBHOOKS) and those scheduling gave.
    state.webhooks = list(dict.fromkeys([*pending.webhooks, *state.webhooks]))
    state.job_webhooks = pending.job_webhooks
    state.job_webhook_secret = pending.job_webhook_secret
    state.schedule = pending.schedule
    state.scheduled_for = pending.scheduled_for
    state.overlap_key = pending.overlap_key


def startable(stored: JobState, resume: bool) -> bool:
    """Whether a crawl may start the stored job: a pending one, or a paused
    one when the crawl goes on from its JOBDIR (``scrapy crawl`` run again):
    a crawl claimed before its job was paused does not start it. A job id
    names one job: one that ran, runs or was cancelled is not run again."""
    if stored.status is JobStatus.PAUSED:
        return resume
    return stored.status is JobStatus.PENDING


def end_for_crawl(
    state: JobState, status: JobStatus, message: str, now: float, *, unstarted: bool
) -> list[HistoryEvent]:
    """End an active job for its crawl, which cannot (it died, or ran
    unmonitored); a failed attempt with a retry left is queued again."""
    end_state(state, status, message, now)
    if status is JobStatus.FAILED:
        state.error_message = message
    elif unstarted:
        state.warnings.append(UNMONITORED_WARNING)
    step = "failed" if status is JobStatus.FAILED else "finished unmonitored"
    events = [history_event(step, now, status, message)]
    # A job asked to cancel (cancel.json's KILL, say) is never retried.
    if status is JobStatus.FAILED and state.cancel_requested_at is None and retry_left(state):
        events += retry(state, now)
    return events


def history_event(step: str, now: float, status: JobStatus, details: str) -> HistoryEvent:
    return HistoryEvent(step=step, timestamp=now, status=str(status), details=details or None)


def keeps_pause_request(status: JobStatus) -> bool:
    """A pause request lasts while the job runs; written any other status,
    the job drops it (in the same write)."""
    return status in (JobStatus.RUNNING, JobStatus.PAUSING)


# The statuses a crawl ends with that ``settle_end`` may change.
SETTLED_STATUSES = (JobStatus.PAUSED, JobStatus.FAILED)


def settle_end(state: JobState, stored: Mapping[str, Any], now: float) -> list[HistoryEvent]:
    """How a job the crawl ends paused or failed is stored, given its
    ``stored`` row's requests, and the events that says: paused after a
    cancel request, cancelled; paused by its node's shutdown, queued again;
    failed with a retry left, queued for it."""
    status = state.status
    cancel_requested = stored["cancel_requested_at"] is not None
    if status is JobStatus.PAUSED and cancel_requested:
        end_state(state, JobStatus.CANCELLED, "The job was cancelled while it paused.", now)
        return [history_event("cancelled", now, JobStatus.CANCELLED, "cancelled while pausing")]
    if status is JobStatus.PAUSED and stored["pause_requeue"]:
        requeue(state, "Paused by its node's shutdown: queued to resume.")
        return [
            history_event(
                "queued again", now, JobStatus.PENDING, "to resume after the node's shutdown"
            )
        ]
    # A job asked to cancel is never retried.
    if (
        status is JobStatus.FAILED
        and not cancel_requested
        and state.retryable
        and retry_left(state)
    ):
        return retry(state, now)
    return []


def pause(state: JobState, now: float) -> tuple[JobStatus, list[HistoryEvent]]:
    """What a pause request does: a pending job is paused at once (``state``
    changed, to be written); a running one with a JOBDIR is to pause
    (``pausing``: the caller records the request). Anything else stays as it
    is, shown as it is."""
    shown = shown_status(state)
    if shown is JobStatus.PENDING:
        state.status = JobStatus.PAUSED
        state.message = "Paused before it started."
        state.node = None
        state.updated_at = now
        return JobStatus.PAUSED, [
            history_event("paused", now, JobStatus.PAUSED, "paused while pending")
        ]
    if shown is JobStatus.RUNNING and state.jobdir is not None:
        return JobStatus.PAUSING, []
    return shown, []


def resume(state: JobState, now: float) -> tuple[JobStatus, list[HistoryEvent]]:
    """What a resume request does: a paused job goes back to the queue
    (``state`` changed, to be written); a pause not yet taken up by its crawl
    is withdrawn (``running``: the caller clears the request)."""
    shown = shown_status(state)
    if shown is JobStatus.PAUSED:
        requeue(state, "Resumed: waiting for a free slot.")
        state.run_after = None
        state.updated_at = now
        return JobStatus.PENDING, [history_event("resume requested", now, JobStatus.PENDING, "")]
    if shown is JobStatus.PAUSING and state.status is JobStatus.RUNNING:
        return JobStatus.RUNNING, [
            history_event("pause withdrawn", now, JobStatus.RUNNING, "resumed before it paused")
        ]
    return shown, []


def retry(state: JobState, now: float) -> list[HistoryEvent]:
    """A failed attempt queued again; its event."""
    failed = state.error_message
    delay = queue_retry(state, now, random.random())  # noqa: S311 (jitter, not a secret)
    details = f"attempt {state.attempt} in {delay:.1f} s; attempt {state.attempt - 1}: {failed}"
    return [history_event("retry", now, JobStatus.PENDING, details)]


def end_state(state: JobState, status: JobStatus, message: str, now: float) -> None:
    state.status = status
    state.message = message
    state.completion_reason = str(REASON_FOR_STATUS.get(status, CompletionReason.DONE))
    state.completed_at = now
    state.updated_at = now
    state.requests_in_flight = 0


WEBHOOK_STATUSES = TERMINAL_STATUSES | {JobStatus.PAUSED}
# History steps that call the job's webhooks, besides its status changes.
WEBHOOK_STEPS = {"stalled": "job.stalled"}


def webhook_types(status: JobStatus | None, events: Iterable[HistoryEvent] = ()) -> list[str]:
    """The webhook events of a write: the status it moves the job to, and
    the history steps that have one."""
    types = [f"job.{status}"] if status in WEBHOOK_STATUSES else []
    types += [WEBHOOK_STEPS[e.step] for e in events if e.step in WEBHOOK_STEPS]
    return types


def webhook_targets(state: JobState) -> list[tuple[str, str | None]]:
    """Each receiver of the job with the key its deliveries are signed
    with: the job's own key for its own receivers, None (the deliverer's
    webhook_secret) for the others. A URL that is both gets both."""
    return [
        *((url, None) for url in state.webhooks),
        *((url, state.job_webhook_secret) for url in state.job_webhooks),
    ]


def webhook_body(event_type: str, now: float, document: dict[str, Any]) -> str:
    """The Standard Webhooks envelope, fixed once: every attempt sends (and
    signs) the same bytes."""
    # A receiver is not shown the other receivers' URLs.
    data = {k: v for k, v in document.items() if k != "webhooks"}
    return json.dumps(
        {"type": event_type, "timestamp": isoformat(now), "data": data},
        separators=(",", ":"),
    )


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"
