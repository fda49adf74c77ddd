"""The SQLite job store: the embedded default, shared by the crawls and
readers of one node.

WAL lets readers read while crawls write; every write is one short
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the busy
timeout instead of failing with "database is locked". Connecting writes
nothing unless the schema has to be made, so readers work on a read-only or
full disk. A job id only ever reaches SQL as a bound value.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _sql as sql
from ._model import (
    ACTIVE_STATUSES,
    HISTORY_KEPT,
    TERMINAL_STATUSES,
    HistoryEvent,
    JobError,
    JobState,
    JobStatus,
    shown_status,
    sources_of,
)
from ._rows import (
    COLUMNS,
    SETTLED_STATUSES,
    UPDATED_COLUMNS,
    column_value,
    decode_state,
    encode_state,
    end_for_crawl,
    end_state,
    error_from_row,
    event_from_row,
    filter_clauses,
    history_event,
    keeps_pause_request,
    pause,
    resume,
    row_values,
    settle_end,
    startable,
    take_over_pending,
    webhook_body,
    webhook_targets,
    webhook_types,
)
from ._store import (
    ERRORS_IN_WEBHOOKS,
    STARTED,
    Attempt,
    Delivery,
    JobFilter,
    JobNotFound,
    JobPage,
    NodeInfo,
    ReapedJob,
    RequestResult,
    SaveResult,
    StartResult,
    StoreError,
    decode_cursor,
    encode_cursor,
    node_name,
    reap_dead_jobs,
    reap_dead_nodes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

P = ParamSpec("P")
R = TypeVar("R")

BUSY_TIMEOUT_MS = 30_000
# Without statistics, SQLite's planner prefers the status index and sorts;
# the queue's partial index holds the queued jobs alone, in claim order.
QUEUE_INDEX = " INDEXED BY jobs_queue"
# RETURNING, which the queue and the outbox use.
MIN_SQLITE = (3, 35)

# _MIGRATIONS[v] brings the schema from version v to v + 1; step 0 makes it
# from nothing. The first writer to open an older store upgrades it.
#
# Version 1: an index for every combination of the listing's filters, newest
# first: a page and its total cost the same whatever the filter and size.
_V1 = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    project TEXT,
    spider TEXT,
    status TEXT NOT NULL,
    node TEXT,
    pid INTEGER,
    interval REAL,
    created_at REAL NOT NULL,
    updated_at REAL,
    completed_at REAL,
    cancel_requested_at REAL,
    cancel_force INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL
);
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_project ON jobs (project, created_at, id);
CREATE INDEX jobs_spider ON jobs (spider, created_at, id);
CREATE INDEX jobs_status ON jobs (status, created_at, id);
CREATE INDEX jobs_project_spider ON jobs (project, spider, created_at, id);
CREATE INDEX jobs_project_status ON jobs (project, status, created_at, id);
CREATE INDEX jobs_spider_status ON jobs (spider, status, created_at, id);
CREATE INDEX jobs_filters ON jobs (project, spider, status, created_at, id);
CREATE TABLE errors (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    stage TEXT,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    page_url TEXT,
    http_status INTEGER,
    timestamp REAL NOT NULL,
    is_recoverable INTEGER NOT NULL
);
CREATE INDEX errors_job ON errors (job, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    step TEXT NOT NULL,
    timestamp REAL NOT NULL,
    duration_ms INTEGER,
    status TEXT NOT NULL,
    details TEXT
);
CREATE INDEX events_job ON events (job, id);
"""
# Version 2: Scrapyd's queue (pending jobs with no node yet: those of
# version 1, recorded beside Scrapyd's own queue, join it), the nodes sharing
# the store, and the projects' eggs.
_V2 = """
ALTER TABLE jobs ADD COLUMN priority REAL NOT NULL DEFAULT 0;
UPDATE jobs SET node = NULL WHERE status = 'pending';
CREATE INDEX jobs_queue ON jobs (priority DESC, created_at, id)
    WHERE status = 'pending' AND node IS NULL;
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    url TEXT,
    max_proc INTEGER NOT NULL,
    running INTEGER NOT NULL,
    version TEXT,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE eggs (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    version TEXT NOT NULL,
    egg BLOB NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (project, version)
);
"""
# Version 3: the webhook outbox and its attempts, the counters' series, and
# the completion reason as a column (metrics count by it).
_V3 = """
ALTER TABLE jobs ADD COLUMN completion_reason TEXT;
UPDATE jobs SET completion_reason = json_extract(state, '$.completion_reason');
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    created_at REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_job ON deliveries (job, id);
CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY,
    delivery INTEGER NOT NULL,
    attempted_at REAL NOT NULL,
    http_status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    next_attempt_at REAL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery, id);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL,
    t REAL NOT NULL,
    pages INTEGER NOT NULL,
    documents INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    progress REAL
);
CREATE INDEX series_job ON series (job, id);
"""
# Version 4: pause and resume (a pause request, polled by the crawl like a
# cancel one; whether the job goes back to the queue once paused), and when
# a retried job may start.
_V4 = """
ALTER TABLE jobs ADD COLUMN run_after REAL;
ALTER TABLE jobs ADD COLUMN pause_requested_at REAL;
ALTER TABLE jobs ADD COLUMN pause_requeue INTEGER NOT NULL DEFAULT 0;
"""
# Version 5: the history's events left out between a job's first and last.
_V5 = """
ALTER TABLE jobs ADD COLUMN history_omitted INTEGER NOT NULL DEFAULT 0;
"""
# Version 6: the key of a delivery to a job's own receiver (schedule.json's
# webhook_secret); NULL: the deliverer's webhook_secret signs it.
_V6 = """
ALTER TABLE deliveries ADD COLUMN secret TEXT;
"""
_MIGRATIONS = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(_MIGRATIONS)

_INSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}, state)"  # noqa: S608 (column names)
    f" VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
# The pause request goes with any status but running or pausing (the first
# bound value: whether it stays).
_UPDATE = (
    f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in UPDATED_COLUMNS)}, state = ?,"  # noqa: S608
    " pause_requested_at = CASE WHEN ? THEN pause_requested_at END,"
    " pause_requeue = CASE WHEN ? THEN pause_requeue ELSE 0 END"
    " WHERE job_id = ? AND status IN ({sources})"
)


def _open(location: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    uri = isinstance(location, str) and location.startswith("file:")
    return sqlite3.connect(
        location,
        uri=uri,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_timeout_ms / 1000,
    )


def _reading(method: Callable[P, R]) -> Callable[P, R]:
    """A read's SQLite error as the store's one-line error."""

    @functools.wraps(method)
    def read(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as e:
            store = args[0]
            raise StoreError(f"cannot read the job store {store.path}: {e}") from None  # type: ignore[attr-defined]

    return read


class SQLiteStore:
    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, deadline: float | None = None
    ):
        self.path = Path(path)
        self.location = str(self.path)
        self.readonly = readonly
        self.node = node_name()
        self.writes = 0
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._busy_timeout_ms = int(deadline * 1000) if deadline else BUSY_TIMEOUT_MS

    # -- connection -------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"the job store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or later;"
                f" this Python has {sqlite3.sqlite_version}"
            )
        conn = None
        try:
            if self.readonly:
                conn = self._connect_readonly()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = _open(self.path, self._busy_timeout_ms)
            conn.row_factory = sqlite3.Row
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if 0 <= version < SCHEMA_VERSION and not self.readonly:
                version = _migrate(conn)
            if version != SCHEMA_VERSION:
                raise StoreError(_version_problem(self.path, version, self.readonly))
        except (sqlite3.Error, OSError, StoreError) as e:
            if conn is not None:
                conn.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot open the job store {self.path}: {e}") from None
        self._file_id = _file_id(self.path)
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise StoreError(f"no job store at {self.path}")
        uri = self.path.resolve().as_uri()
        conn = _open(f"{uri}?mode=ro")
        try:
            conn.execute("PRAGMA user_version")
        except sqlite3.OperationalError:
            # A WAL store on a read-only disk, without the shared-memory file
            # a reader needs: nothing can change it, so read it as immutable.
            conn.close()
            return _open(f"{uri}?immutable=1")
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the job store {self.path}: {e}") from None
        self.writes += 1

    def _reconnect_if_replaced(self) -> None:
        """A store file deleted or replaced under an open connection would
        take every later write with it: follow the path instead."""
        if self._conn is not None and _file_id(self.path) != self._file_id:
            self.close()

    # -- writes -----------------------------------------------------------------

    def add_pending(self, state: JobState) -> bool:
        with self._write() as conn:
            try:
                conn.execute(_INSERT, row_values(state))
            except sqlite3.IntegrityError:
                return False
            return True

    def start_job(self, state: JobState, resume: bool = False) -> StartResult:
        with self._write() as conn:
            row = _job_row(conn, state.job_id)
            if row is None:
                conn.execute(_INSERT, row_values(state))
            else:
                stored = decode_state(row)
                if not startable(stored, resume):
                    return StartResult(False, stored)
                take_over_pending(state, stored, resume)
                _update(conn, state)
            job = _job_key(conn, state.job_id)
            _insert_point(conn, job, state)
            self._notify(conn, job, [STARTED])
            return StartResult(True, state)

    def save(
        self,
        state: JobState,
        errors: Iterable[JobError] = (),
        events: Iterable[HistoryEvent] = (),
        history: Iterable[HistoryEvent] = (),
    ) -> SaveResult:
        self._reconnect_if_replaced()
        events = list(events)
        with self._write() as conn:
            recreated = False
            if state.status in SETTLED_STATUSES and (stored := _job_row(conn, state.job_id)):
                events += settle_end(state, stored, time.time())
            new_events = events
            if not _update(conn, state, crawl=True):
                row = conn.execute(
                    "SELECT status FROM jobs WHERE job_id = ?", (state.job_id,)
                ).fetchone()
                if row is not None:
                    return _save_result(conn, state.job_id, written=False)
                # The record is gone: write it again from the crawl's memory.
                conn.execute(_INSERT, row_values(state))
                events, recreated = history, True
            job = _job_key(conn, state.job_id)
            _insert_errors(conn, job, errors)
            _insert_events(conn, job, events)
            _insert_point(conn, job, state)
            self._notify(conn, job, webhook_types(state.status, new_events))
            return _save_result(conn, state.job_id, written=True, recreated=recreated)

    def request_cancel(self, job_id: str, force: bool = False) -> RequestResult:
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id)
            if row is None:
                raise JobNotFound(job_id)
            state = decode_state(row)
            before = state.status
            if before in TERMINAL_STATUSES:
                return RequestResult(before, before)
            if before in (JobStatus.PENDING, JobStatus.PAUSED):
                end_state(state, JobStatus.CANCELLED, f"Cancelled while {before}.", now)
                state.cancel_requested_at = now
                _update(conn, state)
                after = JobStatus.CANCELLED
                details = f"cancelled while {before}"
            else:
                after = JobStatus.CANCELLING
                details = None
            conn.execute(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?),"
                " cancel_force = MAX(cancel_force, ?) WHERE id = ?",
                (now, int(force), row["id"]),
            )
            if details:
                _insert_events(conn, row["id"], [history_event("cancelled", now, after, details)])
                self._notify(conn, row["id"], webhook_types(after))
            return RequestResult(before, after)

    def end_job(self, job_id: str, status: JobStatus, message: str, *, unstarted: bool) -> bool:
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id)
            if row is None:
                return False
            state = decode_state(row)
            if not state.status.is_active or (unstarted and state.status is not JobStatus.PENDING):
                return False
            events = end_for_crawl(state, status, message, now, unstarted=unstarted)
            _update(conn, state)
            _insert_events(conn, row["id"], events)
            self._notify(conn, row["id"], webhook_types(state.status))
            return True

    def request_pause(self, job_id: str, requeue: bool = False) -> RequestResult:
        return self._request(job_id, pause, requeue)

    def request_resume(self, job_id: str) -> RequestResult:
        return self._request(job_id, resume)

    def _request(
        self, job_id: str, decide: Callable[..., Any], requeue: bool = False
    ) -> RequestResult:
        """A pause or resume request, as ``decide`` takes it: the job moved
        (written), a pause requested, or a pause withdrawn."""
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id)
            if row is None:
                raise JobNotFound(job_id)
            state = decode_state(row)
            before = shown_status(state)
            after, events = decide(state, now)
            moved = state.status is not JobStatus(row["status"])
            if moved:
                _update(conn, state)
            elif after is JobStatus.PAUSING:
                conn.execute(
                    "UPDATE jobs SET pause_requested_at = COALESCE(pause_requested_at, ?),"
                    " pause_requeue = MAX(pause_requeue, ?) WHERE id = ?",
                    (now, int(requeue), row["id"]),
                )
            elif events:  # a pause withdrawn
                conn.execute(_CLEAR_PAUSE, (row["id"],))
            _insert_events(conn, row["id"], events)
            if moved:
                self._notify(conn, row["id"], webhook_types(state.status))
            return RequestResult(before, after)

    def warn_pending(self, job_id: str, warning: str) -> bool:
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id)
            if row is None:
                return False
            state = decode_state(row)
            if state.status is not JobStatus.PENDING or warning in state.warnings:
                return False
            state.warnings.append(warning)
            conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (encode_state(state), row["id"]))
            stalled = [history_event("stalled", now, JobStatus.PENDING, warning)]
            _insert_events(conn, row["id"], stalled)
            self._notify(conn, row["id"], webhook_types(None, stalled))
            return True

    def _notify(self, conn: sqlite3.Connection, job: int | None, types: list[str]) -> None:
        """The job's webhooks for these events, in the outbox, in the write
        that makes the change they report."""
        if not types:
            return
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job,)).fetchone()
        targets = webhook_targets(decode_state(row))
        if not targets:
            return
        now = time.time()
        document = self._document(conn, row, ERRORS_IN_WEBHOOKS, now)
        for event_type in types:
            body = webhook_body(event_type, now, document)
            conn.executemany(
                sql.INSERT_DELIVERY, sql.delivery_values(job, event_type, body, now, targets)
            )

    def reap_dead_jobs(self, node: str, alive: Callable[[int], bool]) -> list[str]:
        return reap_dead_jobs(self, node, alive)

    def prune(self, keep: int | None = None, older_than: float | None = None) -> int:
        terminal = [str(s) for s in TERMINAL_STATUSES]
        marks = ", ".join("?" * len(terminal))
        clauses, params = [], []
        if older_than is not None:
            clauses.append(f"(status IN ({marks}) AND completed_at < ?)")
            params += [*terminal, time.time() - older_than]
        if keep is not None:
            clauses.append(
                f"(status IN ({marks}) AND id NOT IN (SELECT id FROM jobs"  # noqa: S608
                f" WHERE status IN ({marks}) ORDER BY created_at DESC, id DESC LIMIT ?))"
            )
            params += [*terminal, *terminal, keep]
        if not clauses:
            return 0
        with self._write() as conn:
            ids = [
                (r[0],)
                for r in conn.execute(
                    f"SELECT id FROM jobs WHERE {' OR '.join(clauses)}",  # noqa: S608
                    params,
                )
            ]
            conn.executemany("DELETE FROM errors WHERE job = ?", ids)
            # The newest event stays, whatever its job: SQLite would give its
            # id again, and a reader of events.json past it would miss one.
            conn.executemany(
                "DELETE FROM events WHERE job = ? AND id < (SELECT MAX(id) FROM events)", ids
            )
            conn.executemany("DELETE FROM series WHERE job = ?", ids)
            conn.executemany(
                "DELETE FROM delivery_attempts WHERE delivery IN"
                " (SELECT id FROM deliveries WHERE job = ?)",
                ids,
            )
            conn.executemany("DELETE FROM deliveries WHERE job = ?", ids)
            conn.executemany("DELETE FROM jobs WHERE id = ?", ids)
            return len(ids)

    # -- reads ------------------------------------------------------------------

    @_reading
    def get(self, job_id: str) -> JobState | None:
        row = _job_row(self.conn, job_id)
        return None if row is None else decode_state(row)

    @_reading
    def document(self, job_id: str, errors_kept: int = 20) -> dict[str, Any] | None:
        row = _job_row(self.conn, job_id)
        return None if row is None else self._document(self.conn, row, errors_kept, time.time())

    def _document(
        self, conn: sqlite3.Connection, row: sqlite3.Row, errors_kept: int, now: float
    ) -> dict[str, Any]:
        latest = [
            error_from_row(r)
            for r in conn.execute(
                "SELECT * FROM errors WHERE job = ? ORDER BY id DESC LIMIT ?",
                (row["id"], errors_kept),
            )
        ]
        return decode_state(row).to_document(
            errors=latest[::-1], history=self._history(row["id"]), now=now
        )

    @_reading
    def history(self, job_id: str) -> list[HistoryEvent]:
        job = _job_key(self.conn, job_id)
        return [] if job is None else self._history(job)

    def _history(self, job: int) -> list[HistoryEvent]:
        rows = self.conn.execute("SELECT * FROM events WHERE job = ? ORDER BY id", (job,))
        return [event_from_row(r) for r in rows]

    @_reading
    def errors(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobError]:
        job = _job_key(self.conn, job_id)
        if job is None:
            return []
        rows = self.conn.execute(
            "SELECT * FROM errors WHERE job = ? AND id > ? ORDER BY id LIMIT ?",
            (job, after, limit),
        )
        return [error_from_row(r) for r in rows]

    @_reading
    def list_jobs(
        self, where: JobFilter, limit: int = 50, offset: int = 0, cursor: str | None = None
    ) -> JobPage:
        clauses, params = filter_clauses(where)
        conn = self.conn
        condition = " AND ".join(clauses) or "1"
        total = conn.execute(
            f"SELECT COUNT(*) FROM jobs WHERE {condition}",  # noqa: S608
            params,
        ).fetchone()[0]
        if cursor is not None:
            created_at, key = decode_cursor(cursor)
            clauses.append("(created_at, id) < (?, ?)")
            params += [created_at, key]
            offset = 0
        rows = conn.execute(
            f"SELECT * FROM jobs WHERE {' AND '.join(clauses) or '1'}"  # noqa: S608
            " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, limit + 1, offset],
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return JobPage([decode_state(r) for r in rows], total, next_cursor)

    # -- the queue -----------------------------------------------------------------

    def claim_job(self, node: str, project: str | None = None) -> JobState | None:
        # One writer at a time (BEGIN IMMEDIATE): a job goes to one node.
        clause, params = sql.project_clause(project)
        with self._write() as conn:
            row = conn.execute(
                sql.CLAIM.format(project=clause, index=QUEUE_INDEX, lock=""),
                (node, *params, time.time()),
            ).fetchone()
        return None if row is None else decode_state(row)

    @_reading
    def queued_jobs(
        self, project: str | None = None, created_before: float | None = None
    ) -> list[JobState]:
        statement, params = sql.queued_jobs(project, created_before, QUEUE_INDEX)
        return [decode_state(r) for r in self.conn.execute(statement, params)]

    @_reading
    def count_queued(self, project: str | None = None) -> int:
        clause, params = sql.project_clause(project)
        return self.conn.execute(
            sql.COUNT_QUEUED.format(project=clause, index=QUEUE_INDEX), params
        ).fetchone()[0]

    @_reading
    def finished_jobs(self, limit: int) -> list[JobState]:
        return [decode_state(r) for r in self.conn.execute(sql.FINISHED, (limit,))]

    @_reading
    def count_finished(self, limit: int) -> int:
        return self.conn.execute(sql.COUNT_FINISHED, (limit,)).fetchone()[0]

    # -- the webhook outbox ----------------------------------------------------------

    def claim_deliveries(
        self,
        now: float,
        lease: float,
        limit: int,
        job_id: str | None = None,
        due_by: float | None = None,
        keyed_only: bool = False,
    ) -> list[Delivery]:
        statement, values = sql.claim_deliveries(
            now, lease, limit, job_id, due_by, keyed_only=keyed_only
        )
        with self._write() as conn:
            rows = conn.execute(statement, values).fetchall()
        return sorted((sql.delivery_from_row(r) for r in rows), key=lambda d: d.delivery_id)

    def record_attempt(self, delivery: Delivery, attempt: Attempt) -> bool:
        with self._write() as conn:
            conn.execute(sql.INSERT_ATTEMPT, sql.attempt_values(delivery, attempt))
            return conn.execute(sql.END_ATTEMPT, sql.end_values(delivery, attempt)).rowcount == 1

    @_reading
    def webhook_log(self, job_id: str) -> list[dict[str, Any]]:
        return sql.webhook_log(self.conn.execute(sql.WEBHOOK_LOG, (job_id,)).fetchall())

    @_reading
    def count_undelivered(self, job_id: str | None = None) -> int:
        clause, params = (sql.OF_JOB, (job_id,)) if job_id is not None else ("", ())
        row = self.conn.execute(sql.COUNT_UNDELIVERED.format(job=clause), params).fetchone()
        return row[0]

    @_reading
    def delivery_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(sql.DELIVERY_COUNTS)}

    # -- the event stream and the series ---------------------------------------------

    @_reading
    def events_after(
        self, since: int, job_id: str | None = None, limit: int = 100
    ) -> list[tuple[int, str, HistoryEvent]]:
        # One writer at a time: ids are given in the order writes commit.
        clause, params = (sql.EVENT_OF_JOB, (job_id,)) if job_id is not None else ("", ())
        rows = self.conn.execute(sql.EVENTS_AFTER.format(job=clause), (since, *params, limit))
        return [(r["id"], r["job_id"], event_from_row(r)) for r in rows]

    @_reading
    def last_event_id(self) -> int:
        return self.conn.execute(sql.LAST_EVENT).fetchone()[0] or 0

    @_reading
    def series(self, job_id: str) -> list[dict[str, Any]]:
        return [sql.point_from_row(r) for r in self.conn.execute(sql.SERIES, (job_id,))]

    # -- figures for metrics ---------------------------------------------------------

    @_reading
    def status_counts(self) -> list[tuple[str, str | None, str | None, int]]:
        return [tuple(r) for r in self.conn.execute(sql.STATUS_COUNTS)]  # type: ignore[misc]

    @_reading
    def reason_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(sql.REASON_COUNTS)}

    # -- the nodes -----------------------------------------------------------------

    def beat(self, node: NodeInfo) -> None:
        with self._write() as conn:
            conn.execute(sql.BEAT, sql.beat_values(node))

    @_reading
    def nodes(self) -> list[NodeInfo]:
        return [sql.node_from_row(r) for r in self.conn.execute(sql.NODES)]

    def reap_dead_nodes(self, timeout: float) -> list[ReapedJob]:
        return reap_dead_nodes(self, timeout)

    @_reading
    def dead_nodes(self, seen_before: float) -> list[NodeInfo]:
        return [sql.node_from_row(r) for r in self.conn.execute(sql.DEAD_NODES, (seen_before,))]

    def forget_nodes(self, seen_before: float) -> int:
        with self._write() as conn:
            return conn.execute(sql.FORGET_NODES, (seen_before,)).rowcount

    def requeue_claims(self, node: str) -> list[str]:
        with self._write() as conn:
            return [r[0] for r in conn.execute(sql.REQUEUE, (node,)).fetchall()]

    @_reading
    def started_jobs(self, node: str) -> list[JobState]:
        active = [s for s in ACTIVE_STATUSES if s is not JobStatus.PENDING]
        marks = ", ".join("?" * len(active))
        rows = self.conn.execute(
            f"SELECT * FROM jobs WHERE node = ? AND status IN ({marks})",  # noqa: S608
            (node, *map(str, active)),
        ).fetchall()
        return [decode_state(r) for r in rows]

    # -- the eggs ------------------------------------------------------------------

    def put_egg(self, project: str, version: str, egg: bytes) -> None:
        with self._write() as conn:
            conn.execute(sql.PUT_EGG, (project, version, egg, time.time()))

    @_reading
    def get_egg(self, project: str, version: str) -> bytes | None:
        row = self.conn.execute(sql.GET_EGG, (project, version)).fetchone()
        return None if row is None else bytes(row[0])

    @_reading
    def egg_versions(self, project: str) -> list[str]:
        return [r[0] for r in self.conn.execute(sql.EGG_VERSIONS, (project,))]

    @_reading
    def egg_projects(self) -> list[str]:
        return [r[0] for r in self.conn.execute(sql.EGG_PROJECTS)]

    def delete_eggs(self, project: str, version: str | None = None) -> int:
        statement, params = sql.DELETE_EGGS, (project,)
        if version is not None:
            statement, params = statement + " AND version = ?", (project, version)
        with self._write() as conn:
            return conn.execute(statement, params).rowcount


