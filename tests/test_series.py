"""``jobstatus.json?series=1``: the status document with the job's counters
over its whole run, from a real Scrapyd node running real crawls on the
local site, and from jobs written through the store API that the node
reads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from scrapy_jobstatus._model import JobState, JobStatus, isoformat, pending_job
from scrapy_jobstatus._sql import SERIES_POINTS
from scrapy_jobstatus._store import open_store
from tests.helpers import poll_until
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique

COUNTERS = ("pages", "documents", "errors", "failed")
# The document's fields a point's counters are.
OF_DOCUMENT = {
    "pages": "total_pages_crawled",
    "documents": "total_documents_found",
    "errors": "error_count",
    "failed": "responses_failed",
    "in_flight": "requests_in_flight",
    "progress": "progress",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-series"),
        options={"max_proc": "2", "poll_interval": "0.2"},
    )


def status(node: ScrapydNode, job: str, **params: str) -> dict[str, Any]:
    response = node.get("jobstatus.json", {"job": job, **params})
    assert response.code == 200, (response.code, response.body)
    return response.json()["job"]


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def counters_of(document: dict[str, Any]) -> dict[str, Any]:
    return {point: document[field] for point, field in OF_DOCUMENT.items()}


def check_series(series: list[dict[str, Any]]) -> None:
    """In time order, and no counter ever goes down."""
    assert series, "no point"
    assert all(set(p) == {"t", *OF_DOCUMENT} for p in series), series[0]
    times = [seconds(p["t"]) for p in series]
    assert times == sorted(times), "points out of order"
    for name in COUNTERS:
        values = [p[name] for p in series]
        assert values == sorted(values), f"{name} went down: {values}"
    progress = [p["progress"] for p in series if p["progress"] is not None]
    assert progress == sorted(progress), f"progress went down: {progress}"


@pytest.fixture(scope="module")
def run(node: ScrapydNode, site: str) -> dict[str, Any]:
    """A real job of about 4 s, a point every 0.2 s; its series read every
    50 ms while it ran, and its final status document with the series."""
    job = unique("series")
    urls = slow_urls(site, 8, 0.4) + f",{site}/status/404"
    answer = node.schedule(
        job=job, urls=urls, settings={"JOBSTATUS_INTERVAL": "0.2", "CONCURRENT_REQUESTS": 1}
    ).json()
    assert answer["status"] == "ok", answer
    readings = poll_until(
        lambda: status(node, job, series="1"),
        lambda document: not document["is_active"],
        timeout=60,
        what=f"job {job} to end",
    )
    return {"job": job, "readings": readings, "final": readings[-1]}


def test_a_running_job_s_series_grows_and_never_gets_ahead_of_its_document(
    run: dict[str, Any],
) -> None:
    running = [d for d in run["readings"] if d["status"] == "running" and d["series"]]
    assert len(running) >= 10, "too few readings while the job ran"
    previous: list[dict[str, Any]] = []
    for document in running:
        series = document["series"]
        check_series(series)
        # The series is read first: its latest point is at most the document.
        latest = series[-1]
        for name in COUNTERS:
            assert latest[name] <= counters_of(document)[name]
        assert seconds(latest["t"]) <= seconds(document["updated_at"])
        # Later readings keep every earlier point (fewer than 500: none thinned).
        assert series[: len(previous)] == previous
        previous = series
    assert len(previous) > len(running[0]["series"])


def test_the_series_covers_the_whole_run_up_to_the_final_counters(
    run: dict[str, Any],
) -> None:
    document = run["final"]
    assert document["status"] == "completed"
    assert document["total_pages_crawled"] == 9 and document["responses_failed"] == 1
    series = document["series"]
    check_series(series)
    # A point every 0.2 s over about 4 s, give or take the machine's load.
    assert len(series) >= 8, len(series)
    first, last = series[0], series[-1]
    assert first["t"] == document["started_at"]
    assert (first["pages"], first["documents"]) == (0, 0)
    assert last == {"t": last["t"], **counters_of(document)}
    assert last["in_flight"] == 0 and last["progress"] == 100
    assert seconds(last["t"]) == pytest.approx(seconds(document["completed_at"]), abs=1)
    # Nothing but points in between: each counter climbs in steps.
    assert {p["pages"] for p in series} >= {0, 9}
    assert len({p["pages"] for p in series}) >= 4


def test_the_series_is_in_the_store_and_survives_a_restart(
    node: ScrapydNode, run: dict[str, Any]
) -> None:
    job, series = run["job"], run["final"]["series"]
    store = open_store(node.db, readonly=True)
    try:
        assert store.series(job) == series
    finally:
        store.close()
    node.stop()
    node.start()
    assert status(node, job, series="1")["series"] == series


def test_only_series_1_adds_the_series(node: ScrapydNode, run: dict[str, Any]) -> None:
    job = run["job"]
    plain = status(node, job)
    assert "series" not in plain
    for off in ("0", "false", "no", "off", ""):
        assert status(node, job, series=off) == plain
    for on in ("1", "true", "yes", "on", "TRUE"):
        document = status(node, job, series=on)
        assert document.pop("series") == run["final"]["series"]
        assert document == plain
    for bad in ("2", "maybe", "1; DROP TABLE series"):
        response = node.get("jobstatus.json", {"job": job, "series": bad})
        assert response.code == 400, (bad, response.body)
        body = response.json()
        assert body["status"] == "error" and body["message"].startswith("series: ")
        assert body["message"].endswith("is not 0 or 1")
    response = node.get("jobstatus.json", {"job": unique("no-such-job"), "series": "1"})
    assert response.code == 404 and response.json()["status"] == "error"
    response = node.get("jobstatus.json", {"job": job, "project": "other", "series": "1"})
    assert response.code == 404


def test_a_pending_job_has_an_empty_series(node: ScrapydNode) -> None:
    job = unique("pending-series")
    store = open_store(node.db)
    try:
        # Claimed by another node, which has not started it: this one never runs it.
        assert store.add_pending(pending_job(job, project=PROJECT, spider="batch", node="other"))
    finally:
        store.close()
    document = status(node, job, series="1")
    assert document["status"] == "pending" and document["series"] == []


def test_a_long_run_keeps_at_most_500_points_over_the_whole_run(node: ScrapydNode) -> None:
    """1200 writes, a second apart, written through the store API by a crawl
    of another process: the node serves at most 500 points from the start
    to the end, with no hole in between."""
    job = unique("long-series")
    writes = 1200
    start = time.time() - writes - 60
    state = JobState(
        job_id=job, spider="batch", project=PROJECT, status=JobStatus.RUNNING, pid=1,
        interval=1.0, created_at=start, started_at=start, updated_at=start,
    )  # fmt: skip
    store = open_store(node.db)
    try:
        assert store.start_job(state).started
        for i in range(1, writes + 1):
            state.total_pages_crawled = 2 * i
            state.total_documents_found = i
            state.responses_failed = i // 100
            state.requests_in_flight = i % 3
            state.updated_at = start + i
            if i == writes:
                state.status, state.completed_at = JobStatus.COMPLETED, start + i
                state.requests_in_flight, state.progress = 0, 100.0
            assert store.save(state).written
        stored = store.series(job)
    finally:
        store.close()

    document = status(node, job, series="1")
    series = document["series"]
    assert series == stored
    assert SERIES_POINTS // 2 <= len(series) <= SERIES_POINTS
    check_series(series)
    assert series[0]["t"] == isoformat(start) == document["started_at"]
    assert series[0]["pages"] == 0
    assert series[-1] == {"t": isoformat(start + writes), **counters_of(document)}
    assert series[-1]["pages"] == 2 * writes
    # Evenly thinned: no gap wider than a few writes anywhere in the run.
    times = [seconds(p["t"]) for p in series]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 4 * writes / SERIES_POINTS, max(gaps)
    # A rate drawn between two points is the run's own: 2 pages a second.
    for a, b in zip(series, series[1:], strict=False):
        rate = (b["pages"] - a["pages"]) / (seconds(b["t"]) - seconds(a["t"]))
        assert rate == pytest.approx(2, rel=0.01)
