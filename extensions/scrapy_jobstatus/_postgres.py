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

import functools
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
    TERMINAL_STATUSES,
)
from ._sqlstore import ERROR_COLUMNS, EVENT_COLUMNS, Dialect, SQLStore, version_problem
from ._store import (
    StoreError,
    display_location,
    node_name,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    Row = dict[str, Any]

CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise
POOL_TIMEOUT = 30.0  # seconds to wait for a connection of the pool
POOL_MIN, POOL_MAX = 1, 4
# Serializes the schema's creation and upgrades across processes: the
# advisory lock of this key (any constant of this project's own).
SCHEMA_LOCK = 0x6A6F_6273_7461_7475  # "jobstatu"
# Serializes the writes that add history events, to their commit.
EVENTS_LOCK = 0x6A6F_6273_6576_6E74  # "jobsevnt"

# Version 8: periodic schedules, and the ticks each one has claimed (one row
# a tick: the claim that makes its job); a job's schedule as a column.
_V8: tuple[str, ...] = (
    "ALTER TABLE jobs ADD COLUMN schedule TEXT",
    "CREATE INDEX jobs_schedule ON jobs (schedule, created_at, id) WHERE schedule IS NOT NULL",
    """CREATE TABLE schedules (
        id BIGSERIAL PRIMARY KEY,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        spider TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        definition TEXT NOT NULL,
        next_tick DOUBLE PRECISION,
        last_tick DOUBLE PRECISION,
        last_job TEXT,
        fired BIGINT NOT NULL DEFAULT 0,
        skipped BIGINT NOT NULL DEFAULT 0,
        missed BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        UNIQUE (project, name)
    )""",
    "CREATE INDEX schedules_due ON schedules (next_tick) WHERE enabled",
    """CREATE TABLE schedule_ticks (
        id BIGSERIAL PRIMARY KEY,
        schedule BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        tick DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        count BIGINT NOT NULL,
        job_id TEXT,
        node TEXT,
        recorded_at DOUBLE PRECISION NOT NULL,
        details TEXT,
        UNIQUE (schedule, tick)
    )""",
    # A schedule's webhook events have no job.
    "ALTER TABLE deliveries ALTER COLUMN job DROP NOT NULL",
)

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
    _V8,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def _text(value: str | None) -> str | None:
    # A PostgreSQL text cannot hold NUL, which SQLite keeps; an error message
    # may carry one from a binary response.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


_INSERT_ERROR = sql.postgres(
    f"INSERT INTO errors (job, {', '.join(ERROR_COLUMNS)})"  # noqa: S608 (column names)
    f" VALUES ({', '.join('?' * (len(ERROR_COLUMNS) + 1))})"
)
_INSERT_EVENT = sql.postgres(
    f"INSERT INTO events (job, {', '.join(EVENT_COLUMNS)})"  # noqa: S608 (column names)
    f" VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)

DIALECT = Dialect(
    statement=functools.lru_cache(maxsize=256)(sql.postgres),
    row_lock=" FOR UPDATE",
    claim_lock=" FOR UPDATE SKIP LOCKED",
    queue_index="",
    text=_text,
    now="EXTRACT(EPOCH FROM clock_timestamp())::float8",
    name_lock="SELECT pg_advisory_xact_lock(hashtext(?))",
    no_job=None,
)


class PostgresStore(SQLStore):
    dialect = DIALECT

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
            raise StoreError(
                version_problem(
                    self.location,
                    version,
                    SCHEMA_VERSION,
                    "has tables not made by scrapy-jobstatus: move them away",
                )
            )
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

    def _insert_errors(self, conn: psycopg.Connection[Row], job: int, rows: Any) -> None:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ERROR, [(job, *row) for row in rows])

    def _insert_events(self, conn: psycopg.Connection[Row], job: int, rows: Any) -> None:
        """The events, with ids in the order their writes commit: events.json
        reads them after an id, and must not miss one committed late with a
        smaller id. The lock is held to the commit; events are few."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
        with conn.cursor() as cur:
            cur.executemany(_INSERT_EVENT, [(job, *row) for row in rows])

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
