"""A job as table rows, the same for every backend: the fields kept as
columns (to filter, sort and update), the others in a compact JSON text."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any

from ._model import (
    REASON_FOR_STATUS,
    TERMINAL_STATUSES,
    CompletionReason,
    HistoryEvent,
    JobError,
    JobState,
    JobStatus,
    isoformat,
)
from ._store import JobFilter

# The job's fields kept as columns, to filter, sort and update; the others
# go, when they differ from their default, into the JSON of ``state``.
COLUMNS = (
    "job_id",
    "project",
    "spider",
    "status",
    "node",
    "pid",
    "interval",
    "created_at",
    "updated_at",
    "completed_at",
    "cancel_requested_at",
    "error_count",
    "priority",
    "completion_reason",
)
UPDATED_COLUMNS = [c for c in COLUMNS if c not in ("job_id", "created_at", "cancel_requested_at")]
_DEFAULTS = {f.name: JobState(job_id="").__dict__[f.name] for f in fields(JobState)}
_STATE_FIELDS = [name for name in _DEFAULTS if name not in COLUMNS]


def take_over_pending(state: JobState, pending: JobState) -> None:
    """A crawl starting a pending job keeps what scheduling recorded."""
    state.created_at = pending.created_at
    state.project = state.project or pending.project
    state.args = state.args or pending.args
    state.settings = state.settings or pending.settings
    state.priority = pending.priority
    state.version = state.version or pending.version
    # The crawl's own URLs (JOBSTATUS_WEBHOOKS) and those scheduling gave.
    state.webhooks = list(dict.fromkeys([*pending.webhooks, *state.webhooks]))


def row_values(state: JobState) -> tuple[Any, ...]:
    return (*(column_value(state, c) for c in COLUMNS), encode_state(state))


def column_value(state: JobState, name: str) -> Any:
    value = getattr(state, name)
    if name == "status":
        return str(value)
    if name == "created_at" and value is None:
        return time.time()
    return value


def encode_state(state: JobState) -> str:
    data = asdict(state)
    return json.dumps(
        {k: data[k] for k in _STATE_FIELDS if data[k] != _DEFAULTS[k]}, separators=(",", ":")
    )


def decode_state(row: Mapping[str, Any]) -> JobState:
    data = json.loads(row["state"])
    data.update({c: row[c] for c in COLUMNS})
    data["status"] = JobStatus(row["status"])
    return JobState(**data)


def history_event(step: str, now: float, status: JobStatus, details: str) -> HistoryEvent:
    return HistoryEvent(step=step, timestamp=now, status=str(status), details=details)


def end_state(state: JobState, status: JobStatus, message: str, now: float) -> None:
    state.status = status
    state.message = message
    state.completion_reason = str(REASON_FOR_STATUS.get(status, CompletionReason.DONE))
    state.completed_at = now
    state.updated_at = now
    state.requests_in_flight = 0


# History steps that call the job's webhooks, besides its status changes.
WEBHOOK_STEPS = {"stalled": "job.stalled"}


def webhook_types(status: JobStatus | None, events: Iterable[HistoryEvent] = ()) -> list[str]:
    """The webhook events of a write: the status it moves the job to, and
    the history steps that have one."""
    types = [f"job.{status}"] if status in TERMINAL_STATUSES else []
    types += [WEBHOOK_STEPS[e.step] for e in events if e.step in WEBHOOK_STEPS]
    return types


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


def event_from_row(row: Mapping[str, Any]) -> HistoryEvent:
    return HistoryEvent(
        step=row["step"],
        timestamp=row["timestamp"],
        status=row["status"],
        duration_ms=row["duration_ms"],
        details=row["details"],
    )


def error_from_row(row: Mapping[str, Any]) -> JobError:
    return JobError(
        error_id=row["id"],
        stage=row["stage"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        page_url=row["page_url"],
        http_status=row["http_status"],
        timestamp=row["timestamp"],
        is_recoverable=bool(row["is_recoverable"]),
    )


def filter_clauses(where: JobFilter, mark: str = "?") -> tuple[list[str], list[Any]]:
    """The WHERE clauses of a listing, with ``mark`` for each bound value."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("project", where.project), ("spider", where.spider)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    # A running job with a cancel request is shown as cancelling.
    if where.status == JobStatus.CANCELLING:
        clauses.append(
            "(status = 'cancelling' OR (status = 'running' AND cancel_requested_at IS NOT NULL))"
        )
    elif where.status == JobStatus.RUNNING:
        clauses.append("status = 'running' AND cancel_requested_at IS NULL")
    elif where.status is not None:
        clauses.append(f"status = {mark}")
        params.append(where.status)
    return clauses, params
