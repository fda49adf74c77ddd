"""The job store's contract: what every backend does, and what its
operations return.

Reads never write: finding the jobs whose process died is the explicit
``reap_dead_jobs``, run by Scrapyd's launcher on a timer and by the commands.
Operations return small named results; HTTP codes belong to the Scrapyd face.
The store knows the job model, not Scrapy.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._location import display_location as display_location  # the store's to show
from ._location import is_postgres as is_postgres  # where callers find it
from ._model import JobStatus, isoformat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ._model import HistoryEvent, JobError, JobState
    from ._schedule import AddResult, Firing, RunResult, Schedule, ScheduleInfo

# A heartbeat this many intervals old, with the process gone, means it died.
STALE_INTERVALS = 5
MIN_STALE_SECONDS = 5.0
UNMONITORED_WARNING = "unmonitored: the crawl ran without the job status extension"
# The webhook event of a crawl starting its job; the others are job.<status>
# and job.stalled.
STARTED = "job.started"
# Errors inside the status document a webhook carries.
ERRORS_IN_WEBHOOKS = 20
# A node unseen for a day is forgotten: its jobs were reaped long ago.
FORGET_NODES_AFTER = 86400.0
# How a Scrapyd node names itself to the crawls it starts: several nodes may
# share one machine, and each reaps only the crawls it started.
NODE_VARIABLE = "JOBSTATUS_NODE"


class JobNotFound(LookupError):
    pass


class StoreError(Exception):
    """The store cannot be used: its message is one line that says why."""


@dataclass(frozen=True)
class StartResult:
    """A crawl asking to run its job: ``started``, or refused because of the
    stored ``job`` (cancelled while pending, or run already)."""

    started: bool
    job: JobState


@dataclass(frozen=True)
class SaveResult:
    """One write of a running job, and the cancel request it polled."""

    # False when the stored status forbids the move: another process ended it.
    written: bool
    # The record was missing (the store file deleted or replaced) and was
    # written again from the crawl's memory.
    recreated: bool
    cancel_requested_at: float | None
    cancel_force: bool
    pause_requested_at: float | None = None
    # The stored status after the write: a failed attempt retried is pending.
    status: str | None = None


@dataclass(frozen=True)
class RequestResult:
    """The job's status before and after a cancel, pause or resume request;
    ``after`` is ``before`` when the request cannot apply."""

    before: JobStatus
    after: JobStatus


@dataclass(frozen=True)
class JobPage:
    """A page of jobs, newest first; ``next_cursor`` continues it."""

    jobs: list[JobState]
    total: int
    next_cursor: str | None


@dataclass(frozen=True)
class NodeInfo:
    """A Scrapyd node sharing the store, as its last heartbeat described it."""

    name: str
    url: str | None
    max_proc: int
    running: int
    version: str | None
    started_at: float
    last_seen: float

    def to_dict(self, now: float, timeout: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "max_proc": self.max_proc,
            "running": self.running,
            "version": self.version,
            "started_at": isoformat(self.started_at),
            "last_seen": isoformat(self.last_seen),
            "alive": now - self.last_seen < timeout,
        }


@dataclass(frozen=True)
class ReapedJob:
    """A job of a dead node: ``failed``, or given back to the queue when its
    crawl had not started."""

    job_id: str
    node: str
    requeued: bool


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery of the outbox: one event, to one URL."""

    delivery_id: int
    event_id: str  # webhook-id: the same on every attempt
    event_type: str
    url: str
    body: str  # the exact body: what the signature covers
    attempts: int
    created_at: float
    # The claim's lease: an attempt is recorded only while it holds.
    lease_until: float
    # The key of a job's own receiver; None: the deliverer's webhook_secret.
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a delivery."""

    attempted_at: float
    http_status: int | None
    error: str | None
    duration_ms: int
    delivered: bool
    # The next try; None once delivered, or given up.
    next_attempt_at: float | None

    @property
    def outcome(self) -> str:
        if self.delivered:
            return "delivered"
        return "pending" if self.next_attempt_at is not None else "failed"


@dataclass(frozen=True)
class JobFilter:
    project: str | None = None
    spider: str | None = None
    status: str | None = None
    schedule: str | None = None


class JobStore(Protocol):
    """The job store; one implementation per backend."""

    location: str
    node: str
    writes: int

    def close(self) -> None: ...

    # -- writes ---------------------------------------------------------------

    def add_pending(self, state: JobState) -> bool:
        """Record a new pending job; False if its id is taken."""

    def start_job(self, state: JobState, resume: bool = False) -> StartResult:
        """A crawl starts a pending job (or, with its JOBDIR, a paused one);
        ``resume``: it goes on from its JOBDIR, with the counters of the runs
        before."""

    def save(
        self,
        state: JobState,
        errors: Iterable[JobError] = (),
        events: Iterable[HistoryEvent] = (),
        history: Iterable[HistoryEvent] = (),
    ) -> SaveResult:
        """Write a running job with its new errors and events, and poll its
        cancel request, in one transaction. ``history`` is the job's whole
        history, written only when the record has to be made again."""

    def request_cancel(self, job_id: str, force: bool = False) -> RequestResult: ...

    def request_pause(self, job_id: str, requeue: bool = False) -> RequestResult:
        """Pause a pending job at once; ask a running one with a JOBDIR to
        pause (``after`` is ``pausing``), and with ``requeue`` to go back to
        the queue once paused."""

    def request_resume(self, job_id: str) -> RequestResult:
        """A paused job back to the queue, to go on from its JOBDIR; a pause
        not yet taken up is withdrawn."""

    def end_job(self, job_id: str, status: JobStatus, message: str, *, unstarted: bool) -> bool:
        """End an active job for its crawl, which cannot (it died, or ran
        unmonitored); ``unstarted`` limits it to a pending job. A failed
        attempt with a retry left goes back to the queue instead."""

    def reap_dead_jobs(self, node: str, alive: Callable[[int], bool]) -> list[str]: ...

    def prune(self, keep: int | None = None, older_than: float | None = None) -> int: ...

    # -- reads ----------------------------------------------------------------

    def get(self, job_id: str) -> JobState | None: ...

    def document(self, job_id: str, errors_kept: int = 20) -> dict[str, Any] | None: ...

    def history(self, job_id: str) -> list[HistoryEvent]: ...

    def errors(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobError]:
        """The job's errors with an id above ``after``, oldest first."""

    def list_jobs(
        self, where: JobFilter, limit: int = 50, offset: int = 0, cursor: str | None = None
    ) -> JobPage: ...

    # -- the queue: pending jobs with no node yet -------------------------------

    def claim_job(self, node: str, project: str | None = None) -> JobState | None:
        """Give the next queued job (highest priority, then oldest) to
        ``node``; each job goes to one node only, whatever the nodes asking
        at the same moment."""

    def queued_jobs(
        self, project: str | None = None, created_before: float | None = None
    ) -> list[JobState]:
        """The queued jobs, in the order they will be claimed."""

    def count_queued(self, project: str | None = None) -> int: ...

    def finished_jobs(self, limit: int) -> list[JobState]:
        """The ended jobs whose crawl ran, the latest to end first: Scrapyd's
        finished list."""

    def count_finished(self, limit: int) -> int:
        """How many jobs ended, counted up to ``limit``."""

    # -- the webhook outbox: written with the status change it reports ---------

    def claim_deliveries(
        self,
        now: float,
        lease: float,
        limit: int,
        job_id: str | None = None,
        due_by: float | None = None,
        keyed_only: bool = False,
    ) -> list[Delivery]:
        """The deliveries due by ``due_by`` (default: now), leased for
        ``lease`` seconds to the caller: no other deliverer gets them
        meanwhile. ``keyed_only``: those that carry their own key alone."""

    def record_attempt(self, delivery: Delivery, attempt: Attempt) -> bool:
        """Log the attempt and move the delivery on; False, the delivery left
        as it is, when the claim's lease had run out (another deliverer may
        have it now)."""

    def webhook_log(self, job_id: str) -> list[dict[str, Any]]: ...

    def count_undelivered(self, job_id: str | None = None) -> int: ...

    def delivery_counts(self) -> dict[str, int]: ...

    # -- the event stream and the series ----------------------------------------

    def events_after(
        self, since: int, job_id: str | None = None, limit: int = 100
    ) -> list[tuple[int, str, HistoryEvent]]:
        """The events with an id above ``since``, oldest first, as (id,
        job_id, event). Ids grow in the order the events were committed."""

    def last_event_id(self) -> int: ...

    def series(self, job_id: str) -> list[dict[str, Any]]:
        """The job's counters over time, at most 500 points."""

    def warn_pending(self, job_id: str, warning: str) -> bool:
        """A pending job waiting too long: a warning, a ``stalled`` event and
        its webhooks; False if it is no longer pending or has it already."""

    # -- figures for metrics -----------------------------------------------------

    def status_counts(self) -> list[tuple[str, str | None, str | None, int]]: ...

    def reason_counts(self) -> dict[str, int]: ...

    # -- the nodes sharing the store --------------------------------------------

    def beat(self, node: NodeInfo) -> None:
        """Record a node's heartbeat."""

    def nodes(self) -> list[NodeInfo]: ...

    def reap_dead_nodes(self, timeout: float) -> list[ReapedJob]:
        """The jobs of nodes unseen for ``timeout`` seconds: a started job
        whose own heartbeat is stale too ends ``failed``, naming its node; a
        claimed job that never started goes back to the queue. A crawl that
        still reports keeps its job."""

    def dead_nodes(self, seen_before: float) -> list[NodeInfo]: ...

    def forget_nodes(self, seen_before: float) -> int:
        """Drop nodes unseen for long: nodes.json lists them no more."""

    def requeue_claims(self, node: str) -> list[str]:
        """Give the jobs ``node`` claimed and did not start back to the queue."""

    def started_jobs(self, node: str) -> list[JobState]:
        """The jobs of ``node`` a crawl has started and not ended."""

    # -- the eggs of the Scrapyd projects ---------------------------------------

    def put_egg(self, project: str, version: str, egg: bytes) -> None: ...

    def get_egg(self, project: str, version: str) -> bytes | None: ...

    def egg_versions(self, project: str) -> list[str]:
        """The project's versions, in the order they were added."""

    def egg_projects(self) -> list[str]: ...

    def delete_eggs(self, project: str, version: str | None = None) -> int: ...

    # -- one-off jobs alone, and periodic schedules ------------------------------

    def add_alone(self, state: JobState) -> AddResult:
        """Queue the pending job unless a job of its project and spider (of
        its overlap key, if any) is active."""

    def put_schedule(self, schedule: Schedule, now: float | None = None) -> bool:
        """Create or replace (by project and name); True if created."""

    def enable_schedule(self, project: str, name: str, enabled: bool) -> bool: ...

    def delete_schedule(self, project: str, name: str) -> bool: ...

    def schedules(
        self, project: str | None = None, name: str | None = None, history: int = 0
    ) -> list[ScheduleInfo]: ...

    def schedule_counts(self) -> dict[bool, int]:
        """How many schedules are enabled (True) and disabled (False)."""

    def fire_schedules(
        self, node: str, webhooks: list[str], limit: int = 100, now: float | None = None
    ) -> Firing:
        """Claim every due tick, once across the nodes, by the store's clock."""

    def run_schedule(
        self, project: str, name: str, webhooks: list[str], now: float | None = None
    ) -> RunResult | None:
        """A job of the schedule at once, as its overlap policy allows."""


