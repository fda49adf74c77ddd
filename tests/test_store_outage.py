"""End to end: a node whose store goes away keeps answering what needs no
store, answers its job services 503 with Retry-After, says so in one log
line, and carries on by itself when the store is back; a SQLite write lock
held by another process makes only the writes wait, never the node."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import sqlite_write_lock_held, wait_for
from tests.postgres import PostgresServer, postgres_server
from tests.scrapyd_node import PROJECT, Response, ScrapydNode, running_node, slow_urls, unique

UNREACHABLE = "The job store is unreachable"
BACK = "The job store is back"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    # A server of the module's own: the tests stop it.
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="module")
def pg_node(
    tmp_path_factory: pytest.TempPathFactory, server: PostgresServer
) -> Iterator[ScrapydNode]:
    with server.database() as url:
        yield from running_node(
            tmp_path_factory.mktemp("scrapyd-outage"),
            options={"poll_interval": "0.2", "max_proc": "1"},
            jobstatus={"db": url},
        )


def test_a_node_answers_through_a_postgresql_outage_and_carries_on(
    pg_node: ScrapydNode, server: PostgresServer, site: str
) -> None:
    running, queued = unique("outage-run"), unique("outage-queued")
    assert pg_node.schedule(job=running, urls=slow_urls(site, 12, 1.0)).json()["status"] == "ok"
    pg_node.wait_status(running, "running")
    # Waits for the one slot, taken by the running job.
    assert pg_node.schedule(job=queued, urls=slow_urls(site, 2, 0.1)).json()["status"] == "ok"
    assert pg_node.get("daemonstatus.json").json()["pending"] == 1

    server.halt()
    try:

        def refused() -> bool:
            return pg_node.get("jobstatus.json", {"job": running}).code == 503

        wait_for(refused, timeout=30, interval=0.2, what="jobstatus.json to answer 503")
        for endpoint, params in (
            ("jobstatus.json", {"job": running}),
            ("jobs.json", {}),
            ("nodes.json", {}),
            ("metrics", {}),
        ):
            response = pg_node.get(endpoint, params, timeout=10)
            assert response.code == 503, (endpoint, response.body)
            assert response.headers["Retry-After"].isdigit()
            if endpoint.endswith(".json"):
                answer = response.json()
                assert answer["status"] == "error" and "\n" not in answer["message"]
                assert "unreachable" in answer["message"]
        # What needs no store answers, with the last known figures.
        status = pg_node.get("daemonstatus.json", timeout=10)
        assert status.code == 200 and status.json()["status"] == "ok"
        assert status.json()["running"] == 1
        assert pg_node.get("dashboard", timeout=10).code == 200
        # schedule.json refuses in Scrapyd's way, in one line.
        answer = pg_node.schedule(job=unique("outage-refused"), urls=f"{site}/sample/").json()
        assert answer["status"] == "error" and "unreachable" in answer["message"]
    finally:
        server.resume()

    def answered() -> bool:
        return all(
            pg_node.get(endpoint, params).code == 200
            for endpoint, params in (
                ("jobstatus.json", {"job": running}),
                ("jobs.json", {}),
                ("nodes.json", {}),
                ("metrics", {}),
            )
        )

    wait_for(answered, timeout=30, interval=0.2, what="every service to answer again")
    # The crawl ran on through the outage, and the queued job starts by itself.
    assert pg_node.wait_status(running, "completed", "failed", timeout=90)["status"] == "completed"
    assert pg_node.wait_status(queued, "completed", "failed", timeout=90)["status"] == "completed"
    log = pg_node.log_text()
    assert log.count(UNREACHABLE) == 1 and log.count(BACK) == 1
    assert log.index(UNREACHABLE) < log.index(BACK)
    # No trace of a store error per request (Scrapyd logs its own
    # schedule.json refusals with theirs).
    assert "StoreError" not in log and "StoreUnavailable" not in log


def tiny_egg() -> bytes:
    """A ZIP file, as addversion.json checks an egg: the store refuses it
    before anything reads it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as egg:
        egg.writestr("EGG-INFO/PKG-INFO", "Name: crawler\n")
    return out.getvalue()


def refused_in_scrapyd_shape(response: Response) -> None:
    """An error answer of Scrapyd's services: 503, status "error", one line,
    no traceback."""
    assert response.code == 503, response.body
    answer = response.json()
    assert answer["status"] == "error", answer
    assert "\n" not in answer["message"] and "Traceback" not in answer["message"]


