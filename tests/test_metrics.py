"""The ``metrics`` resource: a real ``scrapyd`` with the shipped config (plus
the service), basic auth on, real crawls against the local site; its page,
parsed with prometheus_client's parser, says what the status documents say.
The store's failure, the cancelling status and the series bound are checked
in this process, on a real SQLite store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from scrapy.utils.defer import deferred_f_from_coro_f
from twisted.python.components import Componentized
from twisted.web.test.requesthelper import DummyRequest

from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._store import Attempt, NodeInfo, open_store
from scrapy_jobstatus.scrapyd import metrics
from scrapy_jobstatus.scrapyd._node import IJobStatusNode, JobStatusNode
from tests.helpers import render_answer, wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, sample_urls, slow_urls, unique

AUTH = ("metrics", "s3cret")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The running job series and the document fields they show.
JOB_FIGURES = {
    "jobstatus_running_job_pages_crawled": "total_pages_crawled",
    "jobstatus_running_job_items": "total_documents_found",
    "jobstatus_running_job_errors": "error_count",
    "jobstatus_running_job_requests_in_flight": "requests_in_flight",
    "jobstatus_running_job_requests_pending": "requests_pending",
}
# Those that only grow while a job runs.
GROWING = ("total_pages_crawled", "total_documents_found", "error_count")
FAMILIES = {
    "jobstatus_jobs": "gauge",
    "jobstatus_finished_jobs": "gauge",
    **dict.fromkeys(JOB_FIGURES, "gauge"),
    "jobstatus_running_job_progress_ratio": "gauge",
    "jobstatus_running_job_start_time_seconds": "gauge",
    "jobstatus_webhook_deliveries": "gauge",
    "jobstatus_node_up": "gauge",
    "jobstatus_node_running_processes": "gauge",
    "jobstatus_node_max_processes": "gauge",
    "jobstatus_node_last_seen_timestamp_seconds": "gauge",
    "jobstatus_scrape_duration_seconds": "gauge",
    "jobstatus_store_write_seconds": "histogram",
}
WRITES = "jobstatus_store_write_seconds"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-metrics"),
        options={"max_proc": "4", "poll_interval": "0.2"},
        auth=AUTH,
    )


# -- reading the page ------------------------------------------------------------


def parse(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(node: ScrapydNode) -> dict[str, Metric]:
    answer = node.get("metrics")
    assert answer.code == 200, (answer.code, answer.body[:300])
    return parse(answer.body.decode())


def series(families: dict[str, Metric], name: str, *labels: str) -> dict[Any, float]:
    """A family's samples by their labels' values (one label: the value)."""
    found = {}
    for sample in families[name].samples:
        if sample.name == name:
            key = tuple(sample.labels[label] for label in labels)
            found[key[0] if len(key) == 1 else key] = sample.value
    return found


def histogram(families: dict[str, Metric]) -> dict[tuple[str, str | None], float]:
    return {(s.name, s.labels.get("le")): s.value for s in families[WRITES].samples}


def nonzero(values: dict[Any, float]) -> dict[Any, float]:
    return {key: value for key, value in values.items() if value}


def job_series(families: dict[str, Metric], job: str) -> dict[str, Any]:
    """A running job's figures as its document names them, and its labels."""
    shown: dict[str, Any] = {}
    for name, field in [*JOB_FIGURES.items(), ("jobstatus_running_job_progress_ratio", "")]:
        for sample in families[name].samples:
            if sample.labels["job"] == job:
                shown[field or "progress"] = sample.value * (100 if not field else 1)
                shown["labels"] = sample.labels
    return shown


def documents(node: ScrapydNode) -> dict[str, dict[str, Any]]:
    answer = node.get("jobs.json", {"limit": 1000}).json()
    assert answer["total"] <= 1000
    return {document["job_id"]: document for document in answer["jobs"]}


def same_moment(node: ScrapydNode) -> tuple[dict[str, Metric], dict[str, dict[str, Any]]]:
    """A page and the documents of its moment: read between two listings
    with the same statuses. A status never comes back, so nothing moved
    between them."""

    def reading() -> tuple[dict[str, Metric], dict[str, dict[str, Any]]] | None:
        before = documents(node)
        families = scrape(node)
        after = documents(node)
        statuses = {job: document["status"] for job, document in after.items()}
        if statuses != {job: document["status"] for job, document in before.items()}:
            return None
        return families, after

    return wait_for(reading, timeout=60, interval=0.2, what="a moment without status changes")


