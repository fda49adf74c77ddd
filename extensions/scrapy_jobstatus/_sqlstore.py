"""The job store written once in SQL, over a small dialect per backend.

A backend gives its connections (``_read`` and ``_write``: a transaction,
its errors as the store's one-line ``StoreError``) and a ``Dialect``: what
its SQL says differently. Every statement here is written with ``?``
marks and named row access."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _sql as sql
from ._model import (
    ACTIVE_STATUSES,
    HISTORY_KEPT,
    TERMINAL_STATUSES,
    JobStatus,
    shown_status,
    sources_of,
)
from ._rows import (
    COLUMNS,
    UPDATED_COLUMNS,
    column_value,
    decode_state,
    encode_state,
    error_from_row,
    event_from_row,
    filter_clauses,
    row_values,
)
from ._schedule import (
    AddResult,
    Firing,
    Outcome,
    Overlap,
    RunResult,
    Schedule,
    ScheduleInfo,
    TickRecord,
    first_tick,
    job_id_for,
    plan_ticks,
    run_job_id,
)
from ._store import (
    ERRORS_IN_WEBHOOKS,
    STARTED,
    JobNotFound,
    JobPage,
    RequestResult,
    SaveResult,
    StartResult,
    decode_cursor,
    encode_cursor,
    reap_dead_jobs,
    reap_dead_nodes,
)
from ._transitions import (
    SETTLED_STATUSES,
    end_for_crawl,
    end_state,
    history_event,
    keeps_pause_request,
    pause,
    resume,
    settle_end,
    startable,
    take_over_pending,
    webhook_body,
    webhook_targets,
    webhook_types,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from contextlib import AbstractContextManager

    from ._model import HistoryEvent, JobError, JobState
    from ._store import Attempt, Delivery, JobFilter, NodeInfo, ReapedJob


@dataclass(frozen=True)
class Dialect:
    """What a backend's SQL says its own way."""

    # A statement written with ``?`` marks, as the driver takes it.
    statement: Callable[[str], str]
    # Appended to a SELECT of the row a transition reads, then writes.
    row_lock: str
    # Appended to the SELECT of a claim (a job, the due deliveries).
    claim_lock: str
    # Named after ``jobs`` in a read of the queue, to use its index.
    queue_index: str
    # A text as the backend can store it.
    text: Callable[[str | None], str | None]
    # The store's clock, in seconds since the epoch, as an SQL expression:
    # the nodes sharing a store compare their ticks to one clock.
    now: str = "((julianday('now') - 2440587.5) * 86400.0)"
    # A statement taking a lock of the transaction on a name (bound); empty
    # where a write holds the whole store (SQLite).
    name_lock: str = ""
    # The ``job`` of a delivery that reports no job (a schedule's event):
    # SQLite's column is NOT NULL, and its row ids begin at 1.
    no_job: int | None = 0


def same(statement: str) -> str:
    return statement


def _quoted(columns: Iterable[str]) -> list[str]:
    # Some column names are keywords of PostgreSQL ("interval").
    return [f'"{c}"' for c in columns]


# What a save reports, returned by the statement that writes the job.
SAVED = "id, cancel_requested_at, cancel_force, pause_requested_at, status"
INSERT = (
    f"INSERT INTO jobs ({', '.join(_quoted(COLUMNS))}, state)"  # noqa: S608 (column names)
    f" VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
    f" ON CONFLICT (job_id) DO NOTHING RETURNING {SAVED}"
)
# The pause request goes with any status but running or pausing (the bound
# value after the state: whether it stays).
UPDATE = (
    f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _quoted(UPDATED_COLUMNS))}, state = ?,"  # noqa: S608
    " pause_requested_at = CASE WHEN ? THEN pause_requested_at END,"
    " pause_requeue = CASE WHEN ? THEN pause_requeue ELSE FALSE END"
    " WHERE job_id = ? AND status IN ({sources})"
    # The job's points of the series, to thin them without another statement.
    f" RETURNING {SAVED}, (SELECT COUNT(*) FROM series WHERE job = jobs.id) AS points"
)
CLEAR_PAUSE = "UPDATE jobs SET pause_requested_at = NULL, pause_requeue = FALSE WHERE id = ?"
# The columns of an error and of an event, after the job's key.
ERROR_COLUMNS = (
    "stage",
    "error_type",
    "error_message",
    "page_url",
    "http_status",
    '"timestamp"',
    "is_recoverable",
)
EVENT_COLUMNS = ("step", '"timestamp"', "duration_ms", "status", "details")