def writes_during_outage(node: ScrapydNode, queued: str, refused: str) -> None:
    """schedule.json, cancel.json, addversion.json, delversion.json,
    delproject.json and jobcancel.json while the store cannot take a write:
    each an error answer, none a change."""
    schedule = node.schedule(job=refused, urls="http://127.0.0.1:9/")
    refused_in_scrapyd_shape(schedule)
    assert schedule.headers["Retry-After"].isdigit()
    cancel = node.post("cancel.json", {"project": PROJECT, "job": queued}, timeout=10)
    refused_in_scrapyd_shape(cancel)
    assert cancel.headers["Retry-After"].isdigit()
    egg = {"project": PROJECT, "version": "outage", "egg": tiny_egg()}
    addversion = node.post("addversion.json", egg, timeout=10)
    refused_in_scrapyd_shape(addversion)
    assert addversion.headers["Retry-After"].isdigit()
    # The project's eggs stay: the queued job runs once the store is back.
    for service, params in (
        ("delversion.json", {"project": PROJECT, "version": "outage"}),
        ("delproject.json", {"project": PROJECT}),
    ):
        deleted = node.post(service, params, timeout=10)
        refused_in_scrapyd_shape(deleted)
        assert deleted.headers["Retry-After"].isdigit()
    jobcancel = node.post("jobcancel.json", {"job": queued}, timeout=10)
    refused_in_scrapyd_shape(jobcancel)
    assert jobcancel.headers["Retry-After"].isdigit()
    # What needs no store answers.
    assert node.get("daemonstatus.json", timeout=10).code == 200


def nothing_changed(node: ScrapydNode, queued: str, refused: str) -> None:
    assert node.get("jobstatus.json", {"job": refused}).code == 404
    assert node.status(queued)["status"] in ("pending", "running", "completed")
    versions = node.get("listversions.json", {"project": PROJECT}).json()["versions"]
    assert "outage" not in versions


def test_writes_during_a_postgresql_outage_change_nothing_and_a_crawl_ended_meanwhile_is_recorded(
    pg_node: ScrapydNode, server: PostgresServer, site: str
) -> None:
    before = len(pg_node.log_text())
    ending, queued, refused = unique("ends"), unique("waits"), unique("refused")
    # A crawl that ends during the outage, its final write given up at once.
    fast_end = {"JOBSTATUS_STORE_WAIT": "0.5"}
    answer = pg_node.schedule(job=ending, settings=fast_end, urls=slow_urls(site, 3, 1.0))
    assert answer.json()["status"] == "ok"
    pg_node.wait_status(ending, "running")
    assert pg_node.schedule(job=queued, urls=slow_urls(site, 1, 0.1)).json()["status"] == "ok"

    server.halt()
    try:

        def refused_503() -> bool:
            return pg_node.get("jobstatus.json", {"job": ending}).code == 503

        wait_for(refused_503, timeout=30, interval=0.2, what="jobstatus.json to answer 503")
        writes_during_outage(pg_node, queued, refused)

        def crawl_ended() -> bool:
            return pg_node.get("daemonstatus.json").json()["running"] == 0

        wait_for(crawl_ended, timeout=60, interval=0.2, what="the crawl to end")
        assert pg_node.get("jobstatus.json", {"job": ending}).code == 503
    finally:
        server.resume()

    def back() -> bool:
        return pg_node.get("jobstatus.json", {"job": ending}).code == 200

    wait_for(back, timeout=30, interval=0.2, what="jobstatus.json to answer again")
    # The crawl's end is recorded once the store is back.
    status = pg_node.wait_status(ending, "completed", "failed", timeout=60)
    assert status["completed_at"] is not None
    nothing_changed(pg_node, queued, refused)
    assert pg_node.wait_status(queued, "completed", "failed", timeout=90)["status"] == "completed"
    log = pg_node.log_text()[before:]
    assert log.count(UNREACHABLE) == 1 and log.count(BACK) == 1
    assert "StoreError" not in log and "StoreUnavailable" not in log


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[ScrapydNode]:
    yield from running_node(tmp_path / "node", options={"poll_interval": "0.2", "max_proc": "1"})