# -- a live node -----------------------------------------------------------------


@pytest.fixture(scope="module")
def paused(node: ScrapydNode, site: str) -> str:
    """A running job waiting for its last page (60 s): nine pages done, one an
    error; its figures stay still."""
    job = unique('paused "caf\u00e9" \\')
    urls = sample_urls(site) + f",{site}/status/404,{site}/slow?delay=60"
    assert node.schedule(job=job, urls=urls).json()["status"] == "ok"
    node.wait_status(job, "running", timeout=120)

    def waiting() -> bool:
        document = node.status(job)
        assert document["status"] == "running", document["status"]
        return (
            document["total_pages_crawled"] == 9
            and document["requests_in_flight"] == 1
            and document["requests_pending"] == 0
            # The nine responses' callbacks have run too (slow on a busy
            # machine): the progress estimate counts them until then.
            and document["progress"] == 90
        )

    wait_for(waiting, timeout=120, interval=0.1, what=f"job {job} to wait for its slow page")
    return job


@pytest.fixture(scope="module")
def ended(node: ScrapydNode, site: str, paused: str) -> dict[str, str]:
    """Jobs that ended completed, failed and cancelled."""
    jobs = {"done": unique("done"), "error": unique("failed"), "cancelled": unique("cancelled")}
    node.schedule(job=jobs["done"], urls=f"{site}/sample/,{site}/status/404")
    node.schedule(job=jobs["error"])  # no urls: the spider refuses to start
    node.schedule(job=jobs["cancelled"], urls=slow_urls(site, 2, 30))
    node.wait_status(jobs["cancelled"], "running", timeout=120)
    assert node.post("jobcancel.json", {"job": jobs["cancelled"], "force": "1"}).code == 202
    for reason, job in jobs.items():
        document = node.wait_status(job, "completed", "failed", "cancelled", timeout=120)
        assert document["completion_reason"] == reason, document
    return jobs


def test_metrics_need_credentials(node: ScrapydNode) -> None:
    assert node.get("metrics", auth=None).code == 401
    assert node.get("metrics", auth=("metrics", "wrong")).code == 401
    answer = node.get("metrics")
    assert answer.code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE


def test_every_family_has_its_type_and_help(node: ScrapydNode) -> None:
    families = scrape(node)
    for name, kind in FAMILIES.items():
        assert families[name].type == kind, name
        assert len(families[name].documentation) > 20, name
    assert all(name.startswith("jobstatus_") for name in families)
    (duration,) = families["jobstatus_scrape_duration_seconds"].samples
    assert 0 <= duration.value < 5
    writes = histogram(families)
    buckets = [value for (name, _), value in writes.items() if name.endswith("_bucket")]
    assert buckets == sorted(buckets)
    assert writes[(f"{WRITES}_bucket", "+Inf")] == writes[(f"{WRITES}_count", None)]


def test_a_running_job_shows_the_figures_of_its_document(node: ScrapydNode, paused: str) -> None:
    families = scrape(node)
    document = node.status(paused)
    shown = job_series(families, paused)
    labels = shown.pop("labels")
    assert labels == {
        "job": paused,
        "project": PROJECT,
        "spider": "batch",
        "node": document["node"],
    }
    assert document["node"]
    expected = {field: document[field] for field in JOB_FIGURES.values()}
    expected["progress"] = pytest.approx(document["progress"])
    assert shown == expected
    assert shown["total_pages_crawled"] == 9 and shown["error_count"] == 1
    assert shown["progress"] == pytest.approx(90.0)


def test_a_moving_job_shows_figures_between_two_documents(node: ScrapydNode, site: str) -> None:
    job = unique("moving")
    urls = slow_urls(site, 8, 0.3) + f",{site}/status/404"
    node.schedule(job=job, urls=urls, settings={"CONCURRENT_REQUESTS": 1})
    node.wait_status(job, "running")
    compared = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = node.status(job)
        families = scrape(node)
        after = node.status(job)
        if after["status"] != "running":
            break
        if before["status"] != "running":
            continue
        shown = job_series(families, job)
        assert shown, f"job {job} running, not on the page"
        for field in GROWING:
            assert before[field] <= shown[field] <= after[field], field
        progress = shown.get("progress", 0)
        assert (before["progress"] or 0) <= progress + 1e-9
        assert progress <= (after["progress"] or 0) + 1e-9
        compared += 1
    assert compared >= 3
    done = node.wait_status(job, "completed")
    assert done["total_pages_crawled"] == 9
    assert job not in {s.labels["job"] for s in scrape(node)["jobstatus_running_job_items"].samples}


