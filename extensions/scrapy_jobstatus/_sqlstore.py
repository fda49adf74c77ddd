"""The job store written once in SQL, over a small dialect per backend.

A backend gives its connections (``_read`` and ``_write``: a transaction,
its errors as the store's one-line ``StoreError``) and a ``Dialect``: what
its SQL says differently. Every statement here is written with ``?``
marks and named row access."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _sql as sql
from ._model import ACTIVE_STATUSES, JobStatus
from ._rows import decode_state, error_from_row, event_from_row, filter_clauses
from ._store import JobPage, decode_cursor, encode_cursor, reap_dead_jobs, reap_dead_nodes

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
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


def same(statement: str) -> str:
    return statement


class SQLStore:
    """Every read, queue, outbox, node, egg and event method of a store, over
    the backend's connections and dialect."""

    dialect: Dialect

    def _read(self, snapshot: bool = False) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _execute(self, conn: Any, statement: str, params: Any = ()) -> Any:
        return conn.execute(self.dialect.statement(statement), params)

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
