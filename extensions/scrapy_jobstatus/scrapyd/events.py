"""events.json: the event stream of a Scrapyd node, to follow jobs without
polling their status.

``GET events.json?since=ID&job=ID&project=P&wait=SECONDS&limit=N`` answers
the events committed after ``since``, oldest first; with none yet and
``wait`` above 0, the answer waits until one is committed or ``wait``
seconds pass.

Scrapyd serves every request on its one reactor thread, which must never
wait for the store. A node has one ``EventFeed``: a store of its own, read
in one thread of its own, and the requests waiting for an event. While
requests wait, and only then, the feed reads the events after the oldest
position any of them waits from, once every ``TICK`` seconds for all of
them, and answers each waiting request that has something; a request whose
client went away is dropped.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapyd.webservice import param
from twisted.internet import reactor
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import http, server

from .._store import StoreError, open_store
from ._params import ServiceError, log_refusal, read_job_id, read_name, read_seconds, read_whole
from ._resource import NodeResource

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall
    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from .._model import HistoryEvent
    from .._store import JobStore
    from ._node import JobStatusNode

    Row = tuple[int, str, HistoryEvent]

log = Logger(namespace="scrapy_jobstatus.scrapyd.events")

# Seconds between two reads of the store while requests wait: a waiting
# client learns of an event within this plus one read.
TICK = 0.2
MAX_WAIT = 60.0
DEFAULT_EVENT_LIMIT = 100
MAX_EVENT_LIMIT = 1000
# Events read at a time: by a wait's read, and by a scan for a project's.
READ_BATCH = 1000
# Events one request's scan reads at most: a filter that matches nothing
# answers at once, with the id to go on from, instead of reading the whole
# store in the feed's one thread.
SCAN_LIMIT = 10 * READ_BATCH
# Requests a node keeps waiting at once; one more is a 503 to retry after
# RETRY_AFTER seconds.
MAX_WAITING = 100
RETRY_AFTER = 5
# Ids are 64-bit integers in both stores.
MAX_EVENT_ID = 2**63 - 1
# Projects of the jobs seen, for the ``project`` filter; forgotten past this.
PROJECTS_KEPT = 10_000
_FEEDS: weakref.WeakKeyDictionary[JobStatusNode, EventFeed] = weakref.WeakKeyDictionary()


class Events(NodeResource):
    """``GET events.json``: the node's events after ``since``.

    Without ``since``, the answer comes at once, with no events and the id
    of the store's latest event in ``last_id``: a client's starting point.
    With ``since``, it holds the events with a greater id (at most
    ``limit``: 1 to 1000, default 100), oldest first, of the job ``job``
    and of the project ``project`` when given; with none and ``wait``
    seconds (0 to 60, default 0), it waits for the next one, and answers
    as soon as one is committed, or with no events at the deadline.

    ``last_id`` is the id of the last event answered, else the ``since``
    given: the ``since`` of the next request. A ``since`` below the oldest
    event kept (older ones were pruned, with their jobs) is a 410 whose
    ``oldest_id`` is that event's: the client missed events, and reloads
    what it shows before it follows again. A job unknown to the store is
    not an error: it may be scheduled later, and its first events answer the
    requests that wait for them.

    Bounds: a request reads at most ``SCAN_LIMIT`` events of the store; one
    that found nothing in them answers at once, with the id it read up to
    in ``last_id``. At most ``MAX_WAITING`` requests wait at once: one more
    (with ``wait`` above 0) is a 503 with ``Retry-After``.
    """

    @param("since", required=False)
    @param("job", required=False)
    @param("project", required=False)
    @param("wait", required=False)
    @param("limit", required=False)
    def render_GET(
        self,
        txrequest: Request,
        since: str | None,
        job: str | None,
        project: str | None,
        wait: str | None,
        limit: str | None,
    ) -> int:
        job_id = None if job is None else read_job_id(job)
        project = read_name("project", project)
        after = None if since is None else read_whole("since", since, 0, MAX_EVENT_ID)
        count = (
            DEFAULT_EVENT_LIMIT if limit is None else read_whole("limit", limit, 1, MAX_EVENT_LIMIT)
        )
        seconds = 0.0 if wait is None else read_seconds("wait", wait, MAX_WAIT)
        feed = feed_of(self.node)
        if after is not None and seconds > 0 and feed.waiting >= MAX_WAITING:
            txrequest.setHeader("Retry-After", str(RETRY_AFTER))
            raise ServiceError(
                http.SERVICE_UNAVAILABLE,
                f"{MAX_WAITING} requests wait for events already: try again later",
            )
        reply = Reply(self, txrequest)
        if after is None:
            feed.last_id().addCallbacks(
                lambda last: reply.send(http.OK, {"events": [], "last_id": last}), reply.fail
            )
        else:
            feed.wait(reply, Query(after, job_id, project, count), seconds)
        return server.NOT_DONE_YET


class EventsPruned(Exception):
    """The events after a ``since`` are gone in part: pruned."""

    def __init__(self, oldest: int):
        super().__init__(
            f"events before id {oldest} were pruned from the job store: some after since"
            f" are gone; start again from since={oldest - 1}, or without since"
        )
        self.oldest = oldest


@dataclass(frozen=True)
class Query:
    since: int
    job_id: str | None
    project: str | None
    limit: int


class Reply:
    """The answer to one request of events.json, written once, and never
    after its client went away."""

    def __init__(self, resource: Events, txrequest: Request):
        self.resource = resource
        self.txrequest = txrequest
        self.done = False
        self.on_gone: Callable[[], None] | None = None
        # Called once, when the answer is written or its client went away.
        self.on_done: Callable[[], None] | None = None
        txrequest.notifyFinish().addErrback(self._gone)

    def _gone(self, _: Failure) -> None:
        if not self.done:
            self._set_done()
            if self.on_gone is not None:
                self.on_gone()

    def finished(self) -> bool:
        """Whether the answer was written or its client went away (read
        from the feed's thread too: a scan stops then)."""
        return self.done

    def _set_done(self) -> None:
        self.done = True
        if self.on_done is not None:
            self.on_done()

    def events(self, query: Query, rows: list[Row], read_to: int | None = None) -> None:
        """Answer ``rows``; ``read_to``: the id a scan stopped at its bound
        read up to, where the next request goes on from."""
        if read_to is None:
            read_to = rows[-1][0] if rows else query.since
        self.send(
            http.OK,
            {
                "events": [{"id": i, "job_id": j, **e.to_dict()} for i, j, e in rows],
                "last_id": read_to,
            },
        )

    def fail(self, failure: Failure) -> None:
        if failure.check(EventsPruned):
            message = str(failure.value)
            log_refusal(self.txrequest, http.GONE, message)
            oldest = failure.value.oldest  # type: ignore[union-attr]
            self.send(http.GONE, {"message": message, "oldest_id": oldest}, status="error")
        elif failure.check(StoreError):
            message = str(failure.value).splitlines()[0] if str(failure.value) else "store error"
            log_refusal(self.txrequest, http.SERVICE_UNAVAILABLE, message)
            self.send(http.SERVICE_UNAVAILABLE, {"message": message}, status="error")
        else:
            log.failure("Error in {path}", failure, path=self.txrequest.path)
            self.send(http.INTERNAL_SERVER_ERROR, {"message": "internal error"}, status="error")

    def send(self, code: int, data: dict[str, Any], status: str = "ok") -> None:
        if self.done:
            return
        self._set_done()
        self.txrequest.setResponseCode(code)
        self.txrequest.write(self.resource.json(self.txrequest, {"status": status, **data}))
        self.txrequest.finish()


@dataclass(eq=False)
class Waiter:
    """A request waiting for an event; ``cursor``: the id up to which the
    store holds nothing for it."""

    reply: Reply
    query: Query
    cursor: int
    deadline: IDelayedCall | None = field(default=None, repr=False)


class EventFeed:
    """The event stream of a node: its store read in one thread (a store of
    its own, never used by two threads at once), and the requests waiting
    for an event, answered from one read every ``TICK`` seconds."""

    def __init__(self, node: JobStatusNode):
        self.node = node
        # Requests that may wait (``wait`` above 0), from their scan to
        # their answer or their client's leaving.
        self.waiting = 0
        self.waiters: set[Waiter] = set()
        self._pool: ThreadPool | None = None
        self._store: JobStore | None = None
        self._projects: dict[str, str | None] = {}
        self._call: IDelayedCall | None = None
        self._reading = False

    # -- on the reactor ---------------------------------------------------------

    def last_id(self) -> Deferred[int]:
        return self._in_thread(self._last_id)

    def wait(self, reply: Reply, query: Query, seconds: float) -> None:
        """Answer ``reply`` with the events of ``query``, waiting up to
        ``seconds`` for one."""
        deadline = time.monotonic() + seconds
        if seconds > 0:
            self.waiting += 1
            reply.on_done = self._released

        def scanned(result: tuple[list[Row], int, bool]) -> None:
            rows, cursor, bounded = result
            remaining = deadline - time.monotonic()
            if bounded:
                reply.events(query, rows, read_to=cursor)
                return
            if rows or remaining <= 0 or reply.done:
                reply.events(query, rows)
                return
            waiter = Waiter(reply, query, cursor)
            waiter.deadline = reactor.callLater(remaining, self._expire, waiter)
            reply.on_gone = lambda: self._drop(waiter)
            self.waiters.add(waiter)
            self._schedule()

        self._in_thread(self._scan, query, reply.finished).addCallbacks(scanned, reply.fail)

    def _released(self) -> None:
        self.waiting -= 1

    def _expire(self, waiter: Waiter) -> None:
        waiter.deadline = None
        self._drop(waiter)
        waiter.reply.events(waiter.query, [])

    def _drop(self, waiter: Waiter) -> None:
        self.waiters.discard(waiter)
        if waiter.deadline is not None and waiter.deadline.active():
            waiter.deadline.cancel()
        waiter.deadline = None
        if not self.waiters and self._call is not None and self._call.active():
            self._call.cancel()
            self._call = None

    def _schedule(self) -> None:
        if self.waiters and self._call is None and not self._reading:
            self._call = reactor.callLater(TICK, self._tick)

    def _tick(self) -> None:
        self._call = None
        waiters = list(self.waiters)
        if not waiters:
            return
        start = min(w.cursor for w in waiters)
        projects = any(w.query.project is not None for w in waiters)
        self._reading = True
        d = self._in_thread(self._read, start, projects)
        d.addCallbacks(self._deliver, self._failed, (waiters, start), None, (waiters,))
        d.addErrback(lambda f: log.failure("Error while answering events.json", f))
        d.addBoth(self._read_done)

    def _read_done(self, _: object) -> None:
        self._reading = False
        self._schedule()

    def _deliver(
        self, result: tuple[list[Row], dict[str, str | None]], waiters: list[Waiter], start: int
    ) -> None:
        rows, projects = result
        if not rows:
            return
        last = rows[-1][0]
        for waiter in waiters:
            # The read holds every event after ``start``, up to ``last``.
            if waiter not in self.waiters or waiter.cursor < start:
                continue
            query = waiter.query
            matched = [
                row
                for row in rows
                if row[0] > waiter.cursor
                and (query.job_id is None or row[1] == query.job_id)
                and (query.project is None or projects.get(row[1]) == query.project)
            ][: query.limit]
            if matched:
                self._drop(waiter)
                waiter.reply.events(query, matched)
            else:
                waiter.cursor = max(waiter.cursor, last)

    def _failed(self, failure: Failure, waiters: list[Waiter]) -> None:
        for waiter in waiters:
            if waiter in self.waiters:
                self._drop(waiter)
                waiter.reply.fail(failure)

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="jobstatus-events")
            self._pool.start()
            reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        return deferToThreadPool(reactor, self._pool, self._guarded, f, *args)

    def _shutdown(self) -> None:
        # Waiting clients get their (empty) answer rather than a cut connection.
        for waiter in list(self.waiters):
            self._expire(waiter)
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- in the feed's thread ---------------------------------------------------

    def _guarded(self, f: Callable[..., Any], *args: Any) -> Any:
        try:
            return f(*args)
        except StoreError:
            # Opened again on the next read: the store may be back.
            if self._store is not None:
                self._store.close()
                self._store = None
            raise

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = open_store(self.node.db, readonly=True, node=self.node.name)
        return self._store

    def _last_id(self) -> int:
        return self.store.last_event_id()

    def _scan(self, query: Query, gone: Callable[[], bool]) -> tuple[list[Row], int, bool]:
        """The first ``limit`` events of the query after ``since``, the id
        the store was read up to, and whether the read stopped at
        ``SCAN_LIMIT`` events with more to read. It stops when the client
        has gone."""
        oldest = self.store.first_event_id()
        if oldest and query.since < oldest - 1:
            raise EventsPruned(oldest)
        matched: list[Row] = []
        cursor = query.since
        batch = query.limit if query.project is None else READ_BATCH
        read = 0
        while not gone():
            rows = self.store.events_after(cursor, job_id=query.job_id, limit=batch)
            for row in rows:
                if query.project is None or self._project(row[1]) == query.project:
                    matched.append(row)
                    if len(matched) == query.limit:
                        return matched, row[0], False
            if rows:
                cursor = rows[-1][0]
            read += len(rows)
            if len(rows) < batch:
                return matched, cursor, False
            if read >= SCAN_LIMIT:
                return matched, cursor, True
        return matched, cursor, False

    def _read(self, start: int, projects: bool) -> tuple[list[Row], dict[str, str | None]]:
        rows = self.store.events_after(start, limit=READ_BATCH)
        jobs = {row[1] for row in rows} if projects else set()
        return rows, {job_id: self._project(job_id) for job_id in jobs}

    def _project(self, job_id: str) -> str | None:
        if job_id not in self._projects:
            if len(self._projects) >= PROJECTS_KEPT:
                self._projects.clear()
            state = self.store.get(job_id)
            self._projects[job_id] = None if state is None else state.project
        return self._projects[job_id]


def feed_of(node: JobStatusNode) -> EventFeed:
    """The node's one event feed."""
    feed = _FEEDS.get(node)
    if feed is None:
        feed = _FEEDS[node] = EventFeed(node)
    return feed