def test_jobs_by_status_project_and_spider_are_the_documents(
    node: ScrapydNode, paused: str, ended: dict[str, str]
) -> None:
    families, docs = same_moment(node)
    counted = Counter((d["status"], d["project"] or "", d["spider"] or "") for d in docs.values())
    shown = series(families, "jobstatus_jobs", "status", "project", "spider")
    assert nonzero(shown) == dict(counted)
    # Every status of each project and spider, 0 when none.
    assert {status for status, _, _ in shown} == set(JobStatus)
    assert shown[("running", PROJECT, "batch")] >= 1
    assert {"completed", "failed", "cancelled"} <= {status for status, _, _ in nonzero(shown)}
    running = {d["job_id"] for d in docs.values() if d["status"] == "running"}
    on_page = {s.labels["job"] for s in families["jobstatus_running_job_pages_crawled"].samples}
    assert on_page == running


def test_finished_jobs_by_completion_reason_are_the_documents(
    node: ScrapydNode, ended: dict[str, str]
) -> None:
    families, docs = same_moment(node)
    reasons = Counter(d["completion_reason"] for d in docs.values() if d["completion_reason"])
    shown = series(families, "jobstatus_finished_jobs", "completion_reason")
    assert nonzero(shown) == dict(reasons)
    assert {"done", "error", "cancelled"} <= set(nonzero(shown))
    assert {"timeout", "stalled"} <= set(shown)


def test_pending_webhook_deliveries(node: ScrapydNode) -> None:
    before = series(scrape(node), "jobstatus_webhook_deliveries", "outcome")
    job = unique("hooked")
    now = time.time()
    store = open_store(node.db)
    try:
        started = store.start_job(
            JobState(
                job_id=job,
                project=PROJECT,
                spider="batch",
                node="elsewhere",
                status=JobStatus.RUNNING,
                created_at=now,
                started_at=now,
                updated_at=now,
                webhooks=["http://127.0.0.1:9/"],
            )
        )
        assert started.started
        log = store.webhook_log(job)
    finally:
        store.close()
    shown = series(scrape(node), "jobstatus_webhook_deliveries", "outcome")
    # Its job.started event, tried by the node and retried: nobody listens.
    assert len(log) == 1
    assert shown == {**before, "pending": before["pending"] + 1}
    assert set(shown) == {"pending", "delivered", "failed"}


def test_nodes_are_the_heartbeats_of_nodes_json(node: ScrapydNode) -> None:
    store = open_store(node.db)
    try:
        # A node of the cluster that stopped an hour ago.
        an_hour_ago = time.time() - 3600
        store.beat(
            NodeInfo("gone", None, 2, 1, None, an_hour_ago - 60, an_hour_ago), store_clock=False
        )
    finally:
        store.close()

    def reading() -> tuple[dict[str, Metric], list[dict[str, Any]]] | None:
        before = node.get("nodes.json").json()["nodes"]
        families = scrape(node)
        after = node.get("nodes.json").json()["nodes"]
        return (families, after) if before == after else None

    families, nodes = wait_for(reading, timeout=30, interval=0.2, what="a still nodes.json")
    own = node.get("daemonstatus.json").json()["node_name"]
    assert {n["name"] for n in nodes} >= {"gone", own}
    assert series(families, "jobstatus_node_up", "node") == {
        n["name"]: float(n["alive"]) for n in nodes
    }
    assert series(families, "jobstatus_node_running_processes", "node") == {
        n["name"]: n["running"] for n in nodes
    }
    assert series(families, "jobstatus_node_max_processes", "node") == {
        n["name"]: n["max_proc"] for n in nodes
    }
    up = series(families, "jobstatus_node_up", "node")
    assert up["gone"] == 0 and up[own] == 1
    assert series(families, "jobstatus_node_max_processes", "node")[own] == 4


# -- in this process, on a real store ----------------------------------------------


class Root:
    """What a service needs of Scrapyd's web root."""

    debug = False
    node_name = "node-1"

    def __init__(self, node: JobStatusNode):
        self.app = Componentized()
        self.app.setComponent(IJobStatusNode, node)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[JobStatusNode]:
    local_node = JobStatusNode(str(tmp_path / "jobs.db"), "node-1")
    yield local_node
    local_node.calls.stop()
    local_node.store.close()