# -- schema --------------------------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> int:
    """Make or upgrade the schema, in one transaction: whatever the processes
    that try at the same moment, one does it. Returns the version found."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if (
            version == 0
            and conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
        ):
            version = -1  # tables from before versions: not ours to convert
        elif 0 <= version < SCHEMA_VERSION:
            for script in _MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _use_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    return version


def _use_wal(conn: sqlite3.Connection) -> None:
    """WAL, persistent in the file: readers read while crawls write. Crawls
    making a new store at once each ask for it: the first one's switch may
    find the file busy for the others, for which it is done."""
    for _ in range(50):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            time.sleep(0.1)
    conn.execute("PRAGMA journal_mode = WAL")  # its error, if it still fails


def _version_problem(path: Path, version: int, readonly: bool) -> str:
    if version == 0:
        return f"no job store at {path} yet"
    if version == -1:
        return f"the job store {path} has an older, unsupported schema: move it away"
    if version < SCHEMA_VERSION:
        # Only a reader gets here: the first writer upgrades the schema.
        return (
            f"the job store {path} has schema version {version}, older than this "
            f"scrapy-jobstatus uses ({SCHEMA_VERSION}): open it once to write, to upgrade it"
        )
    return (
        f"the job store {path} has schema version {version}, newer than this "
        f"scrapy-jobstatus supports ({SCHEMA_VERSION}): upgrade scrapy-jobstatus"
    )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


# -- rows ----------------------------------------------------------------------


_CLEAR_PAUSE = "UPDATE jobs SET pause_requested_at = NULL, pause_requeue = 0 WHERE id = ?"


def _update(conn: sqlite3.Connection, state: JobState, crawl: bool = False) -> bool:
    """Write the job if its stored status may move to the new one (from a
    ``crawl``'s write, as ``sources_of`` says)."""
    sources = sources_of(state.status, crawl)
    keep = keeps_pause_request(state.status)
    cur = conn.execute(
        _UPDATE.format(sources=", ".join("?" * len(sources))),
        (
            *(column_value(state, c) for c in UPDATED_COLUMNS),
            encode_state(state),
            keep,
            keep,
            state.job_id,
            *sources,
        ),
    )
    return cur.rowcount == 1


def _job_row(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


def _job_key(conn: sqlite3.Connection, job_id: str) -> int | None:
    row = conn.execute("SELECT id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


def _save_result(
    conn: sqlite3.Connection, job_id: str, *, written: bool, recreated: bool = False
) -> SaveResult:
    row = conn.execute(
        "SELECT cancel_requested_at, cancel_force, pause_requested_at, status FROM jobs"
        " WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    return SaveResult(written, recreated, row[0], bool(row[1]), row[2], row[3])


def _insert_errors(conn: sqlite3.Connection, job: int | None, errors: Iterable[JobError]) -> None:
    conn.executemany(
        "INSERT INTO errors (job, stage, error_type, error_message, page_url, http_status,"
        " timestamp, is_recoverable) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                job,
                e.stage,
                e.error_type,
                e.error_message,
                e.page_url,
                e.http_status,
                e.timestamp,
                int(e.is_recoverable),
            )
            for e in errors
        ],
    )


def _insert_point(conn: sqlite3.Connection, job: int | None, state: JobState) -> None:
    conn.execute(sql.INSERT_POINT, sql.point_values(job, state))
    if conn.execute(sql.COUNT_POINTS, (job,)).fetchone()[0] > sql.SERIES_POINTS:
        conn.execute(sql.THIN_POINTS, (job,))


def _insert_events(
    conn: sqlite3.Connection, job: int | None, events: Iterable[HistoryEvent]
) -> None:
    rows = [(job, e.step, e.timestamp, e.duration_ms, e.status, e.details) for e in events]
    if not rows:
        return
    conn.executemany(
        "INSERT INTO events (job, step, timestamp, duration_ms, status, details)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    extra = conn.execute(sql.COUNT_EVENTS, (job,)).fetchone()[0] - 2 * HISTORY_KEPT
    if extra > 0:
        conn.execute(sql.THIN_EVENTS, sql.thin_events_values(job))
        conn.execute(sql.ADD_OMITTED, (extra, job))


# -- listings ------------------------------------------------------------------
