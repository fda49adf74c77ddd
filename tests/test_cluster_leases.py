"""End to end: an outage of the store fails no job, a partition never runs
one job twice, and a node that really died is still declared dead.

Real parts: two ``scrapyd`` nodes with the shipped scrapyd.conf on a
throwaway PostgreSQL of the module's own (``near`` reaches it directly,
``far`` and its crawls through a proxy of the test's own that can hold every
packet: a partition, not a refused connection), ``node_timeout`` at its
minimum (10 s), slow crawls of the local site, whose access log says when
each page was asked for and answered, and the crawls' own logs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import local_site, read_lines, wait_for
from tests.partition_proxy import PartitionProxy
from tests.postgres import PostgresServer, postgres_server
from tests.scrapyd_node import PROJECT, ScrapydNode, unique

pytestmark = pytest.mark.slow

NODE_TIMEOUT = 10
ENDED = ("completed", "failed", "cancelled")
PAUSING = "pausing the crawl"
CRAWLING_ON = "crawling on"
LOST = "is no longer this crawl's"
# The nodes' lines when they take the jobs of a node for dead.
NODE_DIED = ("failed: its node", "queued again: its node")


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    # A server of the module's own: the outage stops it.
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="module")
def database(server: PostgresServer) -> Iterator[str]:
    with server.database() as url:
        yield url


@pytest.fixture(scope="module")
def proxy(server: PostgresServer) -> Iterator[PartitionProxy]:
    proxy = PartitionProxy(server.port).start()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("leases-site") / "access.jl"


@pytest.fixture(scope="module")
def logged_site(access_log: Path) -> Iterator[str]:
    with local_site({"TEST_SITE_ACCESS_LOG": str(access_log)}) as url:
        yield url


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, database: str, proxy: PartitionProxy
) -> Iterator[tuple[ScrapydNode, ScrapydNode]]:
    root = tmp_path_factory.mktemp("leases")
    near, far = (
        ScrapydNode(
            root / name,
            options={"node_name": name, "max_proc": "2", "poll_interval": "0.5"},
            jobstatus={"db": db, "node_timeout": str(NODE_TIMEOUT)},
        )
        for name, db in (("near", database), ("far", proxy.url(database)))
    )
    try:
        near.start()
        far.start()
        near.deploy()  # the egg is in the shared store
        yield near, far
    finally:
        proxy.release()
        near.stop()
        far.stop()


def urls(site: str, job: str, pages: int, delay: float = 1.0) -> str:
    """The job's slow pages: the site's access log tells them by their ``n``."""
    return ",".join(f"{site}/slow?delay={delay}&n={job}-{i}" for i in range(pages))


def document(node: ScrapydNode, job: str) -> dict[str, Any] | None:
    """The job's status document, or None while the node answers 503."""
    response = node.get("jobstatus.json", {"job": job})
    return response.json()["job"] if response.code == 200 else None


def ended(node: ScrapydNode, job: str, timeout: float) -> dict[str, Any]:
    return wait_for(
        lambda: (d := document(node, job)) is not None and d["status"] in ENDED and d,
        timeout=timeout,
        interval=0.5,
        what=f"job {job} to end",
    )


def crawl_log(node: ScrapydNode, job: str) -> Path:
    return node.workdir / "logs" / PROJECT / "batch" / f"{job}.log"


def logged(node: ScrapydNode, job: str, text: str) -> bool:
    path = crawl_log(node, job)
    return path.exists() and text in path.read_text()


def pages_of(access_log: Path, job: str) -> list[dict[str, Any]]:
    return sorted(
        (line for line in read_lines(access_log) if f"n={job}-" in line["url"]),
        key=lambda line: line["start"],
    )


def run_on(far: ScrapydNode, near: ScrapydNode, job: str, **schedule: Any) -> None:
    """Schedule the job while ``near`` is stopped, so that ``far`` runs it;
    ``near`` is started again once the job crawls."""
    near.stop()
    try:
        assert far.schedule(job=job, **schedule).json()["status"] == "ok"
        wait_for(
            lambda: (
                (d := document(far, job)) is not None
                and (d["status"], d["node"]) == ("running", "far")
                and d["total_pages_crawled"] >= 2
            ),
            timeout=60,
            what=f"job {job} to crawl on far",
        )
    finally:
        near.start()