def update_values(state: JobState, crawl: bool = False) -> tuple[str, tuple[Any, ...]]:
    """The statement and values that write the job if its stored status may
    move to the new one (from a ``crawl``'s write, as ``sources_of`` says);
    it returns the job's key and requests, or nothing."""
    sources = sources_of(state.status, crawl)
    keep = keeps_pause_request(state.status)
    values = (
        *(column_value(state, c) for c in UPDATED_COLUMNS),
        encode_state(state),
        keep,
        keep,
        state.job_id,
        *sources,
    )
    return UPDATE.format(sources=", ".join("?" * len(sources))), values


def save_result(row: Mapping[str, Any], *, written: bool, recreated: bool = False) -> SaveResult:
    return SaveResult(
        written,
        recreated,
        row["cancel_requested_at"],
        bool(row["cancel_force"]),
        row["pause_requested_at"],
        row["status"],
    )


def version_problem(location: object, version: int, current: int, foreign: str) -> str:
    """Why a store of schema ``version`` (0: none, -1: ``foreign`` tables)
    cannot be used by this version of the package (``current``)."""
    if version == 0:
        return f"no job store at {location} yet"
    if version == -1:
        return f"the job store {location} {foreign}"
    if version < current:
        # Only a reader gets here: the first writer upgrades the schema.
        return (
            f"the job store {location} has schema version {version}, older than this "
            f"scrapy-jobstatus uses ({current}): open it once to write, to upgrade it"
        )
    return (
        f"the job store {location} has schema version {version}, newer than this "
        f"scrapy-jobstatus supports ({current}): upgrade scrapy-jobstatus"
    )


