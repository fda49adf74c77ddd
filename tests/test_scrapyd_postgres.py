"""End to end: a Scrapyd node whose job store is PostgreSQL (``[jobstatus] db
= postgresql://...``) serves the same job services as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import scrapy
from tests.postgres import temporary_database
from tests.scrapyd_node import ScrapydNode, parent_pid, running_node, slow_urls, unique


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    with temporary_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-postgres"),
        options={"poll_interval": "0.2"},
        jobstatus={"db": database},
    )


def test_a_job_runs_and_is_served_from_postgresql(node: ScrapydNode, database: str, site: str):
    job = unique("pg")
    urls = f"{site}/sample/,{site}/sample/apple,{site}/status/404"
    assert node.schedule(job=job, urls=urls).json()["status"] == "ok"
    done = node.wait_status(job, "completed", "failed", "cancelled")
    assert (done["status"], done["total_pages_crawled"], done["error_count"]) == ("completed", 3, 1)
    listed = node.get("jobs.json", {"spider": "batch"}).json()
    assert job in [j["job_id"] for j in listed["jobs"]]
    report = node.get("joberrors.json", {"job": job}).json()
    assert [e["http_status"] for e in report["errors"]] == [404]
    # The crawl wrote to PostgreSQL, not to a file of the node's.
    assert not node.db.exists()
    shown = scrapy("jobstatus", job, "--db", database)
    assert shown.returncode == 0 and "completed" in shown.stdout, shown.stderr


def test_a_running_job_is_cancelled_through_postgresql(node: ScrapydNode, database: str, site: str):
    job = unique("pg-cancel")
    node.schedule(job=job, urls=slow_urls(site, 6, 2), settings={"CONCURRENT_REQUESTS": 2})
    node.wait_status(job, "running")
    # The store's URL reached the crawl in its environment, not on its
    # command line, which anyone on the machine can read.
    pid = node.crawl_pid(job)
    assert database.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    if parent_pid(pid) == node.zygote_pid():
        # A warm crawl sets its environment after the fork: /proc shows the
        # zygote's, which has no store.
        assert database.encode() not in environ
    else:
        assert f"JOBSTATUS_DB={database}".encode() in environ
    answer = node.post("jobcancel.json", {"job": job})
    assert answer.code == 202 and answer.json()["job"]["status"] == "cancelling"
    done = node.wait_status(job, "cancelled", "completed", "failed", timeout=60)
    assert (done["status"], done["completion_reason"]) == ("cancelled", "cancelled")


def test_the_event_stream_series_and_metrics_on_postgresql(node: ScrapydNode, site: str):
    start = node.get("events.json").json()["last_id"]
    job = unique("pg-events")
    node.schedule(
        job=job, urls=f"{site}/sample/,{site}/status/404", settings={"JOBSTATUS_INTERVAL": "0.2"}
    )
    done = node.wait_status(job, "completed", "failed", "cancelled")
    answer = node.get("events.json", {"since": start, "job": job, "wait": "5"}).json()
    steps = [e["step"] for e in answer["events"]]
    assert steps[0] == "opened" and steps == [h["step"] for h in done["history"]]
    ids = [e["id"] for e in answer["events"]]
    assert ids == sorted(ids) and answer["last_id"] == ids[-1]
    series = node.get("jobstatus.json", {"job": job, "series": "1"}).json()["job"]["series"]
    assert series and series[-1]["pages"] == done["total_pages_crawled"] == 2
    metrics = node.get("metrics").body.decode()
    assert 'jobstatus_finished_jobs{completion_reason="done"}' in metrics
