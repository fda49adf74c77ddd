"""The statements of the queue, the nodes, the eggs, the webhook outbox,
the event stream and the counters' series, the same for every backend:
written with ``?`` for each bound value; PostgreSQL's store rewrites the
marks (``postgres``). Only constants are joined into them; every value is
bound."""

# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from ._model import HISTORY_KEPT, JobState, isoformat, redact_url
from ._store import Attempt, Delivery, NodeInfo
from ._transitions import new_event_id

# A pending job with no node yet waits in the queue; claiming it names its
# node. The queue index only holds such jobs, whatever the store's size.
QUEUED = "status = 'pending' AND node IS NULL"
QUEUE_ORDER = "priority DESC, created_at, id"
# A retried job waits for its delay (run_after) in the queue.
DUE_JOB = " AND (run_after IS NULL OR run_after <= ?)"
# PostgreSQL adds FOR UPDATE SKIP LOCKED ({lock}): a node never waits on
# the job another one is claiming, it takes the next.
CLAIM = (
    "UPDATE jobs SET node = ? WHERE id = (SELECT id FROM jobs{index} WHERE "
    + QUEUED
    + "{project}"
    + DUE_JOB
    + " ORDER BY "
    + QUEUE_ORDER
    + " LIMIT 1{lock}) AND "
    + QUEUED
    + " RETURNING *"
)
QUEUED_JOBS = (
    "SELECT * FROM jobs{index} WHERE " + QUEUED + "{project}{created} ORDER BY " + QUEUE_ORDER
)
COUNT_QUEUED = "SELECT COUNT(*) AS n FROM jobs{index} WHERE " + QUEUED + "{project}"
REQUEUE = "UPDATE jobs SET node = NULL WHERE status = 'pending' AND node = ? RETURNING job_id"

# Scrapyd's list of finished jobs, the latest to end first: the jobs whose
# crawl ran (a job cancelled while pending never did, and never had a pid).
ENDED = "completed_at IS NOT NULL AND NOT (status = 'cancelled' AND pid IS NULL)"
FINISHED = "SELECT * FROM jobs WHERE " + ENDED + " ORDER BY completed_at DESC, id DESC LIMIT ?"
COUNT_FINISHED = "SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs WHERE " + ENDED + " LIMIT ?) AS f"

BEAT = (
    "INSERT INTO nodes (name, url, max_proc, running, version, started_at, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
    " max_proc = excluded.max_proc, running = excluded.running, version = excluded.version,"
    " started_at = excluded.started_at, last_seen = excluded.last_seen"
)
NODES = "SELECT * FROM nodes ORDER BY name"
DEAD_NODES = "SELECT * FROM nodes WHERE last_seen < ? ORDER BY name"
FORGET_NODES = "DELETE FROM nodes WHERE last_seen < ?"

PUT_EGG = (
    "INSERT INTO eggs (project, version, egg, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (project, version) DO UPDATE SET egg = excluded.egg,"
    " created_at = excluded.created_at"
)
GET_EGG = "SELECT egg FROM eggs WHERE project = ? AND version = ?"
EGG_VERSIONS = "SELECT version FROM eggs WHERE project = ? ORDER BY created_at, id"
EGG_PROJECTS = "SELECT DISTINCT project FROM eggs ORDER BY project"
DELETE_EGGS = "DELETE FROM eggs WHERE project = ?"