async def render(resource: metrics.Metrics) -> tuple[int, dict[str, str], str]:
    request = DummyRequest([b""])
    request.method = b"GET"
    body = await render_answer(resource, request)
    headers = {k.decode(): v[0].decode() for k, v in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode or 200, headers, body.decode()


def running_job(job_id: str, **kwargs: Any) -> JobState:
    now = time.time()
    fields: dict[str, Any] = {"created_at": now, "started_at": now, "updated_at": now, **kwargs}
    return JobState(
        job_id=job_id, project="p", spider="s", node="node-1", status=JobStatus.RUNNING, **fields
    )


@deferred_f_from_coro_f
async def test_a_running_job_with_a_cancel_request_is_cancelling(local: JobStatusNode) -> None:
    store = local.store
    store.start_job(running_job("asked", total_pages_crawled=3))
    store.start_job(running_job("runs", progress=25.0))
    store.request_cancel("asked")
    code, _, text = await render(metrics.Metrics(Root(local)))
    assert code == 200
    families = parse(text)
    shown = nonzero(series(families, "jobstatus_jobs", "status", "project", "spider"))
    documents = Counter(
        store.get(job).to_document([], [], time.time())["status"] for job in ("asked", "runs")
    )
    assert documents == {"cancelling": 1, "running": 1}
    assert shown == {("cancelling", "p", "s"): 1, ("running", "p", "s"): 1}
    assert series(families, "jobstatus_running_job_progress_ratio", "job") == {"runs": 0.25}


@deferred_f_from_coro_f
async def test_running_job_series_are_bounded(
    local: JobStatusNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_RUNNING_JOBS", 3)
    for i in range(5):
        local.store.start_job(running_job(f"job-{i}", created_at=1000.0 + i))
    families = parse((await render(metrics.Metrics(Root(local))))[2])
    assert set(series(families, "jobstatus_running_job_pages_crawled", "job")) == {
        "job-2", "job-3", "job-4",
    }  # fmt: skip
    assert series(families, "jobstatus_jobs", "status")["running"] == 5


@deferred_f_from_coro_f
async def test_deliveries_by_outcome(local: JobStatusNode) -> None:
    store = local.store
    store.start_job(running_job("hooked", webhooks=["http://a.example/", "http://b.example/"]))
    store.start_job(running_job("other", webhooks=["http://c.example/"]))
    now = time.time()
    first, second, _ = store.claim_deliveries(now, lease=30, limit=10)
    store.record_attempt(first, Attempt(now, 200, None, 3, delivered=True, next_attempt_at=None))
    store.record_attempt(second, Attempt(now, 410, None, 3, delivered=False, next_attempt_at=None))
    families = parse((await render(metrics.Metrics(Root(local))))[2])
    assert series(families, "jobstatus_webhook_deliveries", "outcome") == {
        "pending": 1, "delivered": 1, "failed": 1,
    }  # fmt: skip


@deferred_f_from_coro_f
async def test_store_writes_are_a_histogram_of_the_page(local: JobStatusNode) -> None:
    resource = metrics.Metrics(Root(local))
    count, below_5ms = (f"{WRITES}_count", None), (f"{WRITES}_bucket", "0.005")
    before = histogram(parse((await render(resource))[2]))
    metrics.observe_store_write(0.003)
    with metrics.timed_store_write():
        local.store.beat(NodeInfo("node-1", None, 1, 0, None, time.time(), time.time()))
    after = histogram(parse((await render(resource))[2]))
    assert after[count] == before[count] + 2
    assert after[below_5ms] >= before[below_5ms] + 1
    assert after[(f"{WRITES}_sum", None)] >= before[(f"{WRITES}_sum", None)] + 0.003
    # The writes are the process's: another registry of the node shows them too.
    other = parse(generate_latest(metrics.node_registry(local)).decode())
    assert histogram(other)[count] == after[count]
    # Nothing in prometheus_client's global registry.
    assert b"jobstatus_" not in generate_latest(REGISTRY)


@deferred_f_from_coro_f
async def test_a_store_that_cannot_be_read_answers_503_in_one_line(local: JobStatusNode) -> None:
    resource = metrics.Metrics(Root(local))
    local.store.start_job(running_job("j"))
    local.store.close()
    db = Path(local.db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"not a database, " * 256)
    code, headers, text = await render(resource)
    assert code == 503
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.count("\n") == 1 and text.startswith("metrics not available: ")
    assert "Traceback" not in text and "not a database" in text