def error_batches(store: JobStore, job_id: str, batch: int = 1000) -> Iterator[list[JobError]]:
    """Every error of a job, oldest first, read a batch at a time: memory
    stays flat whatever their number."""
    after = 0
    while True:
        errors = store.errors(job_id, after=after, limit=batch)
        if errors:
            yield errors
        if len(errors) < batch:
            return
        after = errors[-1].error_id or 0


def iter_errors(store: JobStore, job_id: str, batch: int = 1000) -> Iterator[JobError]:
    for errors in error_batches(store, job_id, batch):
        yield from errors


def is_stale(state: JobState, now: float) -> bool:
    """Whether a running job's heartbeat is old enough to check its process."""
    if state.updated_at is None:
        return False
    stale_after = max(STALE_INTERVALS * (state.interval or 1.0), MIN_STALE_SECONDS)
    return now - state.updated_at >= stale_after


def died_message(state: JobState) -> str:
    return (
        f"The crawl process (pid {state.pid}) died without reporting an end; "
        f"its last heartbeat was at {_utc(state.updated_at or 0)}."
    )


def reap_dead_jobs(store: JobStore, node: str, alive: Callable[[int], bool]) -> list[str]:
    """End ``failed`` the started jobs of ``node`` whose crawl process died:
    a stale heartbeat, and no process of that pid on this machine."""
    now = time.time()
    reaped = []
    for state in store.started_jobs(node):
        if state.pid is None or not is_stale(state, now) or alive(state.pid):
            continue
        if store.end_job(state.job_id, JobStatus.FAILED, died_message(state), unstarted=False):
            reaped.append(state.job_id)
    return reaped


