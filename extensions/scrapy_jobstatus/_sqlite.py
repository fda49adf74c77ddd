"""The SQLite job store: the embedded default, shared by the crawls and
readers of one node.

WAL lets readers read while crawls write; every write is one short
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the busy
timeout instead of failing with "database is locked", and a running job's
write, the crawls' most frequent, is a single statement. Connecting writes
nothing unless the schema has to be made, so readers work on a read-only or
full disk. A job id only ever reaches SQL as a bound value.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _sql as sql
from ._model import HISTORY_KEPT, sources_of
from ._rows import UPDATED_COLUMNS, column_value, encode_state
from ._sqlstore import (
    ERROR_COLUMNS,
    EVENT_COLUMNS,
    SAVED,
    Dialect,
    SQLStore,
    quoted,
    same,
    save_result,
    version_problem,
)
from ._store import (
    SaveResult,
    StoreError,
    node_name,
)
from ._transitions import keeps_pause_request

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._model import JobState

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
# Version 7: leases. The attempt that holds a job (only its crawl writes
# it), and until when its crawl holds it, by the store's clock: another
# node takes the job over only once that has passed.
_V7 = """
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
UPDATE jobs SET attempt = json_extract(state, '$.attempt')
    WHERE json_extract(state, '$.attempt') IS NOT NULL;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
"""
# Version 8: periodic schedules, and the ticks each one has claimed (one row
# a tick: the claim that makes its job); a job's schedule as a column, to
# list a schedule's jobs and find its active one.
_V8 = """
ALTER TABLE jobs ADD COLUMN schedule TEXT;
CREATE INDEX jobs_schedule ON jobs (schedule, created_at, id) WHERE schedule IS NOT NULL;
CREATE TABLE schedules (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    spider TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    definition TEXT NOT NULL,
    next_tick REAL,
    last_tick REAL,
    last_job TEXT,
    fired INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    missed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (project, name)
);
CREATE INDEX schedules_due ON schedules (next_tick) WHERE enabled;
CREATE TABLE schedule_ticks (
    id INTEGER PRIMARY KEY,
    schedule INTEGER NOT NULL,
    tick REAL NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    job_id TEXT,
    node TEXT,
    recorded_at REAL NOT NULL,
    details TEXT,
    UNIQUE (schedule, tick)
);
"""
# Version 9: what retention's prune reads, oldest first: the ended jobs,
# and the deliveries made or given up.
_V9 = """
CREATE INDEX jobs_ended ON jobs (completed_at, id)
    WHERE status IN ('cancelled', 'completed', 'failed');
CREATE INDEX deliveries_done ON deliveries (created_at, id) WHERE status <> 'pending';
"""
_MIGRATIONS = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)
SCHEMA_VERSION = len(_MIGRATIONS)


def _insert_from_json(
    table: str,
    columns: tuple[str, ...],
    job: str = "?",
    rows: str = "json_each(?) r",
    where: str = "",
) -> str:
    """A statement inserting a job's rows from one JSON array of arrays
    (``r``), in their order."""
    values = ", ".join(f"json_extract(r.value, '$[{i}]')" for i in range(len(columns)))
    return (
        f"INSERT INTO {table} (job, {', '.join(columns)}) SELECT {job}, {values}"  # noqa: S608
        f" FROM {rows}{where} ORDER BY r.key"
    )


_INSERT_ERRORS = _insert_from_json("errors", ERROR_COLUMNS)
_INSERT_EVENTS = _insert_from_json("events", EVENT_COLUMNS)

# The store's clock in seconds since the epoch: unixepoch with 'subsec' from
# SQLite 3.42, the Julian day before.
NOW = (
    "unixepoch('now', 'subsec')"
    if sqlite3.sqlite_version_info >= (3, 42)
    else "((julianday('now') - 2440587.5) * 86400.0)"
)
# A running job's write in one statement, a transaction of its own: the
# store's lock is then held while SQLite runs, never while the writer's
# thread waits for the GIL, as it may at each statement of a transaction in
# a busy crawl (up to the switch interval, 5 ms, every time). A view of the
# connection's own (TEMP) takes the write's values; its trigger writes the
# errors, events and series point, then the job, if the job's stored status
# may move to the new one (``sources``, a JSON array) and the crawl's attempt
# holds it: those of a job ended or taken over elsewhere are not written; the
# write renews the attempt's lease.
_TICK_COLUMNS = (
    "job_id",
    "sources",
    *UPDATED_COLUMNS,
    "state",
    "keep_pause",
    "attempt_held",
    "lease",
    "error_rows",
    "event_rows",
    *sql.POINT_COLUMNS,
)


def _movable(job: str = "") -> str:
    """The condition on the job's row (``job``: its alias and a dot) for
    the write to go through."""
    statuses = "SELECT value FROM json_each(NEW.sources)"
    return (
        f"{job}job_id = NEW.job_id AND {job}status IN ({statuses})"  # noqa: S608
        f" AND {job}attempt = NEW.attempt_held"
    )


_WHERE_J = f" WHERE {_movable('j.')}"
_TICK_ERRORS = "jobs j, json_each(NEW.error_rows) r"
_TICK_EVENTS = "jobs j, json_each(NEW.event_rows) r"
_JOB = "(SELECT id FROM jobs WHERE job_id = NEW.job_id)"
_TICK_VIEW = (
    f"CREATE TEMP VIEW IF NOT EXISTS job_tick ({', '.join(quoted(_TICK_COLUMNS))})"
    f" AS SELECT {', '.join(['NULL'] * len(_TICK_COLUMNS))}"
)
_TICK_TRIGGER = f"""
CREATE TEMP TRIGGER IF NOT EXISTS job_tick INSTEAD OF INSERT ON job_tick BEGIN
{_insert_from_json("errors", ERROR_COLUMNS, "j.id", _TICK_ERRORS, _WHERE_J)};
{_insert_from_json("events", EVENT_COLUMNS, "j.id", _TICK_EVENTS, _WHERE_J)};
INSERT INTO series (job, {", ".join(sql.POINT_COLUMNS)})
    SELECT id, {", ".join(f"NEW.{c}" for c in sql.POINT_COLUMNS)} FROM jobs WHERE {_movable()};
{sql.THIN_POINTS_OF.format(job=_JOB)}
    AND (SELECT COUNT(*) FROM series WHERE job = {_JOB}) > {sql.SERIES_POINTS};
