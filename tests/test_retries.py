"""End to end on a real Scrapyd node: a job whose attempt fails is retried
(schedule.json's ``retries``, or JOBSTATUS_RETRIES) with the same job id,
and only when a new attempt may succeed."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import poll_until, read_lines, scrapy
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-retries"),
        options={"max_proc": "2", "poll_interval": "0.5", "items_dir": "items"},
    )


def failing_urls(site: str, count: int = 4) -> str:
    return ",".join(f"{site}/status/500?n={i}" for i in range(count))


def readings_until_done(node: ScrapydNode, job: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every status document read until the job ends (the last one final)."""
    return poll_until(
        lambda: node.status(job),
        lambda doc: doc["status"] in ("completed", "failed", "cancelled"),
        timeout=timeout,
        what=f"job {job} to end",
    )


def statuses(readings: list[dict[str, Any]]) -> list[str]:
    return [status for status, _ in itertools.groupby(doc["status"] for doc in readings)]


def steps(doc: dict[str, Any]) -> list[str]:
    return [event["step"] for event in doc["history"]]


def test_a_killed_crawl_runs_again_and_completes(node: ScrapydNode, site: str) -> None:
    job = unique("killed")
    answer = node.schedule(
        job=job,
        urls=slow_urls(site, 6, 1),
        retries="2",
        settings={"CONCURRENT_REQUESTS": "1", "JOBSTATUS_RETRY_DELAY": "1"},
    )
    assert answer.json()["status"] == "ok", answer.body
    first_pid = node.crawl_pid(job)
    poll_until(
        lambda: node.status(job),
        lambda doc: doc["total_pages_crawled"] >= 1,
        timeout=30,
        what="the first page of attempt 1",
    )
    os.kill(first_pid, signal.SIGKILL)
    readings = readings_until_done(node, job)
    done = readings[-1]
    assert done["status"] == "completed", done
    assert done["completion_reason"] == "done"
    assert done["attempt"] == 2 and done["retries"] == 2
    first, second = done["attempts"]
    assert (first["attempt"], first["status"], first["completion_reason"]) == (1, "failed", "error")
    assert "exit code -9 (killed by SIGKILL)" in first["error_message"]
    assert f"pid {first_pid}" in first["error_message"]
    assert first["ended_at"] is not None and first["started_at"] is not None
    assert (second["attempt"], second["status"]) == (2, "completed")
    assert second["started_at"] >= first["ended_at"]
    # The retry started over: its counters are its own, not added to the first's.
    assert done["total_pages_crawled"] == done["total_documents_found"] == 6
    assert done["error_message"] is None and done["retry_at"] is None
    history = steps(done)
    assert history.index("failed") < history.index("retry") < history.index("retry started")
    retry = done["history"][history.index("retry")]
    assert retry["details"].startswith("attempt 2 in ")
    assert "; attempt 1: The crawl process (pid " in retry["details"]
    assert history[-1] == "finished"
    # Between the attempts the job waited in the queue, never ended.
    assert "pending" in statuses(readings[1:])
    assert all(doc["status"] not in ("failed", "cancelled") for doc in readings)
    node.wait_idle()


def test_a_job_failing_every_attempt_ends_failed_with_every_attempt(
    node: ScrapydNode, site: str, reactor_mode: dict[str, str]
) -> None:
    job = unique("failing")
    answer = node.schedule(
        job=job,
        urls=failing_urls(site),
        retries="2",
        settings={**reactor_mode, "JOBSTATUS_RETRY_DELAY": "0.5", "RETRY_ENABLED": "False"},
    )
    assert answer.json()["status"] == "ok", answer.body
    readings = readings_until_done(node, job)
    done = readings[-1]
    assert (done["status"], done["completion_reason"]) == ("failed", "error")
    assert done["attempt"] == 3 and done["retries"] == 2
    assert [(a["attempt"], a["status"]) for a in done["attempts"]] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    for attempt in done["attempts"]:
        assert "4 of 4 responses failed" in attempt["error_message"], attempt
        assert attempt["ended_at"] is not None
    assert "4 of 4 responses failed" in done["error_message"]
    assert done["retry_at"] is None and done["is_active"] is False
    # Each attempt started over; the errors of every attempt are kept.
    assert done["total_pages_crawled"] == 4
    assert done["error_count"] == 12
    history = steps(done)
    assert history.count("retry") == 2 and history.count("retry started") == 2
    assert history[-1] == "finished"
    # While waiting for its next attempt, the job is pending with a retry time.
    waiting = [doc for doc in readings if doc["status"] == "pending" and doc["retry_at"]]
    assert waiting, statuses(readings)
    assert all(doc["attempt"] in (2, 3) and doc["is_active"] for doc in waiting)
    assert all(doc["retry_at"] is None for doc in readings if doc["status"] == "running")
    # `scrapy jobstatus` says which attempt.
    shown = scrapy("jobstatus", job, "--url", node.url)
    assert shown.returncode == 0, shown.stderr
    assert "status:      failed (error)" in shown.stdout
    assert "attempt:     3 of 3" in shown.stdout
    node.wait_idle()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "retries must be a number, not 'x'"),
        ("-1", "retries must be a whole number from 0 to 100, got -1"),
        ("101", "retries must be a whole number from 0 to 100, got 101"),
        ("1.5", "retries must be a whole number from 0 to 100, got 1.5"),
    ],
)
def test_bad_retries_are_refused_and_nothing_is_recorded(
    node: ScrapydNode, site: str, value: str, message: str
) -> None:
    before = node.get("jobs.json").json()["total"]
    job = unique("bad-retries")
    answer = node.schedule(job=job, urls=f"{site}/sample/", retries=value)
    assert answer.code == 200  # Scrapyd's own error shape
    body = answer.json()
    assert body["status"] == "error" and message in body["message"], body
    assert node.get("jobstatus.json", {"job": job}).code == 404
    assert node.get("jobs.json").json()["total"] == before
    assert all(job != queued["id"] for queued in node.get("listjobs.json").json()["pending"])


