"""What a client of events.json can ask of a node: at most MAX_WAITING
requests wait at once (then a 503 with Retry-After), a client that goes
away frees its place, and a request reads a bounded part of the store, up
to where its client went away."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from scrapy_jobstatus._model import HistoryEvent, JobState, JobStatus
from scrapy_jobstatus._store import open_store
from scrapy_jobstatus.scrapyd.events import (
    MAX_WAITING,
    READ_BATCH,
    RETRY_AFTER,
    SCAN_LIMIT,
    EventFeed,
    Query,
)
from tests.helpers import wait_for
from tests.scrapyd_node import Response, ScrapydNode, unique

# Events of another project in the store: more than two scans' bound.
OTHER_EVENTS = 2 * SCAN_LIMIT + 500


def fill_store(db: Path, project: str, count: int) -> None:
    """A job of ``project`` with ``count`` events, written behind the
    store's back (the store itself keeps 200 of a job's events)."""
    store = open_store(db)
    try:
        now = time.time()
        state = JobState(
            job_id=unique("filler"),
            project=project,
            spider="batch",
            status=JobStatus.RUNNING,
            created_at=now,
            started_at=now,
            updated_at=now,
        )
        assert store.start_job(state).started
        store.save(state, events=[HistoryEvent("opened", now, "running")])
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO events (job, step, timestamp, status)"
            " SELECT (SELECT id FROM jobs WHERE job_id = ?), 'step ' || i, ?, 'running' FROM n",
            (count, state.job_id, now),
        )


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    node = ScrapydNode(tmp_path_factory.mktemp("scrapyd-events-bounds"))
    try:
        node.start()
        fill_store(node.db, "other", OTHER_EVENTS)
        yield node
    finally:
        node.stop()


def last_event_id(db: Path) -> int:
    store = open_store(db, readonly=True)
    try:
        return store.last_event_id()
    finally:
        store.close()


def waiting_request(node: ScrapydNode, since: int) -> socket.socket:
    """A client waiting for an event that does not come."""
    client = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    query = f"since={since}&job={unique('never')}&wait=60"
    client.sendall(f"GET /events.json?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return client


def probe(node: ScrapydNode, since: int) -> Response:
    """One more request that may wait (briefly)."""
    return node.get("events.json", {"since": since, "job": unique("probe"), "wait": 0.2})


def test_at_most_max_waiting_requests_wait_and_a_client_leaving_frees_its_place(
    node: ScrapydNode,
) -> None:
    since = last_event_id(node.db)
    clients = [waiting_request(node, since) for _ in range(MAX_WAITING)]
    try:
        # Once the node has taken all of them in, one more is refused.
        refused = wait_for(
            lambda: (r := probe(node, since)).code == 503 and r, what="the node to be full"
        )
        answer = refused.json()
        assert answer["status"] == "error" and answer["node_name"]
        assert answer["message"] == (
            f"{MAX_WAITING} requests wait for events already: try again later"
        )
        assert refused.headers["Retry-After"] == str(RETRY_AFTER)
        # A request that does not wait is answered still, as every other service.
        assert node.get("events.json", {"since": since}).code == 200
        assert node.get("events.json").code == 200
        assert node.get("daemonstatus.json").code == 200
        for client in clients:  # all waiting: none answered
            client.settimeout(0)
            with pytest.raises(BlockingIOError):
                client.recv(1)
        # A client that goes away frees its place.
        clients.pop().close()
        admitted = wait_for(
            lambda: (r := probe(node, since)).code == 200 and r, what="a free place"
        )
        assert admitted.json()["events"] == []
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: probe(node, since).code == 200, what="the places to be free")
    log = node.log.read_text()
    assert "Refused GET /events.json (503)" in log
    assert "Traceback" not in log and "Unhandled" not in log


def test_a_scan_for_an_unknown_project_reads_a_bounded_part_at_a_time(node: ScrapydNode) -> None:
    last_ids = []
    since = 0
    while True:
        response = node.get("events.json", {"since": since, "project": "no-such"})
        assert response.code == 200, response.body
        answer = response.json()
        assert answer["events"] == []
        last_ids.append(answer["last_id"])
        if answer["last_id"] == since:  # read to the end: nothing more
            break
        since = answer["last_id"]
    # Each answer read SCAN_LIMIT events and says where the next goes on;
    # the last one read the rest.
    assert last_ids == [SCAN_LIMIT, 2 * SCAN_LIMIT, 2 * SCAN_LIMIT]
    assert last_event_id(node.db) == OTHER_EVENTS + 1
    # The project's own events are found wherever they are.
    found = node.get("events.json", {"since": 0, "project": "other", "limit": 5}).json()
    assert len(found["events"]) == 5 and found["last_id"] == found["events"][-1]["id"]


def test_a_scan_stops_when_its_client_has_gone(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    fill_store(db, "other", 3 * READ_BATCH)
    feed = EventFeed(SimpleNamespace(db=str(db), name="n"))  # type: ignore[arg-type]
    query = Query(since=0, job_id=None, project="no-such", limit=100)
    try:
        assert feed._scan(query, lambda: True) == ([], 0, False)
        batches = iter([False, True])
        rows, cursor, bounded = feed._scan(query, lambda: next(batches))
        assert rows == [] and cursor == READ_BATCH and not bounded
        rows, cursor, bounded = feed._scan(query, lambda: False)
        assert rows == [] and cursor == 3 * READ_BATCH + 1 and not bounded
    finally:
        if feed._store is not None:
            feed._store.close()