def project_clause(project: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if project is None else (" AND project = ?", (project,))


def queued_jobs(
    project: str | None, created_before: float | None, index: str = ""
) -> tuple[str, tuple[Any, ...]]:
    clause, params = project_clause(project)
    created = "" if created_before is None else " AND created_at <= ?"
    if created_before is not None:
        params = (*params, created_before)
    return QUEUED_JOBS.format(project=clause, created=created, index=index), params


def beat_values(node: NodeInfo) -> tuple[Any, ...]:
    return (
        node.name,
        node.url,
        node.max_proc,
        node.running,
        node.version,
        node.started_at,
        node.last_seen,
    )


def node_from_row(row: Any) -> NodeInfo:
    return NodeInfo(
        name=row["name"],
        url=row["url"],
        max_proc=row["max_proc"],
        running=row["running"],
        version=row["version"],
        started_at=row["started_at"],
        last_seen=row["last_seen"],
    )


def postgres(statement: str) -> str:
    """A statement with PostgreSQL's marks (and its ``%`` operator escaped)."""
    return statement.replace("%", "%%").replace("?", "%s")


# -- the webhook outbox --------------------------------------------------------

INSERT_DELIVERY = (
    "INSERT INTO deliveries (job, event_id, event_type, url, secret, body, status, attempts,"
    " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)
# Due, and not leased by another deliverer (a lease ends by itself: a
# deliverer that died leaves its deliveries to the others).
DUE = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
CLAIM_DELIVERIES = (
    "UPDATE deliveries SET lease_until = ? WHERE id IN (SELECT id FROM deliveries WHERE "
    + DUE
    + "{job} ORDER BY next_attempt_at, id LIMIT ?{lock}) RETURNING *"
)
OF_JOB = " AND job = (SELECT id FROM jobs WHERE job_id = ?)"
# A deliverer without a webhook_secret of its own makes only the deliveries
# that carry their key.
KEYED = " AND secret IS NOT NULL"


def delivery_values(
    job: int | None, event_type: str, body: str, now: float, targets: list[tuple[str, str | None]]
) -> list[tuple[Any, ...]]:
    """The outbox rows of one event: one per receiver. The receivers of one
    key share a webhook-id; those of another key get their own (a receiver
    named with both keys deduplicates on it, and must get both)."""
    event_ids: dict[str | None, str] = {}
    return [
        (job, event_ids.setdefault(secret, new_event_id()), event_type, url, secret, body, now, now)
        for url, secret in targets
    ]


def claim_deliveries(
    now: float,
    lease: float,
    limit: int,
    job_id: str | None,
    due_by: float | None,
    lock: str = "",
    keyed_only: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """The claim statement and its values."""
    clause, params = (OF_JOB, (job_id,)) if job_id is not None else ("", ())
    if keyed_only:
        clause += KEYED
    due = now if due_by is None else due_by
    return CLAIM_DELIVERIES.format(job=clause, lock=lock), (now + lease, due, now, *params, limit)


INSERT_ATTEMPT = (
    "INSERT INTO delivery_attempts (delivery, attempted_at, http_status, error, duration_ms,"
    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)"
)
END_ATTEMPT = (
    "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
    " next_attempt_at = COALESCE(?, next_attempt_at), lease_until = NULL"
    " WHERE id = ? AND status = 'pending' AND lease_until = ?"
)
WEBHOOK_LOG = (
    "SELECT d.id, d.event_id, d.event_type, d.url, d.status, d.attempts, d.next_attempt_at,"
    " d.created_at, a.id AS attempt, a.attempted_at, a.http_status, a.error, a.duration_ms,"
    " a.next_attempt_at AS retry_at FROM deliveries d JOIN jobs j ON j.id = d.job"
    " LEFT JOIN delivery_attempts a ON a.delivery = d.id WHERE j.job_id = ? ORDER BY d.id, a.id"
)
COUNT_UNDELIVERED = "SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'{job}"
DELIVERY_COUNTS = "SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status"

# -- the event stream ----------------------------------------------------------

EVENTS_AFTER = (
    "SELECT e.id, j.job_id, e.step, e.timestamp, e.duration_ms, e.status, e.details"
    " FROM events e JOIN jobs j ON j.id = e.job WHERE e.id > ?{job} ORDER BY e.id LIMIT ?"
)
EVENT_OF_JOB = " AND j.job_id = ?"
LAST_EVENT = "SELECT MAX(id) AS n FROM events"
# A job's history keeps its first and last HISTORY_KEPT events: those
# between go as new ones come, counted in the job's history_omitted.
COUNT_EVENTS = "SELECT COUNT(*) AS n FROM events WHERE job = ?"
THIN_EVENTS = (
    "DELETE FROM events WHERE job = ?"
    " AND id > (SELECT id FROM events WHERE job = ? ORDER BY id LIMIT 1 OFFSET ?)"
    " AND id < (SELECT id FROM events WHERE job = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)
ADD_OMITTED = "UPDATE jobs SET history_omitted = history_omitted + ? WHERE id = ?"


def thin_events_values(job: int | None) -> tuple[Any, ...]:
    return (job, job, HISTORY_KEPT - 1, job, HISTORY_KEPT - 1)


# -- the counters' series --------------------------------------------------------

# At most SERIES_POINTS points a job: past that, every other point goes (the
# first and the latest stay), so a long run keeps its whole shape.
SERIES_POINTS = 500
INSERT_POINT = (
    "INSERT INTO series (job, t, pages, documents, errors, failed, in_flight, progress)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
COUNT_POINTS = "SELECT COUNT(*) AS n FROM series WHERE job = ?"
THIN_POINTS = (
    "DELETE FROM series WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
    " (ORDER BY id) AS n FROM series WHERE job = ?) AS s WHERE n % 2 = 0)"
)
SERIES = (
    "SELECT s.t, s.pages, s.documents, s.errors, s.failed, s.in_flight, s.progress"
    " FROM series s JOIN jobs j ON j.id = s.job WHERE j.job_id = ? ORDER BY s.id"
)

# -- figures for metrics ---------------------------------------------------------

STATUS_COUNTS = (
    "SELECT status, project, spider, COUNT(*) AS n FROM jobs GROUP BY status, project, spider"
)
REASON_COUNTS = (
    "SELECT completion_reason, COUNT(*) AS n FROM jobs WHERE completion_reason IS NOT NULL"
    " GROUP BY completion_reason"
)


def point_values(job: int, state: JobState) -> tuple[Any, ...]:
    return (
        job,
        state.updated_at,
        state.total_pages_crawled,
        state.total_documents_found,
        state.error_count,
        state.responses_failed,
        state.requests_in_flight,
        state.progress,
    )


def point_from_row(row: Any) -> dict[str, Any]:
    return {
        "t": isoformat(row["t"]),
        "pages": row["pages"],
        "documents": row["documents"],
        "errors": row["errors"],
        "failed": row["failed"],
        "in_flight": row["in_flight"],
        "progress": row["progress"],
    }


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        delivery_id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        url=row["url"],
        body=row["body"],
        secret=row["secret"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        lease_until=row["lease_until"],
    )


def attempt_values(delivery: Delivery, attempt: Attempt) -> tuple[Any, ...]:
    return (
        delivery.delivery_id,
        attempt.attempted_at,
        attempt.http_status,
        attempt.error,
        attempt.duration_ms,
        attempt.next_attempt_at,
    )


def end_values(delivery: Delivery, attempt: Attempt) -> tuple[Any, ...]:
    return (attempt.outcome, attempt.next_attempt_at, delivery.delivery_id, delivery.lease_until)


def webhook_log(rows: list[Any]) -> list[dict[str, Any]]:
    """Each delivery with its attempts, URLs redacted."""
    deliveries: dict[int, dict[str, Any]] = {}
    for row in rows:
        delivery = deliveries.get(row["id"])
        if delivery is None:
            delivery = deliveries[row["id"]] = {
                "event_id": row["event_id"],
                "type": row["event_type"],
                "url": redact_url(row["url"]),
                "status": row["status"],
                "created_at": isoformat(row["created_at"]),
                "next_attempt_at": isoformat(row["next_attempt_at"])
                if row["status"] == "pending"
                else None,
                "attempts": [],
            }
        if row["attempt"] is not None:
            delivery["attempts"].append(
                {
                    "time": isoformat(row["attempted_at"]),
                    "http_status": row["http_status"],
                    "error": row["error"],
                    "duration_ms": row["duration_ms"],
                    "next_retry": isoformat(row["retry_at"]),
                }
            )
    return list(deliveries.values())


# -- periodic schedules ----------------------------------------------------------

SCHEDULE_COLUMNS = "project, name, spider, enabled, definition, next_tick, created_at, updated_at"
# Created, or replaced by name: its ticks so far and their counts stay; its
# next tick is the new rule's.
PUT_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (project, name) DO UPDATE SET spider = excluded.spider,"
    " enabled = excluded.enabled, definition = excluded.definition,"
    " next_tick = excluded.next_tick, updated_at = excluded.updated_at"
    " RETURNING id, created_at"
)
ENABLE_SCHEDULE = (
    "UPDATE schedules SET enabled = ?, updated_at = ? WHERE project = ? AND name = ? RETURNING id"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE project = ? AND name = ? RETURNING id"
DELETE_TICKS = "DELETE FROM schedule_ticks WHERE schedule = ?"
# With the status of its last job (a job pruned since: none).
SCHEDULES = (
    "SELECT s.*, j.status AS last_job_status FROM schedules s"
    " LEFT JOIN jobs j ON j.job_id = s.last_job{where} ORDER BY s.project, s.name"
)
# The enabled schedules by their next tick, and how far each is from now by
# the store's clock ({now}): those due, and how long until the next one.
DUE_SCHEDULES = (
    "SELECT id, next_tick - {now} AS wait FROM schedules"
    " WHERE enabled AND next_tick IS NOT NULL ORDER BY next_tick LIMIT ?"
)
SCHEDULE_ROW = "SELECT *, {now} AS now FROM schedules WHERE id = ?{lock}"
NAMED_SCHEDULE = "SELECT *, {now} AS now FROM schedules WHERE project = ? AND name = ?{lock}"
INSERT_TICK = (
    "INSERT INTO schedule_ticks (schedule, tick, outcome, count, job_id, node, recorded_at,"
    " details) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (schedule, tick) DO NOTHING"
    " RETURNING id"
)
TICKS = "SELECT * FROM schedule_ticks WHERE schedule = ? ORDER BY tick DESC, id DESC LIMIT ?"
SCHEDULE_TICKED = (
    "UPDATE schedules SET next_tick = ?, last_tick = COALESCE(?, last_tick),"
    " last_job = COALESCE(?, last_job), fired = fired + ?, skipped = skipped + ?,"
    " missed = missed + ? WHERE id = ?"
)
SCHEDULE_RAN = "UPDATE schedules SET last_job = ? WHERE id = ?"
SCHEDULE_COUNTS = "SELECT enabled, COUNT(*) AS n FROM schedules GROUP BY enabled"
