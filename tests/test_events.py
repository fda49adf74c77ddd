"""End to end: events.json, the event stream of a real Scrapyd node, and
``scrapy jobwatch --url`` following a job through it."""

from __future__ import annotations

import configparser
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scrapy_jobstatus._store import open_store
from tests.helpers import ROOT, scrapy, wait_for
from tests.scrapyd_node import Response, ScrapydNode, slow_urls, unique

EVENT_KEYS = {"id", "job_id", "step", "status", "timestamp", "duration_ms", "details"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ENDED = {"completed", "failed", "cancelled"}


def started_node(workdir: Path, *, events: bool, deploy: bool = True) -> Iterator[ScrapydNode]:
    """A node with the shipped config, its services with events.json or
    without it (an older scrapyd.conf)."""
    node = ScrapydNode(workdir, options={"poll_interval": "0.2"})
    if not events:
        conf = workdir / "scrapyd.conf"
        cfg = configparser.ConfigParser()
        cfg.read(conf)
        cfg["services"].pop("events.json")
        with open(conf, "w") as f:
            cfg.write(f)
    try:
        node.start()
        if deploy:
            node.deploy()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from started_node(tmp_path_factory.mktemp("scrapyd-events"), events=True)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture(scope="module")
def two_jobs(node: ScrapydNode, site: str) -> dict[str, Any]:
    """Two jobs run side by side to their end, and the id before them."""
    start = events(node)["last_id"]
    jobs = [unique("first"), unique("second")]
    for job in jobs:
        node.schedule(job=job, urls=f"{site}/sample/apple,{site}/slow?delay=0.3")
    for job in jobs:
        node.wait_status(job, "completed")
    return {"start": start, "jobs": jobs}


def events(node: ScrapydNode, timeout: float = 30, **params: Any) -> dict[str, Any]:
    response = node.get("events.json", params, timeout=timeout)
    assert response.code == 200, (response.code, response.body)
    answer = response.json()
    assert answer["status"] == "ok" and answer["node_name"]
    return answer


def everything(node: ScrapydNode, since: int, **params: Any) -> list[dict[str, Any]]:
    return events(node, since=since, limit=1000, **params)["events"]


def follow_to_end(node: ScrapydNode, job: str, since: int) -> tuple[list[dict[str, Any]], float]:
    """A client following a job with waiting requests: its events until the
    one that ends it, and when that one was answered."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = events(node, timeout=45, since=since, job=job, wait=30)
        seen += answer["events"]
        since = answer["last_id"]
        if any(e["status"] in ENDED for e in answer["events"]):
            return seen, time.time()
    raise AssertionError(f"job {job} did not end: {seen}")


def timed_get(node: ScrapydNode, endpoint: str, params: dict[str, Any]) -> tuple[Response, float]:
    began = time.monotonic()
    response = node.get(endpoint, params, timeout=10)
    return response, time.monotonic() - began


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_the_events_of_a_jobs_life_in_order(node: ScrapydNode, two_jobs: dict[str, Any]) -> None:
    first, second = two_jobs["jobs"]
    answer = events(node, since=two_jobs["start"], limit=1000)
    found = answer["events"]
    ids = [e["id"] for e in found]
    assert ids == sorted(set(ids)) and ids[0] > two_jobs["start"]
    assert answer["last_id"] == ids[-1]
    assert {e["job_id"] for e in found} >= {first, second}
    for event in found:
        assert set(event) == EVENT_KEYS and ISO_UTC.fullmatch(event["timestamp"])
    for job in (first, second):
        life = [e for e in found if e["job_id"] == job]
        assert life[0]["step"] == "opened" and life[0]["status"] == "running"
        assert (life[-1]["step"], life[-1]["status"]) == ("finished", "completed")
        assert [e["status"] for e in life[:-1]] == ["running"] * (len(life) - 1)
        assert "stage fetch" in [e["step"] for e in life]
        stamps = [epoch(e["timestamp"]) for e in life]
        assert stamps == sorted(stamps)
        # The events of the job's status document, with ids.
        history = [(h["step"], h["status"]) for h in node.status(job)["history"]]
        assert [(e["step"], e["status"]) for e in life] == history


def test_since_pages_through_the_events(node: ScrapydNode, two_jobs: dict[str, Any]) -> None:
    job = two_jobs["jobs"][0]
    whole = everything(node, two_jobs["start"], job=job)
    assert len(whole) > 3
    pages, since = [], two_jobs["start"]
    while True:
        answer = events(node, since=since, job=job, limit=2)
        assert len(answer["events"]) <= 2
        if not answer["events"]:
            assert answer["last_id"] == since  # nothing more: the since given
            break
        assert answer["last_id"] == answer["events"][-1]["id"]
        pages.append(answer["events"])
        since = answer["last_id"]
    assert [e for page in pages for e in page] == whole
    assert all(len(page) == 2 for page in pages[:-1])


def test_job_and_project_filters(node: ScrapydNode, two_jobs: dict[str, Any]) -> None:
    start = two_jobs["start"]
    both = [e for e in everything(node, start) if e["job_id"] in two_jobs["jobs"]]
    of_each = [everything(node, start, job=job) for job in two_jobs["jobs"]]
    for job, found in zip(two_jobs["jobs"], of_each, strict=True):
        assert found and {e["job_id"] for e in found} == {job}
    assert sorted(of_each[0] + of_each[1], key=lambda e: e["id"]) == both
    in_project = everything(node, start, project="crawler")
    assert [e for e in in_project if e["job_id"] in two_jobs["jobs"]] == both
    assert events(node, since=start, job=two_jobs["jobs"][0], project="crawler")["events"]
    for params in ({"project": "no-such-project"}, {"job": "not-scheduled-yet"}):
        # An unknown job is no error: it may be scheduled later.
        assert events(node, since=start, **params) == {
            "status": "ok",
            "node_name": events(node)["node_name"],
            "events": [],
            "last_id": start,
        }


def test_without_since_the_answer_is_the_latest_id_at_once(
    node: ScrapydNode, two_jobs: dict[str, Any]
) -> None:
    began = time.monotonic()
    answer = events(node, wait=30, job=two_jobs["jobs"][0])
    assert time.monotonic() - began < 5
    store = open_store(node.db, readonly=True)
    try:
        latest = store.last_event_id()
    finally:
        store.close()
    assert answer["events"] == [] and answer["last_id"] == latest >= two_jobs["start"]
    assert events(node, since=latest) == {**answer, "last_id": latest}


def test_a_wait_ends_empty_at_its_deadline(node: ScrapydNode) -> None:
    since = events(node)["last_id"]
    began = time.monotonic()
    answer = events(node, since=since, job=unique("never"), wait=0.6)
    assert 0.55 <= time.monotonic() - began < 5
    assert answer["events"] == [] and answer["last_id"] == since


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": 0, "wait": 61}, "wait: must be 0 to 60 seconds, not '61'"),
        ({"since": 0, "wait": -1}, "wait: must be 0 to 60 seconds, not '-1'"),
        ({"since": 0, "wait": "nan"}, "wait: must be 0 to 60 seconds, not 'nan'"),
        ({"since": 0, "wait": "soon"}, "wait: 'soon' is not a number of seconds"),
        ({"wait": "61"}, "wait: must be 0 to 60 seconds, not '61'"),
        ({"since": "x"}, "since: 'x' is not a whole number"),
        ({"since": -1}, "since: must be 0 to 9223372036854775807, not -1"),
        ({"since": 0, "limit": 0}, "limit: must be 1 to 1000, not 0"),
        ({"since": 0, "limit": 1001}, "limit: must be 1 to 1000, not 1001"),
        ({"since": 0, "job": "../etc"}, "job: "),
        ({"since": 0, "project": "a b"}, "project: 'a b' is not a valid name"),
    ],
)
def test_bad_input_is_a_400(node: ScrapydNode, params: dict[str, Any], message: str) -> None:
    response = node.get("events.json", params)
    assert response.code == 400, response.body
    answer = response.json()
    assert answer["status"] == "error" and answer["message"].startswith(message)
    assert "\n" not in answer["message"]


def test_waiting_clients_are_answered_at_the_jobs_end_while_the_node_serves_others(
    node: ScrapydNode, site: str, pool: ThreadPoolExecutor
) -> None:
    job = unique("waited")
    node.schedule(job=job, urls=slow_urls(site, 1, 30))
    node.wait_status(job, "running")
    # Quiet from here until the cancel: the page takes 30 s.
    since = wait_for(
        lambda: next(
            (e["id"] for e in everything(node, 0, job=job) if e["step"] == "stage fetch"), None
        ),
        what="the job to fetch",
    )
    follower: Future[tuple[list[dict[str, Any]], float]] = pool.submit(
        follow_to_end, node, job, since
    )
    # Another client, waiting for any event of the project.
    other: Future[dict[str, Any]] = pool.submit(
        events, node, 45, since=since, project="crawler", wait=30
    )
    # A client that goes away while it waits.
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as gone:
        gone.sendall(
            f"GET /events.json?since={since}&wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        gone.settimeout(0.3)
        with pytest.raises(TimeoutError):
            gone.recv(1)  # waiting, not answered
    for _ in range(5):
        status, took = timed_get(node, "jobstatus.json", {"job": job})
        assert status.code == 200 and took < 1, took
        daemon, took = timed_get(node, "daemonstatus.json", {})
        assert daemon.code == 200 and took < 1, took
    assert not follower.done() and not other.done()

    cancelled = node.post("jobcancel.json", {"job": job, "force": "1"})
    assert cancelled.code == 202, cancelled.body
    seen, answered_at = follower.result(timeout=60)
    document = node.wait_status(job, "cancelled", timeout=10)
    assert seen[-1]["status"] == "cancelled" and {e["job_id"] for e in seen} == {job}
    assert answered_at - epoch(document["completed_at"]) < 1.0
    other_events = other.result(timeout=60)["events"]
    assert other_events and other_events[0]["id"] > since
    assert other_events[0] == seen[0]
    # Healthy: the request that went away was dropped, not written to.
    assert events(node, since=since, job=job)["events"] == seen
    log = node.log.read_text()
    for trouble in ("Traceback", "Unhandled", "RuntimeError", "Error in /events.json"):
        assert trouble not in log


def test_jobwatch_follows_a_job_through_events(node: ScrapydNode, site: str) -> None:
    job = unique("watched")
    probe = '"GET /events.json HTTP/1.1" 200'
    probes = node.log.read_text().count(probe)
    # Watching first, the job not scheduled yet (--wait): it is seen from its
    # start however long the command takes to start.
    watcher = subprocess.Popen(  # noqa: S603 (scrapy, as a user runs it)
        [sys.executable, "-m", "scrapy", "jobwatch", job, "--url", node.url, "--wait", "30"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: node.log.read_text().count(probe) > probes, what="jobwatch to start")
        # Five pages of 1 s, one at a time: pages are counted without events.
        node.schedule(job=job, urls=slow_urls(site, 5, 1), settings={"CONCURRENT_REQUESTS": 1})
        stdout, stderr = watcher.communicate(timeout=90)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[-1] == "completed: The job completed."
    assert any("pending" in line or "running" in line for line in lines[:-1])
    # The bar was refreshed while the job ran, between its events.
    counts = [int(m.group(1)) for line in lines if (m := re.search(r" pages (\d+) ", line))]
    assert counts[-1] == 5 and {2, 3, 4} & set(counts[:-1]), lines
    assert re.search(
        rf'"GET /events\.json\?since=\d+&job={job}&wait=20 HTTP/1\.1" 200', node.log.read_text()
    )


def test_jobwatch_polls_a_node_without_events(
    tmp_path_factory: pytest.TempPathFactory, site: str
) -> None:
    for plain in started_node(tmp_path_factory.mktemp("scrapyd-no-events"), events=False):
        job = unique("polled")
        plain.schedule(job=job, urls=slow_urls(site, 2, 0.3))
        result = scrapy("jobwatch", job, "--url", plain.url, "--wait", "10", timeout=90)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "completed: The job completed."
        log = plain.log.read_text()
        assert '"GET /events.json HTTP/1.1" 404' in log
        assert f"GET /jobstatus.json?job={job} " in log
        cancelled = scrapy("jobwatch", unique("never"), "--url", plain.url)
        assert cancelled.returncode == 1 and cancelled.stderr.startswith("error: unknown job")


def test_a_store_error_is_a_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    for bare in started_node(tmp_path_factory.mktemp("scrapyd-store"), events=True, deploy=False):
        moved = bare.db.with_name("moved.sqlite3")
        bare.db.rename(moved)  # the node keeps its open store; events.json opens its own
        try:
            for params in ({}, {"since": 0, "wait": 5}):
                response = bare.get("events.json", params)
                assert response.code == 503, response.body
                answer = response.json()
                assert answer["status"] == "error" and answer["node_name"]
                assert answer["message"] == f"no job store at {bare.db}"
        finally:
            moved.rename(bare.db)
        assert events(bare, since=0)["status"] == "ok"  # opened again once it is back
        assert "Refused GET /events.json (503): no job store at" in bare.log.read_text()