def reap_dead_nodes(store: JobStore, timeout: float) -> list[ReapedJob]:
    now = time.time()
    store.forget_nodes(now - FORGET_NODES_AFTER)
    reaped = []
    for node in store.dead_nodes(now - timeout):
        reaped += [
            ReapedJob(job, node.name, requeued=True) for job in store.requeue_claims(node.name)
        ]
        for state in store.started_jobs(node.name):
            if not is_stale(state, now):
                continue  # the crawl still reports: it keeps its job
            message = node_died_message(state, node.name, node.last_seen)
            if store.end_job(state.job_id, JobStatus.FAILED, message, unstarted=False):
                reaped.append(ReapedJob(state.job_id, node.name, requeued=False))
    return reaped


def node_died_message(state: JobState, node: str, last_seen: float) -> str:
    return (
        f"The node '{node}' that ran the crawl stopped (last seen at {_utc(last_seen)}); "
        f"the crawl's last heartbeat was at {_utc(state.updated_at or 0)}."
    )


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def node_name() -> str:
    """This process's node: the one a Scrapyd node names in the environment
    of the crawls it starts, else this machine's name."""
    return os.environ.get(NODE_VARIABLE) or socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether a process of this machine runs; a zombie (ended, not yet
    reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) state ...": comm may hold spaces and parentheses.
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(0)


def encode_cursor(created_at: float, key: int) -> str:
    return f"{created_at!r}_{key}"


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Raises ValueError for a cursor this store did not make."""
    created_at, _, key = cursor.partition("_")
    value = float(created_at)
    if value != value or not key.isdigit():  # NaN, or no key
        raise ValueError(f"not a cursor: {cursor!r}")
    return value, int(key)


def __getattr__(name: str) -> Any:
    # ``open_store`` lives with the backends' registry, which this contract
    # does not import: the name stays where callers have always found it.
    if name == "open_store":
        from ._backends import open_store

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
