"""A crawl holds its job by a lease on a shared store: cut off from the store
(a partition: a proxy of the test's own holds every packet), it pauses its
engine after node_timeout - 5 s, the in-flight request finishing and no new
one sent, and goes on where it was once the store is reachable again, in
both of Scrapy's modes.

Real parts: a ``scrapy crawl`` process, a throwaway PostgreSQL behind the
proxy, and the local site, whose access log says when each page was asked
for and answered."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scrapy_jobstatus._model import InvalidSetting, JobState, JobStatus
from scrapy_jobstatus._settings import crawl_lease
from scrapy_jobstatus._store import open_store
from scrapy_jobstatus._tracker import JobTracker
from tests.helpers import local_site, read_lines, sqlite_write_lock_held, start_crawl, wait_for
from tests.partition_proxy import PartitionProxy
from tests.postgres import temporary_database

NODE_TIMEOUT = 10  # the crawl pauses 5 s after its last write went through
PAGES = 12
PAUSING = "pausing the crawl"
CRAWLING_ON = "crawling on"
# How long the partition lasts once the crawl has paused.
HELD = 3.0


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lease-site") / "access.jl"


@pytest.fixture(scope="module")
def logged_site(access_log: Path) -> Iterator[str]:
    with local_site({"TEST_SITE_ACCESS_LOG": str(access_log)}) as url:
        yield url


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    with temporary_database(postgres_url) as url:
        yield url


@pytest.fixture
def proxy(database: str) -> Iterator[PartitionProxy]:
    port = int(database.rsplit(":", 1)[1].split("/")[0])
    proxy = PartitionProxy(port).start()
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_crawls_lease_is_its_nodes_node_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSTATUS_NODE_TIMEOUT", raising=False)
    lease = crawl_lease("postgresql://db.internal/jobs")
    assert (lease.seconds, lease.pause_after, lease.shared) == (20.0, 15.0, True)
    monkeypatch.setenv("JOBSTATUS_NODE_TIMEOUT", "10")
    assert crawl_lease("dbname=jobs host=db.internal").pause_after == 5.0
    assert not crawl_lease("/srv/jobs.db").shared  # SQLite: one machine, never paused
    for value, message in (
        ("soon", "JOBSTATUS_NODE_TIMEOUT must be a number, not 'soon'"),
        ("5", "JOBSTATUS_NODE_TIMEOUT must be more than 5 seconds, got 5"),
    ):
        monkeypatch.setenv("JOBSTATUS_NODE_TIMEOUT", value)
        with pytest.raises(InvalidSetting) as info:
            crawl_lease("postgresql://db.internal/jobs")
        assert str(info.value) == message


def test_a_crawl_whose_job_another_attempt_holds_stops_once() -> None:
    tracker = JobTracker(JobState(job_id="j", status=JobStatus.RUNNING))
    assert tracker.superseded() and tracker.closing and tracker.lost
    assert not tracker.superseded()  # once
    assert tracker.closed("jobstatus_superseded") is JobStatus.FAILED
    closing = JobTracker(JobState(job_id="k", status=JobStatus.RUNNING))
    assert closing.cancel(1.0, source="store")
    assert not closing.superseded() and closing.lost  # already stopping: no second close


def test_a_crawl_cut_off_from_its_store_pauses_and_goes_on_when_it_is_back(
    tmp_path: Path,
    logged_site: str,
    access_log: Path,
    database: str,
    proxy: PartitionProxy,
    reactor_mode: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTATUS_NODE_TIMEOUT", str(NODE_TIMEOUT))
    job = f"lease-{time.monotonic_ns()}"
    urls = ",".join(f"{logged_site}/slow?delay=1&n={job}-{i}" for i in range(PAGES))
    log = tmp_path / "crawl.log"
    crawl = start_crawl(
        "batch",
        proxy.url(database),  # type: ignore[arg-type]
        log,
        args={"urls": urls, "_job": job},
        settings={**reactor_mode, "CONCURRENT_REQUESTS": "1", "JOBSTATUS_INTERVAL": "0.2"},
    )
    store = open_store(database)
    try:
        wait_for(
            lambda: (state := store.get(job)) is not None and state.total_pages_crawled >= 2,
            timeout=60,
            what="two pages crawled",
        )
        proxy.hold()
        held_at = time.time()
        wait_for(lambda: PAUSING in log.read_text(), timeout=30, what="the crawl to pause")
        paused_by = time.time()
        time.sleep(HELD)  # the partition goes on, the crawl paused
        proxy.release()
        released_at = time.time()
        wait_for(lambda: CRAWLING_ON in log.read_text(), timeout=30, what="the crawl to go on")
        assert crawl.wait(90) == 0
        done = store.document(job)
    finally:
        store.close()
        if crawl.poll() is None:
            crawl.kill()
            crawl.wait()
    text = log.read_text()
    assert done is not None
    assert (done["status"], done["attempt"], done["total_pages_crawled"]) == ("completed", 1, PAGES)
    assert text.count(PAUSING) == 1 and text.count(CRAWLING_ON) == 1
    assert "'jobstatus/lease_pauses': 1" in text
    assert "Traceback" not in text
    # Paused within the lease less 5 s (and a tick) of the cut.
    pages = sorted(
        (line for line in read_lines(access_log) if f"n={job}-" in line["url"]),
        key=lambda line: line["start"],
    )
    assert len(pages) == PAGES
    # The page in flight when the crawl paused was answered and kept; no
    # page was asked for while it was paused.
    assert not [p for p in pages if paused_by <= p["start"] < released_at], json.dumps(pages)
    assert any(p["start"] < paused_by and p["end"] > held_at for p in pages)


def test_a_crawl_of_a_sqlite_store_never_pauses(
    tmp_path: Path, logged_site: str, access_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one machine there is no partition: a crawl whose store is locked
    by another process crawls on (its writes wait), as before leases."""
    monkeypatch.setenv("JOBSTATUS_NODE_TIMEOUT", str(NODE_TIMEOUT))
    db = tmp_path / "jobs.db"
    job = f"sqlite-{time.monotonic_ns()}"
    urls = ",".join(f"{logged_site}/slow?delay=0.5&n={job}-{i}" for i in range(16))
    log = tmp_path / "crawl.log"
    crawl = start_crawl(
        "batch",
        db,
        log,
        args={"urls": urls, "_job": job},
        settings={"CONCURRENT_REQUESTS": "1", "JOBSTATUS_INTERVAL": "0.2"},
    )
    try:
        wait_for(lambda: db.exists() and _pages(db, job) >= 1, timeout=60, what="a page")
        with sqlite_write_lock_held(db):
            locked_at = time.time()
            # Past the pause a shared store's crawl would make (5 s).
            wait_for(
                lambda: _answered(access_log, job, since=locked_at) >= 12,
                timeout=60,
                what="pages crawled while the store is locked",
            )
        assert crawl.wait(90) == 0
    finally:
        if crawl.poll() is None:
            crawl.kill()
            crawl.wait()
    assert PAUSING not in log.read_text()


def _pages(db: Path, job: str) -> int:
    store = open_store(db)
    try:
        state = store.get(job)
        return state.total_pages_crawled if state else 0
    finally:
        store.close()


def _answered(access_log: Path, job: str, since: float) -> int:
    return sum(
        1 for line in read_lines(access_log) if f"n={job}-" in line["url"] and line["end"] >= since
    )