class SQLStore:
    """Every transition, read, queue, outbox, node, egg and event method of
    a store, over the backend's connections and dialect."""

    dialect: Dialect

    def _read(self, snapshot: bool = False) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _encode_rows(self, rows: list[tuple[Any, ...]]) -> Any:
        """Rows of errors or events as the backend inserts them, encoded
        before its write begins."""
        return rows

    def _insert_errors(self, conn: Any, job: int, rows: Any) -> None:
        raise NotImplementedError

    def _insert_events(self, conn: Any, job: int, rows: Any) -> None:
        """Insert the events (encoded rows); thinning is the caller's."""
        raise NotImplementedError

    def _execute(self, conn: Any, statement: str, params: Any = ()) -> Any:
        return conn.execute(self.dialect.statement(statement), params)

    # -- writes -----------------------------------------------------------------

    def add_pending(self, state: JobState) -> bool:
        values = row_values(state)
        with self._write() as conn:
            return self._execute(conn, INSERT, values).fetchone() is not None

    def start_job(self, state: JobState, resume: bool = False) -> StartResult:
        with self._write() as conn:
            while True:
                row = self._job_row(conn, state.job_id, lock=True)
                if row is not None:
                    break
                inserted = self._execute(conn, INSERT, row_values(state)).fetchone()
                if inserted is not None:
                    self._started(conn, inserted["id"], state)
                    return StartResult(True, state)
                # Inserted by another process since: lock and read that one.
            stored = decode_state(row)
            if not startable(stored, resume):
                return StartResult(False, stored)
            take_over_pending(state, stored, resume)
            self._update(conn, state)
            self._started(conn, row["id"], state)
            return StartResult(True, state)

    def _started(self, conn: Any, job: int, state: JobState) -> None:
        self._insert_point(conn, job, sql.point_values(job, state))
        self._notify(conn, job, [STARTED])

    def save(
        self,
        state: JobState,
        errors: Iterable[JobError] = (),
        events: Iterable[HistoryEvent] = (),
        history: Iterable[HistoryEvent] = (),
    ) -> SaveResult:
        events = list(events)
        # Everything is encoded before the write begins: the write holds the
        # store's lock (SQLite's whole file) for its statements only.
        update = update_values(state, crawl=True)
        error_rows = self._error_rows(errors)
        event_rows = self._event_rows(events)
        point = sql.point_values(0, state)[1:]
        with self._write() as conn:
            recreated = False
            if state.status in SETTLED_STATUSES and (
                stored := self._job_row(conn, state.job_id, lock=True)
            ):
                events += settle_end(state, stored, time.time())
                update, event_rows = update_values(state, crawl=True), self._event_rows(events)
            new_events = events
            # One statement writes the job, gives its key and polls the
            # cancel and pause requests.
            row = self._execute(conn, *update).fetchone()
            if row is None:
                row = self._execute(
                    conn,
                    f"SELECT {SAVED} FROM jobs WHERE job_id = ?",  # noqa: S608
                    (state.job_id,),
                ).fetchone()
                if row is not None:
                    return save_result(row, written=False)
                # The record is gone: write it again from the crawl's memory.
                row = self._execute(conn, INSERT, row_values(state)).fetchone()
                if row is None:  # made again by another process meanwhile
                    return SaveResult(False, False, None, False)
                event_rows, recreated = self._event_rows(history), True
            job = row["id"]
            if error_rows is not None:
                self._insert_errors(conn, job, error_rows)
            self._add_events(conn, job, event_rows)
            points = None if recreated else row["points"]
            self._insert_point(conn, job, (job, *point), points)
            self._notify(conn, job, webhook_types(state.status, new_events))
            return save_result(row, written=True, recreated=recreated)

    def request_cancel(self, job_id: str, force: bool = False) -> RequestResult:
        with self._write() as conn:
            return self._cancel(conn, self._requested_job(conn, job_id), force, time.time())

    def _cancel(self, conn: Any, row: Any, force: bool, now: float) -> RequestResult:
        """The cancel request of the job of ``row`` (locked)."""
        state = decode_state(row)
        before = state.status
        if before in TERMINAL_STATUSES:
            return RequestResult(before, before)
        if before in (JobStatus.PENDING, JobStatus.PAUSED):
            end_state(state, JobStatus.CANCELLED, f"Cancelled while {before}.", now)
            state.cancel_requested_at = now
            self._update(conn, state)
            after = JobStatus.CANCELLED
            details = f"cancelled while {before}"
        else:
            after = JobStatus.CANCELLING
            details = None
        self._execute(
            conn,
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?),"
            " cancel_force = cancel_force OR ? WHERE id = ?",
            (now, bool(force), row["id"]),
        )
        if details:
            cancelled = [history_event("cancelled", now, after, details)]
            self._add_events(conn, row["id"], self._event_rows(cancelled))
            self._notify(conn, row["id"], webhook_types(after))
        return RequestResult(before, after)

    def end_job(self, job_id: str, status: JobStatus, message: str, *, unstarted: bool) -> bool:
        now = time.time()
        with self._write() as conn:
            row = self._job_row(conn, job_id, lock=True)
            if row is None:
                return False
            state = decode_state(row)
            if not state.status.is_active or (unstarted and state.status is not JobStatus.PENDING):
                return False
            events = end_for_crawl(state, status, message, now, unstarted=unstarted)
            self._update(conn, state)
            self._add_events(conn, row["id"], self._event_rows(events))
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
            row = self._requested_job(conn, job_id)
            state = decode_state(row)
            before = shown_status(state)
            after, events = decide(state, now)
            moved = state.status is not JobStatus(row["status"])
            if moved:
                self._update(conn, state)
            elif after is JobStatus.PAUSING:
                self._execute(
                    conn,
                    "UPDATE jobs SET pause_requested_at = COALESCE(pause_requested_at, ?),"
                    " pause_requeue = pause_requeue OR ? WHERE id = ?",
                    (now, bool(requeue), row["id"]),
                )
            elif events:  # a pause withdrawn
                self._execute(conn, CLEAR_PAUSE, (row["id"],))
            self._add_events(conn, row["id"], self._event_rows(events))
            if moved:
                self._notify(conn, row["id"], webhook_types(state.status))
            return RequestResult(before, after)

    def warn_pending(self, job_id: str, warning: str) -> bool:
        now = time.time()
        with self._write() as conn:
            row = self._job_row(conn, job_id, lock=True)
            if row is None:
                return False
            state = decode_state(row)
            if state.status is not JobStatus.PENDING or warning in state.warnings:
                return False
            state.warnings.append(warning)
            self._execute(
                conn, "UPDATE jobs SET state = ? WHERE id = ?", (encode_state(state), row["id"])
            )
            stalled = [history_event("stalled", now, JobStatus.PENDING, warning)]
            self._add_events(conn, row["id"], self._event_rows(stalled))
            self._notify(conn, row["id"], webhook_types(None, stalled))
            return True

    def _requested_job(self, conn: Any, job_id: str) -> Any:
        """The row of the job a request is for, locked; JobNotFound if none."""
        row = self._job_row(conn, job_id, lock=True)
        if row is None:
            raise JobNotFound(job_id)
        return row

    def _update(self, conn: Any, state: JobState) -> bool:
        """Write the job if its stored status may move to the new one."""
        return self._execute(conn, *update_values(state)).fetchone() is not None

    def _notify(self, conn: Any, job: int, types: list[str]) -> None:
        """The job's webhooks for these events, in the outbox, in the write
        that makes the change they report."""
        if not types:
            return
        row = self._execute(conn, "SELECT * FROM jobs WHERE id = ?", (job,)).fetchone()
        targets = webhook_targets(decode_state(row))
        if not targets:
            return
        now = time.time()
        document = self._document(conn, row, ERRORS_IN_WEBHOOKS, now)
        insert = self.dialect.statement(sql.INSERT_DELIVERY)
        cursor = conn.cursor()
        try:
            for event_type in types:
                body = self.dialect.text(webhook_body(event_type, now, document))
                cursor.executemany(insert, sql.delivery_values(job, event_type, body, now, targets))
        finally:
            cursor.close()

    # -- a write's rows ----------------------------------------------------------

    def _error_rows(self, errors: Iterable[JobError]) -> Any:
        text = self.dialect.text
        rows = [
            (
                text(e.stage),
                text(e.error_type),
                text(e.error_message),
                text(e.page_url),
                e.http_status,
                e.timestamp,
                bool(e.is_recoverable),
            )
            for e in errors
        ]
        return self._encode_rows(rows) if rows else None

    def _event_rows(self, events: Iterable[HistoryEvent]) -> Any:
        text = self.dialect.text
        rows = [
            (text(e.step), e.timestamp, e.duration_ms, text(e.status), text(e.details))
            for e in events
        ]
        return self._encode_rows(rows) if rows else None

    def _add_events(self, conn: Any, job: int, rows: Any) -> None:
        """The events, and the history thinned past its first and last
        ``HISTORY_KEPT`` (counted in the job's ``history_omitted``)."""
        if rows is None:
            return
        self._insert_events(conn, job, rows)
        extra = self._execute(conn, sql.COUNT_EVENTS, (job,)).fetchone()["n"] - 2 * HISTORY_KEPT
        if extra > 0:
            self._execute(conn, sql.THIN_EVENTS, sql.thin_events_values(job))
            self._execute(conn, sql.ADD_OMITTED, (extra, job))

    def _insert_point(
        self, conn: Any, job: int, point: tuple[Any, ...], before: int | None = None
    ) -> None:
        """A point of the job's series, and every other one gone past
        ``SERIES_POINTS``; ``before``: the job's points, when known."""
        self._execute(conn, sql.INSERT_POINT, point)
        if before is None:
            before = self._execute(conn, sql.COUNT_POINTS, (job,)).fetchone()["n"] - 1
        if before + 1 > sql.SERIES_POINTS:
            self._execute(conn, sql.THIN_POINTS, (job,))

    # -- reads ------------------------------------------------------------------

    def get(self, job_id: str) -> JobState | None:
        with self._read() as conn:
            row = self._job_row(conn, job_id)
            return None if row is None else decode_state(row)

    def document(self, job_id: str, errors_kept: int = 20) -> dict[str, Any] | None:
        with self._read(snapshot=True) as conn:
            row = self._job_row(conn, job_id)
            return None if row is None else self._document(conn, row, errors_kept, time.time())

    def _job_row(self, conn: Any, job_id: str, lock: bool = False) -> Any:
        lock_clause = self.dialect.row_lock if lock else ""
        statement = f"SELECT * FROM jobs WHERE job_id = ?{lock_clause}"  # noqa: S608
        return self._execute(conn, statement, (job_id,)).fetchone()

    def _document(
        self, conn: Any, row: Mapping[str, Any], errors_kept: int, now: float
    ) -> dict[str, Any]:
        latest = self._execute(
            conn,
            "SELECT * FROM errors WHERE job = ? ORDER BY id DESC LIMIT ?",
            (row["id"], errors_kept),
        ).fetchall()
        events = self._execute(conn, "SELECT * FROM events WHERE job = ? ORDER BY id", (row["id"],))
        return decode_state(row).to_document(
            errors=[error_from_row(r) for r in reversed(latest)],
            history=[event_from_row(r) for r in events],
            now=now,
        )

    def history(self, job_id: str) -> list[HistoryEvent]:
        with self._read() as conn:
            rows = self._execute(
                conn,
                "SELECT e.* FROM events e JOIN jobs j ON j.id = e.job"
                " WHERE j.job_id = ? ORDER BY e.id",
                (job_id,),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def errors(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobError]:
        with self._read() as conn:
            rows = self._execute(
                conn,
                "SELECT e.* FROM errors e JOIN jobs j ON j.id = e.job"
                " WHERE j.job_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [error_from_row(r) for r in rows]

    def list_jobs(
        self, where: JobFilter, limit: int = 50, offset: int = 0, cursor: str | None = None
    ) -> JobPage:
        clauses, params = filter_clauses(where)
        condition = " AND ".join(clauses) or "TRUE"
        page_params = list(params)
        if cursor is not None:
            created_at, key = decode_cursor(cursor)
            clauses.append("(created_at, id) < (?, ?)")
            page_params += [created_at, key]
            offset = 0
        with self._read(snapshot=True) as conn:
            total = self._execute(
                conn,
                f"SELECT COUNT(*) AS n FROM jobs WHERE {condition}",  # noqa: S608
                params,
            ).fetchone()["n"]
            rows = self._execute(
                conn,
                f"SELECT * FROM jobs WHERE {' AND '.join(clauses) or 'TRUE'}"  # noqa: S608
                " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                [*page_params, limit + 1, offset],
            ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return JobPage([decode_state(r) for r in rows], total, next_cursor)

    # -- the queue -----------------------------------------------------------------

    def claim_job(self, node: str, project: str | None = None) -> JobState | None:
        clause, params = sql.project_clause(project)
        statement = sql.CLAIM.format(
            project=clause, index=self.dialect.queue_index, lock=self.dialect.claim_lock
        )
        with self._write() as conn:
            row = self._execute(conn, statement, (node, *params, time.time())).fetchone()
        return None if row is None else decode_state(row)

    def queued_jobs(
        self, project: str | None = None, created_before: float | None = None
    ) -> list[JobState]:
        statement, params = sql.queued_jobs(project, created_before, self.dialect.queue_index)
        with self._read() as conn:
            rows = self._execute(conn, statement, params).fetchall()
        return [decode_state(r) for r in rows]

    def count_queued(self, project: str | None = None) -> int:
        clause, params = sql.project_clause(project)
        statement = sql.COUNT_QUEUED.format(project=clause, index=self.dialect.queue_index)
        with self._read() as conn:
            return self._execute(conn, statement, params).fetchone()["n"]

    def finished_jobs(self, limit: int) -> list[JobState]:
        with self._read() as conn:
            rows = self._execute(conn, sql.FINISHED, (limit,)).fetchall()
        return [decode_state(r) for r in rows]

    def count_finished(self, limit: int) -> int:
        with self._read() as conn:
            return self._execute(conn, sql.COUNT_FINISHED, (limit,)).fetchone()["n"]

    def started_jobs(self, node: str) -> list[JobState]:
        active = [str(s) for s in ACTIVE_STATUSES if s is not JobStatus.PENDING]
        marks = ", ".join("?" * len(active))
        with self._read() as conn:
            rows = self._execute(
                conn,
                f"SELECT * FROM jobs WHERE node = ? AND status IN ({marks})",  # noqa: S608
                (node, *active),
            ).fetchall()
        return [decode_state(r) for r in rows]

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
            now, lease, limit, job_id, due_by, self.dialect.claim_lock, keyed_only
        )
        with self._write() as conn:
            rows = self._execute(conn, statement, values).fetchall()
        return sorted((sql.delivery_from_row(r) for r in rows), key=lambda d: d.delivery_id)

    def record_attempt(self, delivery: Delivery, attempt: Attempt) -> bool:
        with self._write() as conn:
            self._execute(conn, sql.INSERT_ATTEMPT, sql.attempt_values(delivery, attempt))
            ended = self._execute(conn, sql.END_ATTEMPT, sql.end_values(delivery, attempt))
            return ended.rowcount == 1

    def webhook_log(self, job_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            return sql.webhook_log(self._execute(conn, sql.WEBHOOK_LOG, (job_id,)).fetchall())

    def count_undelivered(self, job_id: str | None = None) -> int:
        clause, params = (sql.OF_JOB, (job_id,)) if job_id is not None else ("", ())
        with self._read() as conn:
            statement = sql.COUNT_UNDELIVERED.format(job=clause)
            return self._execute(conn, statement, params).fetchone()["n"]

    def delivery_counts(self) -> dict[str, int]:
        with self._read() as conn:
            return {r["status"]: r["n"] for r in self._execute(conn, sql.DELIVERY_COUNTS)}

    # -- the event stream and the series ---------------------------------------------

    def events_after(
        self, since: int, job_id: str | None = None, limit: int = 100
    ) -> list[tuple[int, str, HistoryEvent]]:
        clause, params = (sql.EVENT_OF_JOB, (job_id,)) if job_id is not None else ("", ())
        statement = sql.EVENTS_AFTER.format(job=clause)
        with self._read() as conn:
            rows = self._execute(conn, statement, (since, *params, limit)).fetchall()
        return [(r["id"], r["job_id"], event_from_row(r)) for r in rows]

    def last_event_id(self) -> int:
        with self._read() as conn:
            return self._execute(conn, sql.LAST_EVENT).fetchone()["n"] or 0

    def series(self, job_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = self._execute(conn, sql.SERIES, (job_id,)).fetchall()
        return [sql.point_from_row(r) for r in rows]

    # -- figures for metrics ---------------------------------------------------------

    def status_counts(self) -> list[tuple[str, str | None, str | None, int]]:
        with self._read() as conn:
            rows = self._execute(conn, sql.STATUS_COUNTS).fetchall()
        return [(r["status"], r["project"], r["spider"], r["n"]) for r in rows]

    def reason_counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = self._execute(conn, sql.REASON_COUNTS).fetchall()
        return {r["completion_reason"]: r["n"] for r in rows}

    # -- the nodes -----------------------------------------------------------------

    def reap_dead_jobs(self, node: str, alive: Callable[[int], bool]) -> list[str]:
        return reap_dead_jobs(self, node, alive)  # type: ignore[arg-type]

    def reap_dead_nodes(self, timeout: float) -> list[ReapedJob]:
        return reap_dead_nodes(self, timeout)  # type: ignore[arg-type]

    def beat(self, node: NodeInfo) -> None:
        with self._write() as conn:
            self._execute(conn, sql.BEAT, sql.beat_values(node))

    def nodes(self) -> list[NodeInfo]:
        with self._read() as conn:
            return [sql.node_from_row(r) for r in self._execute(conn, sql.NODES).fetchall()]

    def dead_nodes(self, seen_before: float) -> list[NodeInfo]:
        with self._read() as conn:
            rows = self._execute(conn, sql.DEAD_NODES, (seen_before,)).fetchall()
        return [sql.node_from_row(r) for r in rows]

    def forget_nodes(self, seen_before: float) -> int:
        with self._write() as conn:
            return self._execute(conn, sql.FORGET_NODES, (seen_before,)).rowcount

    def requeue_claims(self, node: str) -> list[str]:
        with self._write() as conn:
            return [r["job_id"] for r in self._execute(conn, sql.REQUEUE, (node,)).fetchall()]

    # -- the eggs ------------------------------------------------------------------

    def put_egg(self, project: str, version: str, egg: bytes) -> None:
        with self._write() as conn:
            self._execute(conn, sql.PUT_EGG, (project, version, egg, time.time()))

    def get_egg(self, project: str, version: str) -> bytes | None:
        with self._read() as conn:
            row = self._execute(conn, sql.GET_EGG, (project, version)).fetchone()
        return None if row is None else bytes(row["egg"])

    def egg_versions(self, project: str) -> list[str]:
        with self._read() as conn:
            rows = self._execute(conn, sql.EGG_VERSIONS, (project,)).fetchall()
        return [r["version"] for r in rows]

    def egg_projects(self) -> list[str]:
        with self._read() as conn:
            return [r["project"] for r in self._execute(conn, sql.EGG_PROJECTS).fetchall()]

    def delete_eggs(self, project: str, version: str | None = None) -> int:
        statement, params = sql.DELETE_EGGS, (project,)
        if version is not None:
            statement, params = statement + " AND version = ?", (project, version)
        with self._write() as conn:
            return self._execute(conn, statement, params).rowcount

    # -- one-off jobs alone (schedule.json's overlap = skip) ----------------------

    def add_alone(self, state: JobState) -> AddResult:
        """Queue the pending job unless a job of its project and spider (and
        of its ``overlap_key``, if it has one) is active, in one write: of
        two such jobs asked for at once, one is queued."""
        values = row_values(state)
        with self._write() as conn:
            if self.dialect.name_lock:
                key = f"{state.project}/{state.spider}"
                self._execute(conn, self.dialect.name_lock, (key,))
            active = [str(s) for s in ACTIVE_STATUSES]
            rows = self._execute(
                conn,
                "SELECT * FROM jobs WHERE project = ? AND spider = ?"  # noqa: S608
                f" AND status IN ({', '.join('?' * len(active))}) ORDER BY created_at",
                (state.project, state.spider, *active),
            ).fetchall()
            for row in rows:
                other = decode_state(row)
                if state.overlap_key is None or other.overlap_key == state.overlap_key:
                    return AddResult(False, other.job_id)
            return AddResult(self._execute(conn, INSERT, values).fetchone() is not None)

    # -- periodic schedules ---------------------------------------------------------

    def put_schedule(self, schedule: Schedule, now: float | None = None) -> bool:
        """Create the schedule, or replace the one of its name (its history
        stays); True if created. Its next tick is its rule's next after
        ``now`` (default: this process's clock)."""
        now = time.time() if now is None else now
        next_tick = first_tick(schedule.rule, now)
        with self._write() as conn:
            row = self._execute(
                conn,
                sql.PUT_SCHEDULE,
                (
                    schedule.project,
                    schedule.name,
                    schedule.spider,
                    schedule.enabled,
                    json.dumps(schedule.definition(), separators=(",", ":")),
                    next_tick,
                    now,
                    now,
                ),
            ).fetchone()
        return bool(row["created_at"] == now)

    def enable_schedule(self, project: str, name: str, enabled: bool) -> bool:
        """Enable or disable; False if there is no such schedule. The ticks
        that pass while it is disabled are missed."""
        with self._write() as conn:
            row = self._execute(
                conn, sql.ENABLE_SCHEDULE, (enabled, time.time(), project, name)
            ).fetchone()
        return row is not None

    def delete_schedule(self, project: str, name: str) -> bool:
        """Remove the schedule and its history (its jobs stay)."""
        with self._write() as conn:
            row = self._execute(conn, sql.DELETE_SCHEDULE, (project, name)).fetchone()
            if row is not None:
                self._execute(conn, sql.DELETE_TICKS, (row["id"],))
        return row is not None

    def schedules(
        self, project: str | None = None, name: str | None = None, history: int = 0
    ) -> list[ScheduleInfo]:
        """The schedules (of a project; of a name), with the ``history``
        latest lines of each."""
        clauses, params = [], []
        for column, value in (("project", project), ("name", name)):
            if value is not None:
                clauses.append(f"s.{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read(snapshot=True) as conn:
            rows = self._execute(conn, sql.SCHEDULES.format(where=where), params).fetchall()
            return [
                schedule_info(
                    row,
                    self._ticks(conn, row["id"], history) if history else [],
                )
                for row in rows
            ]

    def _ticks(self, conn: Any, schedule: int, limit: int) -> list[TickRecord]:
        rows = self._execute(conn, sql.TICKS, (schedule, limit)).fetchall()
        return [tick_from_row(r) for r in rows]

    def schedule_counts(self) -> dict[bool, int]:
        with self._read() as conn:
            rows = self._execute(conn, sql.SCHEDULE_COUNTS).fetchall()
        return {bool(r["enabled"]): r["n"] for r in rows}

    def fire_schedules(
        self, node: str, webhooks: list[str], limit: int = 100, now: float | None = None
    ) -> Firing:
        """Claim the due ticks of every schedule, by the store's clock (or
        ``now``, a test's): each schedule's in a write of its own, which
        records the tick and queues its job together. Whatever the nodes
        doing this at once, a tick is claimed once (its row is unique), and
        its job id is the tick's."""
        clock, at = self._clock(now)
        with self._read() as conn:
            statement = sql.DUE_SCHEDULES.format(now=clock)
            rows = self._execute(conn, statement, (*at, limit)).fetchall()
        due = [r["id"] for r in rows if r["wait"] <= 0]
        later = [r["wait"] for r in rows if r["wait"] > 0]
        records: list[TickRecord] = []
        for schedule in due:
            with self._write() as conn:
                fired, wait = self._fire(conn, schedule, node, webhooks, now)
            records += fired
            if wait is not None:
                later.append(wait)
        return Firing(records, min(later) if later else None)

    def _clock(self, now: float | None) -> tuple[str, tuple[float, ...]]:
        """The store's clock in SQL, or a given time, bound."""
        if now is None:
            return self.dialect.now, ()
        return "CAST(? AS DOUBLE PRECISION)", (now,)

    def _fire(
        self, conn: Any, schedule: int, node: str, webhooks: list[str], at: float | None
    ) -> tuple[list[TickRecord], float | None]:
        """The schedule's due ticks claimed, and the seconds to its next."""
        clock, bound = self._clock(at)
        statement = sql.SCHEDULE_ROW.format(now=clock, lock=self.dialect.row_lock)
        row = self._execute(conn, statement, (*bound, schedule)).fetchone()
        now = row["now"] if row is not None else 0.0
        if row is None or not row["enabled"] or row["next_tick"] is None or row["next_tick"] > now:
            return [], None  # claimed by another node meanwhile, or changed
        info = schedule_info(row, [])
        s = info.schedule
        plan = plan_ticks(s.rule, row["next_tick"], now, s.catch_up, s.starting_deadline)
        records = []
        if plan.missed and plan.last_missed is not None:
            missed = TickRecord(plan.last_missed, Outcome.MISSED, plan.missed, None, node, now)
            if self._record_tick(conn, schedule, missed):
                records.append(missed)
        for tick in plan.fire:
            record = self._tick_job(conn, schedule, s, tick, node, webhooks, now)
            if record is not None:
                records.append(record)
        for record in records:
            if record.outcome is not Outcome.FIRED:
                self._notify_schedule(conn, s, record, webhooks)
        fired = [r for r in records if r.outcome is Outcome.FIRED]
        self._execute(
            conn,
            sql.SCHEDULE_TICKED,
            (
                plan.next_tick,
                max(plan.fire, default=None),
                fired[-1].job_id if fired else None,
                len(fired),
                sum(r.outcome is Outcome.SKIPPED for r in records),
                sum(r.count for r in records if r.outcome is Outcome.MISSED),
                schedule,
            ),
        )
        return records, None if plan.next_tick is None else plan.next_tick - now

    def _tick_job(
        self,
        conn: Any,
        schedule: int,
        s: Schedule,
        tick: float,
        node: str,
        webhooks: list[str],
        now: float,
    ) -> TickRecord | None:
        """The tick's claim and its job, or its skip; None if claimed before."""
        job_id = job_id_for(s.name, tick)
        active = self._schedule_active(conn, s)
        if active and s.overlap is Overlap.SKIP:
            details = f"job {active[0]['job_id']} of the schedule is still active"
            record = TickRecord(tick, Outcome.SKIPPED, 1, None, node, now, details)
            return record if self._record_tick(conn, schedule, record) else None
        record = TickRecord(tick, Outcome.FIRED, 1, job_id, node, now)
        if not self._record_tick(conn, schedule, record):
            return None
        if s.overlap is Overlap.REPLACE:
            for row in active:
                self._cancel(conn, row, False, now)
        self._execute(conn, INSERT, row_values(s.job(job_id, tick, webhooks)))
        return record

    def _notify_schedule(
        self, conn: Any, s: Schedule, record: TickRecord, webhooks: list[str]
    ) -> None:
        """A tick skipped or missed, as a webhook event (``schedule.skipped``,
        ``schedule.missed``) to the node's receivers and the schedule's own,
        in the outbox, in the write that records it."""
        targets = [(url, None) for url in webhooks]
        targets += [(url, s.job_webhook_secret) for url in s.job_webhooks]
        if not targets:
            return
        body = webhook_body(f"schedule.{record.outcome}", record.recorded_at, s.event(record))
        values = sql.delivery_values(
            self.dialect.no_job, f"schedule.{record.outcome}", body, record.recorded_at, targets
        )
        cursor = conn.cursor()
        try:
            cursor.executemany(self.dialect.statement(sql.INSERT_DELIVERY), values)
        finally:
            cursor.close()

    def _schedule_active(self, conn: Any, s: Schedule) -> list[Any]:
        """The schedule's active jobs, locked."""
        active = [str(st) for st in ACTIVE_STATUSES]
        return self._execute(
            conn,
            "SELECT * FROM jobs WHERE schedule = ? AND project = ?"  # noqa: S608
            f" AND status IN ({', '.join('?' * len(active))}) ORDER BY created_at"
            f"{self.dialect.row_lock}",
            (s.name, s.project, *active),
        ).fetchall()

    def _record_tick(self, conn: Any, schedule: int, record: TickRecord) -> bool:
        values = (
            schedule,
            record.tick,
            str(record.outcome),
            record.count,
            record.job_id,
            record.node,
            record.recorded_at,
            record.details,
        )
        return self._execute(conn, sql.INSERT_TICK, values).fetchone() is not None

    def run_schedule(
        self, project: str, name: str, webhooks: list[str], now: float | None = None
    ) -> RunResult | None:
        """A job of the schedule at once (the dashboard's "run now"), id
        ``<name>-<now>``, as its overlap policy allows; None if there is no
        such schedule. Its ticks are left as they are."""
        clock, at = self._clock(now)
        with self._write() as conn:
            statement = sql.NAMED_SCHEDULE.format(now=clock, lock=self.dialect.row_lock)
            row = self._execute(conn, statement, (*at, project, name)).fetchone()
            if row is None:
                return None
            s = schedule_info(row, []).schedule
            now = float(row["now"])
            job_id = run_job_id(name, now)
            active = self._schedule_active(conn, s)
            if active and s.overlap is Overlap.SKIP:
                return RunResult(job_id, False, active[0]["job_id"])
            if s.overlap is Overlap.REPLACE:
                for job in active:
                    self._cancel(conn, job, False, now)
            state = s.job(job_id, now, webhooks)
            if self._execute(conn, INSERT, row_values(state)).fetchone() is None:
                return RunResult(job_id, False)
            self._execute(conn, sql.SCHEDULE_RAN, (job_id, row["id"]))
            return RunResult(job_id, True)


def schedule_info(row: Mapping[str, Any], history: list[TickRecord]) -> ScheduleInfo:
    schedule = Schedule.from_definition(
        row["project"],
        row["name"],
        row["spider"],
        bool(row["enabled"]),
        json.loads(row["definition"]),
    )
    return ScheduleInfo(
        schedule=schedule,
        next_tick=row["next_tick"],
        last_tick=row["last_tick"],
        last_job=row["last_job"],
        last_job_status=row["last_job_status"] if "last_job_status" in row.keys() else None,
        fired=row["fired"],
        skipped=row["skipped"],
        missed=row["missed"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        history=history,
    )


def tick_from_row(row: Mapping[str, Any]) -> TickRecord:
    return TickRecord(
        tick=row["tick"],
        outcome=Outcome(row["outcome"]),
        count=row["count"],
        job_id=row["job_id"],
        node=row["node"],
        recorded_at=row["recorded_at"],
        details=row["details"],
    )