UPDATE jobs SET {", ".join(f"{c} = NEW.{c}" for c in quoted(UPDATED_COLUMNS))},
    state = NEW.state,
    pause_requested_at = CASE WHEN NEW.keep_pause THEN pause_requested_at END,
    pause_requeue = CASE WHEN NEW.keep_pause THEN pause_requeue ELSE FALSE END,
    lease_until = COALESCE({NOW} + NEW.lease, lease_until),
    history_omitted = history_omitted + CASE WHEN NEW.event_rows IS NULL THEN 0 ELSE
        MAX(0, (SELECT COUNT(*) FROM events WHERE job = jobs.id) - {2 * HISTORY_KEPT}) END
    WHERE {_movable()};
{sql.THIN_EVENTS_OF.format(job=_JOB, kept=HISTORY_KEPT - 1)}
    AND NEW.event_rows IS NOT NULL;
END
"""  # noqa: S608 (constants)
_TICK = (
    f"INSERT INTO job_tick ({', '.join(quoted(_TICK_COLUMNS))})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(_TICK_COLUMNS))})"
)
_SAVED = f"SELECT {SAVED} FROM jobs WHERE job_id = ?"  # noqa: S608


def _open(location: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    uri = isinstance(location, str) and location.startswith("file:")
    return sqlite3.connect(
        location,
        uri=uri,
        isolation_level=None,
        check_same_thread=False,
        timeout=busy_timeout_ms / 1000,
    )


def _text(value: str | None) -> str | None:
    # JSON text loses everything after a NUL in SQLite: written as U+FFFD,
    # as PostgreSQL's text has it.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


# One writer at a time (BEGIN IMMEDIATE): a claimed job goes to one node.
DIALECT = Dialect(
    statement=same,
    row_lock="",
    claim_lock="",
    queue_index=QUEUE_INDEX,
    text=_text,
    ended_index=" INDEXED BY jobs_ended",
    key_lookup=" NOT INDEXED",
    now=NOW,
)


class SQLiteStore(SQLStore):
    dialect = DIALECT

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, deadline: float | None = None
    ):
        self.path = Path(path)
        self.location = str(self.path)
        self.readonly = readonly
        self.node = node_name()
        self.writes = 0
        self._conn: sqlite3.Connection | None = None
        # The running job's one-statement write is set up on the connection.
        self._tick_ready = False
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
                raise StoreError(
                    version_problem(
                        self.path,
                        version,
                        SCHEMA_VERSION,
                        "has an older, unsupported schema: move it away",
                    )
                )
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
            self._tick_ready = False

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        # A WAL reader sees one moment of the store per statement; the
        # reads of a document or a page are quick enough not to need more.
        try:
            yield self.conn
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the job store {self.path}: {e}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._reconnect_if_replaced()
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

    def _save_running(
        self,
        state: JobState,
        error_rows: Any,
        event_rows: Any,
        point: tuple[Any, ...],
        lease: float | None,
    ) -> SaveResult | None:
        values = (
            state.job_id,
            json.dumps(sources_of(state.status, crawl=True)),
            *(column_value(state, c) for c in UPDATED_COLUMNS),
            encode_state(state),
            keeps_pause_request(state.status),
            state.attempt,
            lease,
            error_rows,
            event_rows,
            *point,
        )
        self._reconnect_if_replaced()
        try:
            conn = self.conn
            if not self._tick_ready:
                conn.execute(_TICK_VIEW)
                conn.execute(_TICK_TRIGGER)
                self._tick_ready = True
            # The trigger's writes count among the connection's changes: a
            # job written has at least its series point.
            changes = conn.total_changes
            conn.execute(_TICK, values)
            written = conn.total_changes > changes
            # The requests polled after the write, without its lock.
            row = conn.execute(_SAVED, (state.job_id,)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the job store {self.path}: {e}") from None
        if row is None:
            return None  # written again from the crawl's memory, in a transaction
        self.writes += 1
        return save_result(row, written=written)

    def _encode_rows(self, rows: list[tuple[Any, ...]]) -> str:
        # A write's errors (or events) in one JSON array, inserted by one
        # statement: each statement gives the GIL up while the lock is held.
        return json.dumps(rows, ensure_ascii=False)

    def _insert_errors(self, conn: sqlite3.Connection, job: int, rows: str) -> None:
        conn.execute(_INSERT_ERRORS, (job, rows))

    def _insert_events(self, conn: sqlite3.Connection, job: int, rows: str) -> None:
        # One writer at a time: ids are given in the order writes commit.
        conn.execute(_INSERT_EVENTS, (job, rows))


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


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
