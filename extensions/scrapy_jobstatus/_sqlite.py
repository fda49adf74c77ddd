"""The SQLite job store: the embedded default, shared by the crawls and
readers of one node.

WAL lets readers read while crawls write; every write is one short
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the busy
timeout instead of failing with "database is locked". Connecting writes
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

from ._model import (
    TERMINAL_STATUSES,
)
from ._sqlstore import ERROR_COLUMNS, EVENT_COLUMNS, Dialect, SQLStore, same, version_problem
from ._store import (
    StoreError,
    node_name,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

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
_MIGRATIONS = (_V1, _V2, _V3, _V4, _V5, _V6, _V8)
SCHEMA_VERSION = len(_MIGRATIONS)


def _insert_from_json(table: str, columns: tuple[str, ...]) -> str:
    """A statement inserting a job's rows from one JSON array of arrays."""
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    return (
        f"INSERT INTO {table} (job, {', '.join(columns)}) SELECT ?, {values}"  # noqa: S608
        " FROM json_each(?) ORDER BY key"
    )


_INSERT_ERRORS = _insert_from_json("errors", ERROR_COLUMNS)
_INSERT_EVENTS = _insert_from_json("events", EVENT_COLUMNS)


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
DIALECT = Dialect(statement=same, row_lock="", claim_lock="", queue_index=QUEUE_INDEX, text=_text)


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

    def _encode_rows(self, rows: list[tuple[Any, ...]]) -> str:
        # A write's errors (or events) in one JSON array, inserted by one
        # statement: each statement gives the GIL up while the lock is held.
        return json.dumps(rows, ensure_ascii=False)

    def _insert_errors(self, conn: sqlite3.Connection, job: int, rows: str) -> None:
        conn.execute(_INSERT_ERRORS, (job, rows))

    def _insert_events(self, conn: sqlite3.Connection, job: int, rows: str) -> None:
        # One writer at a time: ids are given in the order writes commit.
        conn.execute(_INSERT_EVENTS, (job, rows))

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
