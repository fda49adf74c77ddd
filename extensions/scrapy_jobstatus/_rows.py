"""A job as table rows, the same for every backend: the fields kept as
columns (to filter, sort and update), the others in a compact JSON text."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from ._model import (
    HistoryEvent,
    JobError,
    JobState,
    JobStatus,
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
    "run_after",
    "pause_requested_at",
    "history_omitted",
    "schedule",
)
# Requests (cancel, pause) are written by those who make them, never by the
# crawl's writes of its job; the history's events left out, by the store as
# it leaves them out; the schedule, by the claim of its tick.
UPDATED_COLUMNS = [
    c
    for c in COLUMNS
    if c
    not in (
        "job_id",
        "created_at",
        "cancel_requested_at",
        "pause_requested_at",
        "history_omitted",
        "schedule",
    )
]
_DEFAULTS = {f.name: JobState(job_id="").__dict__[f.name] for f in fields(JobState)}
_STATE_FIELDS = [name for name in _DEFAULTS if name not in COLUMNS]


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


def filter_clauses(where: JobFilter) -> tuple[list[str], list[Any]]:
    """The WHERE clauses of a listing, with a ``?`` for each bound value."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("project", where.project),
        ("spider", where.spider),
        ("schedule", where.schedule),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    # A running job with a cancel (or pause) request is shown as cancelling
    # (pausing), as shown_status says.
    if where.status == JobStatus.CANCELLING:
        clauses.append(
            "(status = 'cancelling' OR (status IN ('running', 'pausing')"
            " AND cancel_requested_at IS NOT NULL))"
        )
    elif where.status == JobStatus.PAUSING:
        clauses.append(
            "((status = 'pausing' OR (status = 'running' AND pause_requested_at IS NOT NULL))"
            " AND cancel_requested_at IS NULL)"
        )
    elif where.status == JobStatus.RUNNING:
        clauses.append(
            "status = 'running' AND cancel_requested_at IS NULL AND pause_requested_at IS NULL"
        )
    elif where.status is not None:
        clauses.append("status = ?")
        params.append(where.status)
    return clauses, params
