"""The job store: SQLite, shared by every crawl process and reader of a node.

WAL lets readers poll while crawls write; every write is one short
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the busy
timeout instead of failing with "database is locked".
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from ._model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    CompletionReason,
    HistoryEvent,
    JobError,
    JobState,
    REASON_FOR_STATUS,
    JobStatus,
    sources_of,
)

BUSY_TIMEOUT_MS = 30_000
# The status document is rendered by every write, with this many latest
# errors, so that a read is one row: reads outnumber writes (one per interval).
RENDERED_ERRORS = 100
# A heartbeat this many intervals old, with the process gone, means it died.
STALE_INTERVALS = 5
MIN_STALE_SECONDS = 5.0
UNMONITORED_WARNING = "unmonitored: the crawl ran without the job status extension"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
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
    state TEXT NOT NULL,
    document TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at DESC);
CREATE TABLE IF NOT EXISTS errors (
    error_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    stage TEXT,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    page_url TEXT,
    http_status INTEGER,
    timestamp REAL NOT NULL,
    is_recoverable INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_job ON errors (job_id, error_id);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    step TEXT NOT NULL,
    timestamp REAL NOT NULL,
    duration_ms INTEGER,
    status TEXT NOT NULL,
    details TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, event_id);
"""

_STATE_FIELDS = {f.name for f in fields(JobState)}


class JobNotFound(LookupError):
    pass


class CancelOutcome:
    """What a cancel request did: the status before and after it."""

    def __init__(self, before: JobStatus, after: JobStatus):
        self.before = before
        self.after = after

    @property
    def code(self) -> int:
        """The HTTP code of the contract: 200 cancelled (now or before), 202
        cancellation under way, 400 the job had already ended otherwise."""
        if self.after is JobStatus.CANCELLED:
            return 200
        if self.after is JobStatus.CANCELLING:
            return 202
        return 400