def test_an_outage_longer_than_node_timeout_fails_no_running_job(
    nodes: tuple[ScrapydNode, ScrapydNode], server: PostgresServer, logged_site: str
) -> None:
    near, far = nodes
    prefix = unique("outage")
    jobs = [f"{prefix}-{i}" for i in range(4)]
    for job in jobs:
        near.schedule(job=job, urls=urls(logged_site, job, 14), settings={"CONCURRENT_REQUESTS": 1})

    def crawling() -> dict[str, ScrapydNode] | None:
        documents = {job: document(near, job) for job in jobs}
        if not all(
            d and d["status"] == "running" and d["total_pages_crawled"] for d in documents.values()
        ):
            return None
        return {job: near if d["node"] == "near" else far for job, d in documents.items()}  # type: ignore[index]

    ran_on = wait_for(crawling, timeout=90, interval=0.5, what="four jobs crawling")
    assert {node for node in ran_on.values()} == {near, far}  # two on each node

    server.halt()
    halted_at = time.time()
    try:
        # Every crawl pauses, and the outage outlasts node_timeout.
        wait_for(
            lambda: (
                all(logged(node, job, PAUSING) for job, node in ran_on.items())
                and time.time() > halted_at + NODE_TIMEOUT + 5
            ),
            timeout=60,
            interval=0.5,
            what="every crawl to pause",
        )
    finally:
        server.resume()

    for job, node in ran_on.items():
        done = ended(near, job, timeout=120)
        assert (done["status"], done["node"], done["attempt"]) == (
            "completed",
            node.workdir.name,
            1,
        )
        assert done["total_pages_crawled"] == 14
        assert [a["status"] for a in done["attempts"]] == ["completed"]
        assert logged(node, job, CRAWLING_ON) and not logged(node, job, LOST)
    for node in nodes:
        assert not any(line in node.log_text() for line in NODE_DIED), node.workdir.name


def test_a_partition_never_runs_one_job_twice(
    nodes: tuple[ScrapydNode, ScrapydNode],
    proxy: PartitionProxy,
    logged_site: str,
    access_log: Path,
) -> None:
    near, far = nodes
    job = unique("partition")
    run_on(
        far,
        near,
        job,
        urls=urls(logged_site, job, 24),
        retries="1",
        settings={"CONCURRENT_REQUESTS": 1, "JOBSTATUS_RETRY_DELAY": 1},
    )
    proxy.hold()  # far and its crawl are cut off from the store; the site they reach
    try:
        wait_for(lambda: logged(far, job, PAUSING), timeout=30, what="far's crawl to pause")
        # near takes the job over once far's crawl's lease ran out, and runs
        # the next attempt.
        wait_for(
            lambda: (
                (d := document(near, job)) is not None
                and (d["status"], d["node"], d["attempt"]) == ("running", "near", 2)
                and d["total_pages_crawled"] >= 2
            ),
            timeout=90,
            interval=0.5,
            what="near to run attempt 2",
        )
    finally:
        proxy.release()

    # Back in touch, far's crawl finds the job another attempt's: it closes.
    wait_for(lambda: logged(far, job, "Spider closed (jobstatus_superseded)"), timeout=60)
    done = ended(near, job, timeout=120)
    assert (done["status"], done["node"], done["attempt"]) == ("completed", "near", 2)
    assert [(a["status"], a["node"]) for a in done["attempts"]] == [
        ("superseded", "far"),
        ("completed", "near"),
    ]
    assert "node 'far'" in done["attempts"][0]["error_message"]
    text = crawl_log(far, job).read_text()
    # Its lease, node_timeout, came from its node: it paused 5 s into the cut.
    assert f"could not renew its lease in the job store for {NODE_TIMEOUT - 5} s" in text
    assert text.count(LOST) == 1 and CRAWLING_ON not in text
    # One page at a time per crawl: two pages of the job asked for at once
    # would be two attempts crawling at the same moment.
    pages = pages_of(access_log, job)
    overlaps = [(a, b) for a, b in zip(pages, pages[1:], strict=False) if b["start"] < a["end"]]
    assert not overlaps
    assert len({p["url"] for p in pages}) == 24  # attempt 2 crawled them all
    assert len(pages) > 24  # and attempt 1 some of them, before


def test_a_node_that_died_is_still_declared_dead_after_node_timeout(
    nodes: tuple[ScrapydNode, ScrapydNode], logged_site: str
) -> None:
    near, far = nodes
    job = unique("died")
    run_on(
        far,
        near,
        job,
        urls=urls(logged_site, job, 16),
        retries="1",
        settings={"CONCURRENT_REQUESTS": 1, "JOBSTATUS_RETRY_DELAY": 1},
    )
    crawl = far.crawl_pid(job)
    assert far.process is not None
    far.process.send_signal(signal.SIGKILL)  # kill -9 of the node and its crawl
    os.kill(crawl, signal.SIGKILL)
    far.process.wait(10)
    far.process = None
    try:
        done = ended(near, job, timeout=NODE_TIMEOUT + 120)
        assert (done["status"], done["node"], done["attempt"]) == ("completed", "near", 2)
        first = done["attempts"][0]
        assert (first["status"], first["node"]) == ("superseded", "far")
        assert "The node 'far' that ran the crawl stopped" in first["error_message"]
        assert f"Job {job} failed: its node far died" in near.log_text()
    finally:
        far.start()
