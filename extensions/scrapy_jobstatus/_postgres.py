"""The PostgreSQL job store: one database shared by the crawls and readers
of several nodes.

Same contract and encoding as the SQLite store: the job's filter and sort
fields as columns, the rest as the compact JSON of ``state``, transitions
guarded in SQL by the statuses they may come from. Every write is one
transaction; a read-modify-write locks its row first (``FOR UPDATE``), so
concurrent writers queue on the row instead of losing an update. Values only
ever reach SQL as server-side parameters. Connecting writes nothing unless
the schema has to be made or upgraded; a read-only store's sessions cannot
write at all.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from . import _sql as sql
from ._location import hide_secrets, location_secrets
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
    display_location,
    encode_cursor,
    node_name,
    reap_dead_jobs,
    reap_dead_nodes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    Row = dict[str, Any]

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise
POOL_TIMEOUT = 30.0  # seconds to wait for a connection of the pool
POOL_MIN, POOL_MAX = 1, 4
# Serializes the schema's creation and upgrades across processes: the
# advisory lock of this key (any constant of this project's own).
SCHEMA_LOCK = 0x6A6F_6273_7461_7475  # "jobstatu"
# Serializes the writes that add history events, to their commit.
EVENTS_LOCK = 0x6A6F_6273_6576_6E74  # "jobsevnt"

# _MIGRATIONS[v] brings the schema from version v to v + 1; step 0 makes it
# from nothing. The first writer to open an older store upgrades it.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE jobstatus_schema (version INTEGER NOT NULL)",
        """CREATE TABLE jobs (
            id BIGSERIAL PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            project TEXT,
            spider TEXT,
            status TEXT NOT NULL,
            node TEXT,
            pid BIGINT,
            "interval" DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION,
            completed_at DOUBLE PRECISION,
            cancel_requested_at DOUBLE PRECISION,
            cancel_force BOOLEAN NOT NULL DEFAULT FALSE,
            error_count BIGINT NOT NULL DEFAULT 0,
            state TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_created ON jobs (created_at, id)",
        "CREATE INDEX jobs_project ON jobs (project, created_at, id)",
        "CREATE INDEX jobs_spider ON jobs (spider, created_at, id)",
        "CREATE INDEX jobs_status ON jobs (status, created_at, id)",
        "CREATE INDEX jobs_project_spider ON jobs (project, spider, created_at, id)",
        "CREATE INDEX jobs_project_status ON jobs (project, status, created_at, id)",
        "CREATE INDEX jobs_spider_status ON jobs (spider, status, created_at, id)",
        "CREATE INDEX jobs_filters ON jobs (project, spider, status, created_at, id)",
        """CREATE TABLE errors (
            id BIGSERIAL PRIMARY KEY,
            job BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            stage TEXT,
            error_type TEXT NOT NULL,
            error_message TEXT NOT NULL,
            page_url TEXT,
            http_status INTEGER,
            "timestamp" DOUBLE PRECISION NOT NULL,
            is_recoverable BOOLEAN NOT NULL
        )""",
        "CREATE INDEX errors_job ON errors (job, id)",
        """CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY,
            job BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            step TEXT NOT NULL,
            "timestamp" DOUBLE PRECISION NOT NULL,
            duration_ms BIGINT,
            status TEXT NOT NULL,
            details TEXT
        )""",
        "CREATE INDEX events_job ON events (job, id)",
    ),
    # Version 2: Scrapyd's queue (pending jobs with no node yet: those of
    # version 1, recorded beside Scrapyd's own queue, join it), the nodes
    # sharing the store, and the projects' eggs.
    (
        "ALTER TABLE jobs ADD COLUMN priority DOUBLE PRECISION NOT NULL DEFAULT 0",
        "UPDATE jobs SET node = NULL WHERE status = 'pending'",
        "CREATE INDEX jobs_queue ON jobs (priority DESC, created_at, id)"
        " WHERE status = 'pending' AND node IS NULL",
        "CREATE INDEX jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL",
        """CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            url TEXT,
            max_proc INTEGER NOT NULL,
            running INTEGER NOT NULL,
            version TEXT,
            started_at DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE eggs (
            id BIGSERIAL PRIMARY KEY,
            project TEXT NOT NULL,
            version TEXT NOT NULL,
            egg BYTEA NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (project, version)
        )""",
    ),
    # Version 3: the webhook outbox and its attempts, the counters' series,
    # and the completion reason as a column (metrics count by it).
    (
        "ALTER TABLE jobs ADD COLUMN completion_reason TEXT",
        "UPDATE jobs SET completion_reason = state::jsonb ->> 'completion_reason'",
        """CREATE TABLE deliveries (
            id BIGSERIAL PRIMARY KEY,
            job BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            lease_until DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending'",
        "CREATE INDEX deliveries_job ON deliveries (job, id)",
        """CREATE TABLE delivery_attempts (
            id BIGSERIAL PRIMARY KEY,
            delivery BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            attempted_at DOUBLE PRECISION NOT NULL,
            http_status INTEGER,
            error TEXT,
            duration_ms INTEGER NOT NULL,
            next_attempt_at DOUBLE PRECISION
        )""",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery, id)",
        """CREATE TABLE series (
            id BIGSERIAL PRIMARY KEY,
            job BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            t DOUBLE PRECISION NOT NULL,
            pages BIGINT NOT NULL,
            documents BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            in_flight BIGINT NOT NULL,
            progress DOUBLE PRECISION
        )""",
        "CREATE INDEX series_job ON series (job, id)",
    ),
    # Version 4: pause and resume, and when a retried job may start.
    (
        "ALTER TABLE jobs ADD COLUMN run_after DOUBLE PRECISION",
        "ALTER TABLE jobs ADD COLUMN pause_requested_at DOUBLE PRECISION",
        "ALTER TABLE jobs ADD COLUMN pause_requeue BOOLEAN NOT NULL DEFAULT FALSE",
    ),
    # Version 5: the history's events left out between a job's first and last.
    ("ALTER TABLE jobs ADD COLUMN history_omitted BIGINT NOT NULL DEFAULT 0",),
    # Version 6: the key of a delivery to a job's own receiver; NULL: the
    # deliverer's webhook_secret signs it.
    ("ALTER TABLE deliveries ADD COLUMN secret TEXT",),
]
SCHEMA_VERSION = len(_MIGRATIONS)


def _quoted(columns: Iterable[str]) -> list[str]:
    # Some column names are keywords of PostgreSQL ("interval").
    return [f'"{c}"' for c in columns]


_SAVED = "id, cancel_requested_at, cancel_force, pause_requested_at, status"
_INSERT = (
    f"INSERT INTO jobs ({', '.join(_quoted(COLUMNS))}, state)"  # noqa: S608 (column names)
    f" VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})"
    f" ON CONFLICT (job_id) DO NOTHING RETURNING {_SAVED}"
)
# The pause request goes with any status but running or pausing (the bound
# value after the state: whether it stays).
_UPDATE = (
    f"UPDATE jobs SET {', '.join(f'{c} = %s' for c in _quoted(UPDATED_COLUMNS))}, state = %s,"  # noqa: S608
    " pause_requested_at = CASE WHEN %s THEN pause_requested_at END,"
    " pause_requeue = CASE WHEN %s THEN pause_requeue ELSE FALSE END"
    f" WHERE job_id = %s AND status = ANY(%s) RETURNING {_SAVED}"
)
_INSERT_ERROR = (
    "INSERT INTO errors (job, stage, error_type, error_message, page_url, http_status,"
    ' "timestamp", is_recoverable) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)'
)
_INSERT_EVENT = (
    'INSERT INTO events (job, step, "timestamp", duration_ms, status, details)'
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


class PostgresStore:
    def __init__(self, url: str, *, readonly: bool = False, deadline: float | None = None):
        self.location = display_location(url)
        self.readonly = readonly
        self.node = node_name()
        self.writes = 0
        self._url = url
        self._secrets = location_secrets(url)
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()
        self._deadline = deadline

    # -- connection -------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Any]:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = self._open()
                pool = self._pool
        return pool

    def _open(self) -> ConnectionPool[Any]:
        """Check (or make) the schema on a connection of its own, whose
        failure says why, then open the pool."""
        try:
            params = self._params()
            with psycopg.connect(**params, autocommit=True, row_factory=dict_row) as conn:
                version = _read_version(conn)
                if 0 <= version < SCHEMA_VERSION and not self.readonly:
                    version = _migrate(conn)
        except psycopg.Error as e:
            raise self._failure("open", e) from None
        if version != SCHEMA_VERSION:
            raise StoreError(_version_problem(self.location, version, self.readonly))
        pool: ConnectionPool[Any] = ConnectionPool(
            kwargs={**params, "autocommit": True, "row_factory": dict_row},
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            open=False,
            # A connection the server dropped (restart, idle timeout) is
            # replaced on checkout instead of failing one call.
            check=ConnectionPool.check_connection,
            timeout=self._deadline or POOL_TIMEOUT,
            name="scrapy-jobstatus",
        )
        pool.open(wait=False)
        return pool

    def _params(self) -> dict[str, Any]:
        # libpq reads the location (URL or keyword DSN) by its own rules;
        # PGPASSWORD and ~/.pgpass give the password where it holds none.
        params: dict[str, Any] = conninfo_to_dict(self._url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        if self._deadline:
            # libpq's connect_timeout is whole seconds, at least 2.
            params["connect_timeout"] = max(2, math.ceil(self._deadline))
            statement_ms = int(self._deadline * 1000)
            options = params.get("options") or ""
            params["options"] = f"{options} -c statement_timeout={statement_ms}".strip()
        params.setdefault("application_name", "scrapy-jobstatus")
        if self.readonly:
            options = params.get("options") or ""
            params["options"] = f"{options} -c default_transaction_read_only=on".strip()
        return params

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _failure(self, verb: str, error: psycopg.Error) -> StoreError:
        return StoreError(f"cannot {verb} the job store {self.location}: {self._text(error)}")

    def _text(self, error: BaseException) -> str:
        """The error in one line, without the password."""
        diag = getattr(error, "diag", None)
        text = (diag.message_primary if diag is not None else None) or str(error)
        text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
        return hide_secrets(text, self._secrets) or type(error).__name__

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Row]]:
        try:
            with self.pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as e:
            raise self._failure("write", e) from None
        self.writes += 1

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[psycopg.Connection[Row]]:
        """A connection to read with; ``snapshot``: several statements that
        see the same moment of the store."""
        try:
            with self.pool.connection() as conn:
                if snapshot:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        yield conn
                else:
                    yield conn
        except psycopg.Error as e:
            raise self._failure("read", e) from None

    # -- writes -----------------------------------------------------------------

    def add_pending(self, state: JobState) -> bool:
        with self._write() as conn:
            return conn.execute(_INSERT, row_values(state)).fetchone() is not None

    def start_job(self, state: JobState, resume: bool = False) -> StartResult:
        with self._write() as conn:
            while True:
                row = _job_row(conn, state.job_id, lock=True)
                if row is not None:
                    break
                inserted = conn.execute(_INSERT, row_values(state)).fetchone()
                if inserted is not None:
                    self._started(conn, inserted["id"], state)
                    return StartResult(True, state)
                # Inserted by another process since: lock and read that one.
            stored = decode_state(row)
            if not startable(stored, resume):
                return StartResult(False, stored)
            take_over_pending(state, stored, resume)
            _update(conn, state)
            self._started(conn, row["id"], state)
            return StartResult(True, state)

    def _started(self, conn: psycopg.Connection[Row], job: int, state: JobState) -> None:
        _insert_point(conn, job, state)
        self._notify(conn, job, [STARTED])

    def save(
        self,
        state: JobState,
        errors: Iterable[JobError] = (),
        events: Iterable[HistoryEvent] = (),
        history: Iterable[HistoryEvent] = (),
    ) -> SaveResult:
        events = list(events)
        with self._write() as conn:
            recreated = False
            if state.status in SETTLED_STATUSES and (stored := _job_row(conn, state.job_id, True)):
                events += settle_end(state, stored, time.time())
            new_events = events
            row = _update(conn, state, crawl=True)
            if row is None:
                row = conn.execute(
                    f"SELECT {_SAVED} FROM jobs WHERE job_id = %s",  # noqa: S608
                    (state.job_id,),
                ).fetchone()
                if row is not None:
                    return _save_result(row, written=False)
                # The record is gone: write it again from the crawl's memory.
                row = conn.execute(_INSERT, row_values(state)).fetchone()
                if row is None:  # made again by another process meanwhile
                    return SaveResult(False, False, None, False)
                events, recreated = history, True
            _insert_errors(conn, row["id"], errors)
            _insert_events(conn, row["id"], events)
            _insert_point(conn, row["id"], state)
            self._notify(conn, row["id"], webhook_types(state.status, new_events))
            return _save_result(row, written=True, recreated=recreated)

    def request_cancel(self, job_id: str, force: bool = False) -> RequestResult:
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id, lock=True)
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
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, %s),"
                " cancel_force = cancel_force OR %s WHERE id = %s",
                (now, force, row["id"]),
            )
            if details:
                _insert_events(conn, row["id"], [history_event("cancelled", now, after, details)])
                self._notify(conn, row["id"], webhook_types(after))
            return RequestResult(before, after)

    def end_job(self, job_id: str, status: JobStatus, message: str, *, unstarted: bool) -> bool:
        now = time.time()
        with self._write() as conn:
            row = _job_row(conn, job_id, lock=True)
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
            row = _job_row(conn, job_id, lock=True)
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
                    "UPDATE jobs SET pause_requested_at = COALESCE(pause_requested_at, %s),"
                    " pause_requeue = pause_requeue OR %s WHERE id = %s",
                    (now, requeue, row["id"]),
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
            row = _job_row(conn, job_id, lock=True)
            if row is None:
                return False
            state = decode_state(row)
            if state.status is not JobStatus.PENDING or warning in state.warnings:
                return False
            state.warnings.append(warning)
            conn.execute(
                "UPDATE jobs SET state = %s WHERE id = %s", (encode_state(state), row["id"])
            )
            stalled = [history_event("stalled", now, JobStatus.PENDING, warning)]
            _insert_events(conn, row["id"], stalled)
            self._notify(conn, row["id"], webhook_types(None, stalled))
            return True

    def _notify(self, conn: psycopg.Connection[Row], job: int, types: list[str]) -> None:
        """The job's webhooks for these events, in the outbox, in the write
        that makes the change they report."""
        if not types:
            return
        row = conn.execute("SELECT * FROM jobs WHERE id = %s", (job,)).fetchone()
        assert row is not None
        targets = webhook_targets(decode_state(row))
        if not targets:
            return
        now = time.time()
        document = _document(conn, row, ERRORS_IN_WEBHOOKS, now)
        insert = sql.postgres(sql.INSERT_DELIVERY)
        with conn.cursor() as cur:
            for event_type in types:
                body = _text(webhook_body(event_type, now, document))
                cur.executemany(insert, sql.delivery_values(job, event_type, body, now, targets))

    def reap_dead_jobs(self, node: str, alive: Callable[[int], bool]) -> list[str]:
        return reap_dead_jobs(self, node, alive)

    def prune(self, keep: int | None = None, older_than: float | None = None) -> int:
        terminal = [str(s) for s in TERMINAL_STATUSES]
        clauses: list[str] = []
        params: list[Any] = []
        if older_than is not None:
            clauses.append("(status = ANY(%s) AND completed_at < %s)")
            params += [terminal, time.time() - older_than]
        if keep is not None:
            clauses.append(
                "(status = ANY(%s) AND id NOT IN (SELECT id FROM jobs"
                " WHERE status = ANY(%s) ORDER BY created_at DESC, id DESC LIMIT %s))"
            )
            params += [terminal, terminal, keep]
        if not clauses:
            return 0
        with self._write() as conn:
            # Their errors and events go with them (ON DELETE CASCADE).
            cur = conn.execute(
                f"DELETE FROM jobs WHERE {' OR '.join(clauses)}",  # noqa: S608 (constants)
                params,
            )
            return cur.rowcount

    # -- reads ------------------------------------------------------------------

    def get(self, job_id: str) -> JobState | None:
        with self._read() as conn:
            row = _job_row(conn, job_id)
        return None if row is None else decode_state(row)

    def document(self, job_id: str, errors_kept: int = 20) -> dict[str, Any] | None:
        with self._read(snapshot=True) as conn:
            row = _job_row(conn, job_id)
            return None if row is None else _document(conn, row, errors_kept, time.time())

    def history(self, job_id: str) -> list[HistoryEvent]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT e.* FROM events e JOIN jobs j ON j.id = e.job"
                " WHERE j.job_id = %s ORDER BY e.id",
                (job_id,),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def errors(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobError]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT e.* FROM errors e JOIN jobs j ON j.id = e.job"
                " WHERE j.job_id = %s AND e.id > %s ORDER BY e.id LIMIT %s",
                (job_id, after, limit),
            ).fetchall()
        return [error_from_row(r) for r in rows]

    def list_jobs(
        self, where: JobFilter, limit: int = 50, offset: int = 0, cursor: str | None = None
    ) -> JobPage:
        clauses, params = filter_clauses(where, mark="%s")
        condition = " AND ".join(clauses) or "TRUE"
        if cursor is not None:
            created_at, key = decode_cursor(cursor)
            clauses.append("(created_at, id) < (%s, %s)")
            page_params = [*params, created_at, key]
            offset = 0
        else:
            page_params = list(params)
        with self._read(snapshot=True) as conn:
            total = conn.execute(
                f"SELECT COUNT(*) AS n FROM jobs WHERE {condition}",  # noqa: S608
                params,
            ).fetchone()["n"]
            rows = conn.execute(
                f"SELECT * FROM jobs WHERE {' AND '.join(clauses) or 'TRUE'}"  # noqa: S608
                " ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s",
                [*page_params, limit + 1, offset],
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return JobPage([decode_state(r) for r in rows], total, next_cursor)

    # -- the queue -----------------------------------------------------------------

    def claim_job(self, node: str, project: str | None = None) -> JobState | None:
        clause, params = sql.project_clause(project)
        statement = sql.CLAIM.format(project=clause, index="", lock=" FOR UPDATE SKIP LOCKED")
        with self._write() as conn:
            row = conn.execute(sql.postgres(statement), (node, *params, time.time())).fetchone()
        return None if row is None else decode_state(row)

    def queued_jobs(
        self, project: str | None = None, created_before: float | None = None
    ) -> list[JobState]:
        statement, params = sql.queued_jobs(project, created_before)
        with self._read() as conn:
            rows = conn.execute(sql.postgres(statement), params).fetchall()
        return [decode_state(r) for r in rows]

    def count_queued(self, project: str | None = None) -> int:
        clause, params = sql.project_clause(project)
        with self._read() as conn:
            row = conn.execute(
                sql.postgres(sql.COUNT_QUEUED.format(project=clause, index="")), params
            )
            return row.fetchone()["n"]

    def finished_jobs(self, limit: int) -> list[JobState]:
        with self._read() as conn:
            rows = conn.execute(sql.postgres(sql.FINISHED), (limit,)).fetchall()
        return [decode_state(r) for r in rows]

    def count_finished(self, limit: int) -> int:
        with self._read() as conn:
            return conn.execute(sql.postgres(sql.COUNT_FINISHED), (limit,)).fetchone()["n"]

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
            now, lease, limit, job_id, due_by, " FOR UPDATE SKIP LOCKED", keyed_only
        )
        with self._write() as conn:
            rows = conn.execute(sql.postgres(statement), values).fetchall()
        return sorted((sql.delivery_from_row(r) for r in rows), key=lambda d: d.delivery_id)

    def record_attempt(self, delivery: Delivery, attempt: Attempt) -> bool:
        with self._write() as conn:
            conn.execute(sql.postgres(sql.INSERT_ATTEMPT), sql.attempt_values(delivery, attempt))
            ended = conn.execute(sql.postgres(sql.END_ATTEMPT), sql.end_values(delivery, attempt))
            return ended.rowcount == 1

    def webhook_log(self, job_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            return sql.webhook_log(
                conn.execute(sql.postgres(sql.WEBHOOK_LOG), (job_id,)).fetchall()
            )

    def count_undelivered(self, job_id: str | None = None) -> int:
        clause, params = (sql.OF_JOB, (job_id,)) if job_id is not None else ("", ())
        with self._read() as conn:
            statement = sql.postgres(sql.COUNT_UNDELIVERED.format(job=clause))
            return conn.execute(statement, params).fetchone()["n"]

    def delivery_counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {r["status"]: r["n"] for r in conn.execute(sql.DELIVERY_COUNTS)}

    # -- the event stream and the series ---------------------------------------------

    def events_after(
        self, since: int, job_id: str | None = None, limit: int = 100
    ) -> list[tuple[int, str, HistoryEvent]]:
        clause, params = (sql.EVENT_OF_JOB, (job_id,)) if job_id is not None else ("", ())
        statement = sql.postgres(sql.EVENTS_AFTER.format(job=clause))
        with self._read() as conn:
            rows = conn.execute(statement, (since, *params, limit)).fetchall()
        return [(r["id"], r["job_id"], event_from_row(r)) for r in rows]

    def last_event_id(self) -> int:
        with self._read() as conn:
            return conn.execute(sql.LAST_EVENT).fetchone()["n"] or 0

    def series(self, job_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(sql.postgres(sql.SERIES), (job_id,)).fetchall()
        return [sql.point_from_row(r) for r in rows]

    # -- figures for metrics ---------------------------------------------------------

    def status_counts(self) -> list[tuple[str, str | None, str | None, int]]:
        with self._read() as conn:
            rows = conn.execute(sql.STATUS_COUNTS).fetchall()
        return [(r["status"], r["project"], r["spider"], r["n"]) for r in rows]

    def reason_counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {r["completion_reason"]: r["n"] for r in conn.execute(sql.REASON_COUNTS)}

    # -- the nodes -----------------------------------------------------------------

    def beat(self, node: NodeInfo) -> None:
        with self._write() as conn:
            conn.execute(sql.postgres(sql.BEAT), sql.beat_values(node))

    def nodes(self) -> list[NodeInfo]:
        with self._read() as conn:
            return [sql.node_from_row(r) for r in conn.execute(sql.NODES)]

    def reap_dead_nodes(self, timeout: float) -> list[ReapedJob]:
        return reap_dead_nodes(self, timeout)

    def dead_nodes(self, seen_before: float) -> list[NodeInfo]:
        with self._read() as conn:
            rows = conn.execute(sql.postgres(sql.DEAD_NODES), (seen_before,)).fetchall()
        return [sql.node_from_row(r) for r in rows]

    def forget_nodes(self, seen_before: float) -> int:
        with self._write() as conn:
            return conn.execute(sql.postgres(sql.FORGET_NODES), (seen_before,)).rowcount

    def requeue_claims(self, node: str) -> list[str]:
        with self._write() as conn:
            return [r["job_id"] for r in conn.execute(sql.postgres(sql.REQUEUE), (node,))]

    def started_jobs(self, node: str) -> list[JobState]:
        active = [str(s) for s in ACTIVE_STATUSES if s is not JobStatus.PENDING]
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE node = %s AND status = ANY(%s)", (node, active)
            ).fetchall()
        return [decode_state(r) for r in rows]

    # -- the eggs ------------------------------------------------------------------

    def put_egg(self, project: str, version: str, egg: bytes) -> None:
        with self._write() as conn:
            conn.execute(sql.postgres(sql.PUT_EGG), (project, version, egg, time.time()))

    def get_egg(self, project: str, version: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(sql.postgres(sql.GET_EGG), (project, version)).fetchone()
        return None if row is None else bytes(row["egg"])

    def egg_versions(self, project: str) -> list[str]:
        with self._read() as conn:
            rows = conn.execute(sql.postgres(sql.EGG_VERSIONS), (project,)).fetchall()
        return [r["version"] for r in rows]

    def egg_projects(self) -> list[str]:
        with self._read() as conn:
            return [r["project"] for r in conn.execute(sql.EGG_PROJECTS)]

    def delete_eggs(self, project: str, version: str | None = None) -> int:
        statement, params = sql.DELETE_EGGS, (project,)
        if version is not None:
            statement, params = statement + " AND version = ?", (project, version)
        with self._write() as conn:
            return conn.execute(sql.postgres(statement), params).rowcount


# -- schema --------------------------------------------------------------------


def _read_version(conn: psycopg.Connection[Row]) -> int:
    """The schema's version: 0 for none, -1 for tables not made by a
    version of this store."""
    found = conn.execute(
        "SELECT to_regclass('jobstatus_schema') IS NOT NULL AS versioned,"
        " to_regclass('jobs') IS NOT NULL AS jobs"
    ).fetchone()
    assert found is not None
    if not found["versioned"]:
        return -1 if found["jobs"] else 0
    row = conn.execute("SELECT max(version) AS version FROM jobstatus_schema").fetchone()
    return -1 if row is None or row["version"] is None else row["version"]


def _migrate(conn: psycopg.Connection[Row]) -> int:
    """Make or upgrade the schema, once whatever the processes that try at
    the same moment; returns the version found."""
    # A session lock taken before the transaction, not a transaction lock
    # taken in it: a transaction sees the tables that the lock's previous
    # holder made only if it begins after the wait (a wait on an advisory
    # lock does not refresh the catalog's cache; a transaction's start does).
    conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
    try:
        with conn.transaction():
            version = _read_version(conn)
            if not 0 <= version < SCHEMA_VERSION:
                return version
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            if version == 0:
                conn.execute(
                    "INSERT INTO jobstatus_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
            else:
                conn.execute("UPDATE jobstatus_schema SET version = %s", (SCHEMA_VERSION,))
    finally:
        if not conn.closed:  # a lost session lost its lock too
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
    return SCHEMA_VERSION


def _version_problem(location: str, version: int, readonly: bool) -> str:
    if version == 0:
        return f"no job store at {location} yet"
    if version == -1:
        return f"the job store {location} has tables not made by scrapy-jobstatus: move them away"
    if version < SCHEMA_VERSION:
        # Only a reader gets here: the first writer upgrades the schema.
        return (
            f"the job store {location} has schema version {version}, older than this "
            f"scrapy-jobstatus uses ({SCHEMA_VERSION}): open it once to write, to upgrade it"
        )
    return (
        f"the job store {location} has schema version {version}, newer than this "
        f"scrapy-jobstatus supports ({SCHEMA_VERSION}): upgrade scrapy-jobstatus"
    )


# -- rows ----------------------------------------------------------------------


_CLEAR_PAUSE = "UPDATE jobs SET pause_requested_at = NULL, pause_requeue = FALSE WHERE id = %s"


def _save_result(row: Row, *, written: bool, recreated: bool = False) -> SaveResult:
    return SaveResult(
        written,
        recreated,
        row["cancel_requested_at"],
        row["cancel_force"],
        row["pause_requested_at"],
        row["status"],
    )


def _update(conn: psycopg.Connection[Row], state: JobState, crawl: bool = False) -> Row | None:
    """Write the job if its stored status may move to the new one (from a
    ``crawl``'s write, as ``sources_of`` says); its key and requests, or
    None."""
    keep = keeps_pause_request(state.status)
    return conn.execute(
        _UPDATE,
        (
            *(column_value(state, c) for c in UPDATED_COLUMNS),
            encode_state(state),
            keep,
            keep,
            state.job_id,
            sources_of(state.status, crawl),
        ),
    ).fetchone()


def _job_row(conn: psycopg.Connection[Row], job_id: str, lock: bool = False) -> Row | None:
    if lock:
        return conn.execute("SELECT * FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)).fetchone()
    return conn.execute("SELECT * FROM jobs WHERE job_id = %s", (job_id,)).fetchone()


def _text(value: str | None) -> str | None:
    # A PostgreSQL text cannot hold NUL, which SQLite keeps; an error message
    # may carry one from a binary response.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _insert_errors(conn: psycopg.Connection[Row], job: int, errors: Iterable[JobError]) -> None:
    rows = [
        (
            job,
            _text(e.stage),
            _text(e.error_type),
            _text(e.error_message),
            _text(e.page_url),
            e.http_status,
            e.timestamp,
            bool(e.is_recoverable),
        )
        for e in errors
    ]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ERROR, rows)


def _insert_events(conn: psycopg.Connection[Row], job: int, events: Iterable[HistoryEvent]) -> None:
    """The events, with ids in the order their writes commit: events.json
    reads them after an id, and must not miss one committed late with a
    smaller id. The lock is held to the commit; events are few."""
    rows = [
        (job, _text(e.step), e.timestamp, e.duration_ms, _text(e.status), _text(e.details))
        for e in events
    ]
    if rows:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
        with conn.cursor() as cur:
            cur.executemany(_INSERT_EVENT, rows)
        count = conn.execute(sql.postgres(sql.COUNT_EVENTS), (job,)).fetchone()
        extra = 0 if count is None else count["n"] - 2 * HISTORY_KEPT
        if extra > 0:
            conn.execute(sql.postgres(sql.THIN_EVENTS), sql.thin_events_values(job))
            conn.execute(sql.postgres(sql.ADD_OMITTED), (extra, job))


def _document(
    conn: psycopg.Connection[Row], row: Row, errors_kept: int, now: float
) -> dict[str, Any]:
    latest = conn.execute(
        "SELECT * FROM errors WHERE job = %s ORDER BY id DESC LIMIT %s", (row["id"], errors_kept)
    ).fetchall()
    events = conn.execute("SELECT * FROM events WHERE job = %s ORDER BY id", (row["id"],))
    return decode_state(row).to_document(
        errors=[error_from_row(r) for r in reversed(latest)],
        history=[event_from_row(r) for r in events],
        now=now,
    )


def _insert_point(conn: psycopg.Connection[Row], job: int, state: JobState) -> None:
    conn.execute(sql.postgres(sql.INSERT_POINT), sql.point_values(job, state))
    count = conn.execute(sql.postgres(sql.COUNT_POINTS), (job,)).fetchone()
    if count is not None and count["n"] > sql.SERIES_POINTS:
        conn.execute(sql.postgres(sql.THIN_POINTS), (job,))