def test_a_sqlite_write_lock_held_elsewhere_refuses_writes_only(
    sqlite_node: ScrapydNode, site: str
) -> None:
    job = unique("locked")
    assert sqlite_node.schedule(job=job, urls=slow_urls(site, 1, 0.1)).json()["status"] == "ok"
    sqlite_node.wait_status(job, "completed")
    with sqlite_write_lock_held(sqlite_node.db):
        # Reads go on beside the writer.
        assert sqlite_node.status(job)["status"] == "completed"
        assert sqlite_node.get("jobs.json").code == 200
        assert sqlite_node.get("daemonstatus.json").code == 200
        # A write waits for the lock a short while, then is refused.
        response = sqlite_node.post("jobpause.json", {"job": job}, timeout=10)
        assert response.code == 503 and response.headers["Retry-After"].isdigit()
        assert "\n" not in response.json()["message"]
        # The store itself is not taken for gone: reads still answer.
        assert sqlite_node.get("jobstatus.json", {"job": job}).code == 200
    # The lock released, the same request is answered (a completed job
    # cannot pause: 400).
    assert sqlite_node.post("jobpause.json", {"job": job}).code == 400
    assert UNREACHABLE not in sqlite_node.log_text()


def test_writes_while_a_sqlite_write_lock_is_held_elsewhere_change_nothing(
    sqlite_node: ScrapydNode, site: str
) -> None:
    running, queued, refused = unique("runs"), unique("waits"), unique("refused")
    assert sqlite_node.schedule(job=running, urls=slow_urls(site, 4, 1.0)).json()["status"] == "ok"
    sqlite_node.wait_status(running, "running")
    assert sqlite_node.schedule(job=queued, urls=slow_urls(site, 1, 0.1)).json()["status"] == "ok"
    with sqlite_write_lock_held(sqlite_node.db):
        writes_during_outage(sqlite_node, queued, refused)
    nothing_changed(sqlite_node, queued, refused)
    assert sqlite_node.wait_status(running, "completed", timeout=90)["status"] == "completed"
    assert sqlite_node.wait_status(queued, "completed", timeout=90)["status"] == "completed"
    log = sqlite_node.log_text()
    assert UNREACHABLE not in log
    assert "StoreError" not in log and "StoreUnavailable" not in log


def test_a_schedule_waiting_for_a_sqlite_write_lock_holds_up_no_other_request(
    sqlite_node: ScrapydNode, site: str
) -> None:
    """schedule.json and addversion.json wait for the store in the node's
    store threads: daemonstatus.json answers while they wait; then they
    answer 503 with Retry-After, having queued and stored nothing."""
    done = unique("done")
    assert sqlite_node.schedule(job=done, urls=slow_urls(site, 1, 0.1)).json()["status"] == "ok"
    sqlite_node.wait_status(done, "completed")
    waiting = unique("waiting")
    egg = {"project": PROJECT, "version": "locked", "egg": tiny_egg()}
    with sqlite_write_lock_held(sqlite_node.db):
        with ThreadPoolExecutor(max_workers=2) as clients:
            schedule = clients.submit(sqlite_node.schedule, job=waiting, urls=f"{site}/sample/")
            addversion = clients.submit(sqlite_node.post, "addversion.json", egg, timeout=10)
            # Sent after them, answered while they wait for the lock (off
            # the reactor): on the reactor, they would hold up every answer.
            answered_meanwhile = 0
            while not (schedule.done() and addversion.done()):
                assert sqlite_node.get("daemonstatus.json", timeout=10).code == 200
                if not (schedule.done() or addversion.done()):
                    answered_meanwhile += 1
            assert answered_meanwhile >= 3
            scheduled, added = schedule.result(), addversion.result()
    for response in (scheduled, added):
        refused_in_scrapyd_shape(response)
        assert response.headers["Retry-After"].isdigit()
    assert sqlite_node.get("jobstatus.json", {"job": waiting}).code == 404
    versions = sqlite_node.get("listversions.json", {"project": PROJECT}).json()["versions"]
    assert "locked" not in versions
    # The lock released, the same requests are answered in Scrapyd's way.
    assert sqlite_node.schedule(job=waiting, urls=f"{site}/sample/").json()["status"] == "ok"
    sqlite_node.wait_status(waiting, "completed")
    assert UNREACHABLE not in sqlite_node.log_text()