def test_a_bad_retries_setting_is_refused_naming_the_setting(node: ScrapydNode, site: str) -> None:
    job = unique("bad-setting")
    answer = node.schedule(job=job, urls=f"{site}/sample/", settings={"JOBSTATUS_RETRIES": "x"})
    body = answer.json()
    assert body["status"] == "error", body
    assert "JOBSTATUS_RETRIES must be a number, not 'x'" in body["message"]
    assert node.get("jobstatus.json", {"job": job}).code == 404


def test_a_job_killed_by_cancel_is_not_retried(node: ScrapydNode, site: str) -> None:
    job = unique("cancel-kill")
    answer = node.schedule(
        job=job,
        urls=slow_urls(site, 6, 5),
        retries="2",
        settings={"JOBSTATUS_RETRY_DELAY": "0.5"},
    )
    assert answer.json()["status"] == "ok", answer.body
    node.wait_status(job, "running", timeout=30)
    node.crawl_pid(job)  # Scrapyd lists its process: cancel.json signals it
    cancelled = node.post("cancel.json", {"project": PROJECT, "job": job, "signal": "KILL"})
    assert cancelled.json()["status"] == "ok", cancelled.body
    readings = readings_until_done(node, job, timeout=30)
    done = readings[-1]
    assert done["status"] in ("failed", "cancelled"), done
    assert done["attempt"] == 1 and len(done["attempts"]) == 1
    assert "retry" not in steps(done)
    assert all(doc["status"] != "pending" for doc in readings)
    # No new attempt starts later either.
    node.wait_idle()
    after = node.status(job)
    assert (after["status"], after["attempt"]) == (done["status"], 1)
    assert after["updated_at"] == done["updated_at"]


def test_bad_spider_arguments_fail_once(node: ScrapydNode) -> None:
    job = unique("bad-args")
    answer = node.schedule(
        job=job,
        urls="ftp://example.com/file",
        retries="2",
        settings={"JOBSTATUS_RETRY_DELAY": "0.5"},
    )
    assert answer.json()["status"] == "ok", answer.body
    readings = readings_until_done(node, job)
    done = readings[-1]
    assert (done["status"], done["completion_reason"]) == ("failed", "error")
    assert "urls: 'ftp://example.com/file' is not an http(s) URL" in done["error_message"]
    assert done["attempt"] == 1 and len(done["attempts"]) == 1
    assert done["attempts"][0]["status"] == "failed"
    assert "retry" not in steps(done)
    node.wait_idle()
    assert node.status(job)["attempt"] == 1


def test_the_retries_setting_works_like_the_argument(node: ScrapydNode, site: str) -> None:
    job = unique("setting")
    answer = node.schedule(
        job=job,
        urls=failing_urls(site, 2),
        settings={
            "JOBSTATUS_RETRIES": "1",
            "JOBSTATUS_RETRY_DELAY": "0.5",
            "RETRY_ENABLED": "False",
        },
    )
    assert answer.json()["status"] == "ok", answer.body
    done = readings_until_done(node, job)[-1]
    assert done["status"] == "failed" and done["retries"] == 1
    assert done["attempt"] == 2
    assert [a["status"] for a in done["attempts"]] == ["failed", "failed"]
    assert steps(done).count("retry") == 1 and steps(done).count("retry started") == 1
    node.wait_idle()


def test_each_attempt_writes_its_items_to_a_file_of_its_own(node: ScrapydNode, site: str) -> None:
    job = unique("items")
    urls = failing_urls(site)
    answer = node.schedule(
        job=job,
        urls=urls,
        retries="1",
        settings={"JOBSTATUS_RETRY_DELAY": "0.5", "RETRY_ENABLED": "False"},
    )
    assert answer.json()["status"] == "ok", answer.body
    done = readings_until_done(node, job)[-1]
    assert (done["status"], done["attempt"]) == ("failed", 2), done
    folder = node.workdir / "items" / PROJECT / "batch"
    names = {1: f"{job}.jl", 2: f"{job}.attempt2.jl"}
    for name in names.values():
        items = read_lines(folder / name)
        # One item per URL with its outcome, each once: the attempt's own.
        assert Counter(item["url"] for item in items) == Counter(urls.split(",")), name
        assert all(item["status"] == 500 for item in items), items
    assert sorted(path.name for path in folder.glob(f"{job}*")) == sorted(names.values())
    feeds = [(f["attempt"], Path(urlsplit(f["uri"]).path).name, f["items"]) for f in done["feeds"]]
    assert feeds == [(1, names[1], 4), (2, names[2], 4)], done["feeds"]
    node.wait_idle()