class JobStore:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.node = socket.gethostname()
        self.writes = 0
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}
            if "document" not in columns:  # a store made before documents were rendered
                conn.execute("ALTER TABLE jobs ADD COLUMN document TEXT")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        with _transaction(conn):
            yield conn
        self.writes += 1

    # -- writers -------------------------------------------------------------

    def add_job(self, state: JobState) -> bool:
        """Record a new job; False if the id is already taken."""
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO jobs (job_id, project, spider, status, node,"
                " pid, interval, created_at, updated_at, completed_at, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _row_values(state),
            )
            if cur.rowcount == 1:
                self._render(conn, state.job_id)
            return cur.rowcount == 1

    def start_job(self, state: JobState) -> JobState:
        """Record a crawl starting: a new job, or a pending one moving to
        running. Returns ``state`` when it was recorded, else the stored job
        that prevented it (a cancelled pending job never runs; a job id is
        never run twice)."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE job_id = ?", (state.job_id,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO jobs (job_id, project, spider, status, node, pid,"
                    " interval, created_at, updated_at, completed_at, state)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _row_values(state),
                )
                self._render(conn, state.job_id)
                return state
            stored = _state_from_row(row)
            if stored.status is not JobStatus.PENDING:
                return stored
            state.created_at = stored.created_at
            state.project = state.project or stored.project
            state.args = state.args or stored.args
            state.settings = state.settings or stored.settings
            _update(conn, state)
            self._render(conn, state.job_id)
            return state

    def save(
        self,
        state: JobState,
        errors: Iterable[JobError] = (),
        events: Iterable[HistoryEvent] = (),
    ) -> tuple[bool, float | None, bool]:
        """Write the job's state with its new errors and events, and poll its
        cancel request, in one transaction.

        Returns (written, cancel_requested_at, force); ``written`` is False
        when the stored status does not allow the move (someone else ended
        the job)."""
        with self._write() as conn:
            written = _update(conn, state)
            conn.executemany(
                "INSERT INTO errors (job_id, stage, error_type, error_message,"
                " page_url, http_status, timestamp, is_recoverable)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        state.job_id,
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
            conn.executemany(
                "INSERT INTO events (job_id, step, timestamp, duration_ms, status,"
                " details) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (state.job_id, h.step, h.timestamp, h.duration_ms, h.status, h.details)
                    for h in events
                ],
            )
            row = self._render(conn, state.job_id)
        if row is None:
            return written, None, False
        return written, row["cancel_requested_at"], bool(row["cancel_force"])

    def request_cancel(self, job_id: str, force: bool = False) -> CancelOutcome:
        """Cancel a job: a pending one is cancelled at once, a running one gets
        a cancel request that its crawl polls. Idempotent; a terminal job is
        left as it is."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            state = _state_from_row(row)
            before = state.status
            if before in TERMINAL_STATUSES:
                return CancelOutcome(before, before)
            if before is JobStatus.PENDING:
                state.cancel_requested_at = now
                _finish(state, JobStatus.CANCELLED, "Cancelled before it started.", now)
                _update(conn, state)
                conn.execute(
                    "UPDATE jobs SET cancel_requested_at = ? WHERE job_id = ?",
                    (now, job_id),
                )
                _insert_event(conn, job_id, "cancelled", now, state.status, "cancelled while pending")
                self._render(conn, job_id)
                return CancelOutcome(before, JobStatus.CANCELLED)
            conn.execute(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?),"
                " cancel_force = MAX(cancel_force, ?) WHERE job_id = ?",
                (now, int(force), job_id),
            )
            self._render(conn, job_id)
            return CancelOutcome(before, JobStatus.CANCELLING)

    def fail_job(self, job_id: str, message: str) -> bool:
        """End an active job ``failed`` (its process died); False if it had
        already ended."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None or _state_from_row(row).status in TERMINAL_STATUSES:
                return False
            state = _state_from_row(row)
            _finish(state, JobStatus.FAILED, message, now)
            state.error_message = message
            _update(conn, state)
            _insert_event(conn, job_id, "failed", now, state.status, message)
            self._render(conn, job_id)
            return True

    def complete_unmonitored(self, job_id: str, message: str) -> bool:
        """End a pending job ``completed`` when its crawl ran without the
        extension and exited normally; False if the job is no longer pending."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None or _state_from_row(row).status is not JobStatus.PENDING:
                return False
            state = _state_from_row(row)
            _finish(state, JobStatus.COMPLETED, message, now)
            state.warnings.append(UNMONITORED_WARNING)
            _update(conn, state)
            _insert_event(conn, job_id, "finished unmonitored", now, state.status, message)
            self._render(conn, job_id)
            return True

    def prune(self, keep: int | None = None, older_than: float | None = None) -> int:
        """Delete finished jobs beyond the newest ``keep`` or completed more
        than ``older_than`` seconds ago. Active jobs are never pruned."""
        terminal = tuple(str(s) for s in TERMINAL_STATUSES)
        marks = ", ".join("?" * len(terminal))
        clauses, params = [], []
        if older_than is not None:
            clauses.append(f"(status IN ({marks}) AND completed_at < ?)")
            params += [*terminal, time.time() - older_than]
        if keep is not None:
            clauses.append(
                f"(status IN ({marks}) AND job_id NOT IN (SELECT job_id FROM jobs"
                f" WHERE status IN ({marks}) ORDER BY created_at DESC LIMIT ?))"
            )
            params += [*terminal, *terminal, keep]
        if not clauses:
            return 0
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT job_id FROM jobs WHERE {' OR '.join(clauses)}", params
                )
            ]
            for table in ("errors", "events", "jobs"):
                conn.executemany(
                    f"DELETE FROM {table} WHERE job_id = ?",  # noqa: S608
                    [(i,) for i in ids],
                )
            return len(ids)

    # -- readers -------------------------------------------------------------

    def get(self, job_id: str) -> JobState | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        state = _state_from_row(row)
        if self._is_dead(state):
            self.fail_job(job_id, _died_message(state))
            return self.get(job_id)
        return state

    def document(self, job_id: str, errors_kept: int = 20) -> dict[str, Any] | None:
        """The job's status document with its latest ``errors_kept`` errors."""
        row = self.conn.execute(
            "SELECT status, node, pid, interval, updated_at, document FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        if self._is_dead(_Liveness(**{k: row[k] for k in _Liveness._fields})):
            self.get(job_id)  # records the death
            return self.document(job_id, errors_kept)
        if row["document"] is None or errors_kept > RENDERED_ERRORS:
            state = self.get(job_id)
            return None if state is None else self._document(state, errors_kept)
        document = json.loads(row["document"])
        document["errors"] = document["errors"][-errors_kept:] if errors_kept else []
        if document["is_active"] and document["started_at"]:
            started = datetime.fromisoformat(document["started_at"]).timestamp()
            document["running_time"] = round(time.time() - started, 3)
        return document

    def _render(self, conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
        """Store the job's status document as of this write; returns the row."""
        row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is not None:
            document = self._document(_state_from_row(row), RENDERED_ERRORS)
            conn.execute(
                "UPDATE jobs SET document = ? WHERE job_id = ?",
                (json.dumps(document, separators=(",", ":")), job_id),
            )
        return row

    def _document(self, state: JobState, errors_kept: int) -> dict[str, Any]:
        conn = self.conn
        error_count = conn.execute(
            "SELECT COUNT(*) FROM errors WHERE job_id = ?", (state.job_id,)
        ).fetchone()[0]
        latest = [
            _error_from_row(r)
            for r in conn.execute(
                "SELECT * FROM errors WHERE job_id = ? ORDER BY error_id DESC LIMIT ?",
                (state.job_id, errors_kept),
            )
        ]
        return state.to_document(
            errors=latest[::-1],
            error_count=error_count,
            history=self.history(state.job_id),
            now=time.time(),
        )

    def history(self, job_id: str) -> list[HistoryEvent]:
        return [
            HistoryEvent(
                step=r["step"],
                timestamp=r["timestamp"],
                status=r["status"],
                duration_ms=r["duration_ms"],
                details=r["details"],
            )
            for r in self.conn.execute(
                "SELECT * FROM events WHERE job_id = ? ORDER BY event_id", (job_id,)
            )
        ]

    def errors(self, job_id: str) -> Iterator[JobError]:
        for row in self.conn.execute(
            "SELECT * FROM errors WHERE job_id = ? ORDER BY error_id", (job_id,)
        ):
            yield _error_from_row(row)

    def list_jobs(
        self,
        project: str | None = None,
        spider: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobState], int]:
        """Jobs newest first, and how many match in all."""
        clauses, params = [], []
        for column, value in (("project", project), ("spider", spider)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        # A running job with a cancel request is shown as cancelling.
        if status == JobStatus.CANCELLING:
            clauses.append("(status = 'cancelling' OR (status = 'running'"
                           " AND cancel_requested_at IS NOT NULL))")
        elif status == JobStatus.RUNNING:
            clauses.append("status = 'running' AND cancel_requested_at IS NULL")
        elif status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        conn = self.conn
        total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()[0]  # noqa: S608
        rows = conn.execute(
            f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC"  # noqa: S608
            " LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        states = []
        for row in rows:
            state = _state_from_row(row)
            if self._is_dead(state):
                state = self.get(state.job_id) or state
            states.append(state)
        return states, total

    def summaries(self, states: Iterable[JobState]) -> list[dict[str, Any]]:
        """Status documents without history and error list, for listings."""
        states = list(states)
        marks = ", ".join("?" * len(states))
        counts = dict(
            self.conn.execute(
                f"SELECT job_id, COUNT(*) FROM errors WHERE job_id IN ({marks})"  # noqa: S608
                " GROUP BY job_id",
                [s.job_id for s in states],
            ).fetchall()
        )
        now = time.time()
        return [
            s.to_document(errors=[], error_count=counts.get(s.job_id, 0), history=[], now=now)
            for s in states
        ]

    def _is_dead(self, state: JobState | _Liveness) -> bool:
        if state.status not in ACTIVE_STATUSES or state.status == JobStatus.PENDING:
            return False
        if state.pid is None or state.node != self.node or state.updated_at is None:
            return False
        stale_after = max(STALE_INTERVALS * (state.interval or 1.0), MIN_STALE_SECONDS)
        if time.time() - state.updated_at < stale_after:
            return False
        return not _pid_alive(state.pid)


class _Liveness(NamedTuple):
    """What tells whether a job's process died, as read from its row."""

    status: str
    node: str | None
    pid: int | None
    interval: float | None
    updated_at: float | None


def _died_message(state: JobState) -> str:
    return (
        f"The crawl process (pid {state.pid}) died without reporting an end; "
        f"its last heartbeat was at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(state.updated_at or 0))}."
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _finish(state: JobState, status: JobStatus, message: str, now: float) -> None:
    state.status = status
    state.message = message
    state.completion_reason = str(REASON_FOR_STATUS.get(status, CompletionReason.DONE))
    state.completed_at = now
    state.updated_at = now
    state.requests_in_flight = 0


def _encode_state(state: JobState) -> str:
    data = asdict(state)
    data["status"] = str(state.status)
    return json.dumps(data, separators=(",", ":"))


def _row_values(state: JobState) -> tuple[Any, ...]:
    return (
        state.job_id,
        state.project,
        state.spider,
        str(state.status),
        state.node,
        state.pid,
        state.interval,
        state.created_at or time.time(),
        state.updated_at,
        state.completed_at,
        _encode_state(state),
    )


def _update(conn: sqlite3.Connection, state: JobState) -> bool:
    sources = sources_of(state.status)
    marks = ", ".join("?" * len(sources))
    cur = conn.execute(
        "UPDATE jobs SET project = ?, spider = ?, status = ?, node = ?, pid = ?,"
        " interval = ?, updated_at = ?, completed_at = ?, state = ?"
        f" WHERE job_id = ? AND status IN ({marks})",  # noqa: S608
        (
            state.project,
            state.spider,
            str(state.status),
            state.node,
            state.pid,
            state.interval,
            state.updated_at,
            state.completed_at,
            _encode_state(state),
            state.job_id,
            *sources,
        ),
    )
    return cur.rowcount == 1


def _insert_event(
    conn: sqlite3.Connection, job_id: str, step: str, now: float, status: str, details: str
) -> None:
    conn.execute(
        "INSERT INTO events (job_id, step, timestamp, duration_ms, status, details)"
        " VALUES (?, ?, ?, NULL, ?, ?)",
        (job_id, step, now, str(status), details),
    )


def _state_from_row(row: sqlite3.Row) -> JobState:
    data = {k: v for k, v in json.loads(row["state"]).items() if k in _STATE_FIELDS}
    state = JobState(**data)
    # Columns written by other processes win over the crawl's own snapshot.
    state.status = JobStatus(row["status"])
    state.cancel_requested_at = row["cancel_requested_at"] or state.cancel_requested_at
    state.created_at = row["created_at"]
    return state


def _error_from_row(row: sqlite3.Row) -> JobError:
    return JobError(
        error_id=row["error_id"],
        stage=row["stage"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        page_url=row["page_url"],
        http_status=row["http_status"],
        timestamp=row["timestamp"],
        is_recoverable=bool(row["is_recoverable"]),
    )
