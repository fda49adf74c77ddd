"""``GET metrics``: a Scrapyd node's figures in the Prometheus text format
(0.0.4), behind the node's basic auth like every resource of the node.

Every figure but one is read from the job store at each scrape, by a
collector of its own on a registry of the node's own (no global registry,
no thread): the jobs by status, the finished jobs by completion reason, the
running jobs' counters, the webhook deliveries by outcome and the nodes of
the cluster. With a store shared by several nodes, every node answers the
same store figures. The exception is ``jobstatus_store_write_seconds``, the
time of this process's own store writes, which the launcher reports with
``observe_store_write`` (or ``timed_store_write``).

A scrape costs a few GROUP BY queries and one page of running jobs, at
most ``MAX_RUNNING_JOBS`` of them (the newest): never a read of every job.
A store that cannot be read answers 503 with one line of text.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web import http

from .._model import CompletionReason, JobState, JobStatus
from .._store import JobFilter, JobStore, NodeInfo, StoreError
from ._calls import RETRY_AFTER
from ._resource import NodeResource

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric
    from twisted.web.server import Request

    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.metrics")

# The Prometheus text format 0.0.4, which generate_latest writes. (Newer
# prometheus_client name version 1.0.0 CONTENT_TYPE_LATEST; the text is the
# same for these names, and every Prometheus reads 0.0.4.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The running jobs given per-job series, the newest first: the series of a
# scrape stay bounded whatever runs. jobstatus_jobs counts them all.
MAX_RUNNING_JOBS = 1000
# Webhook deliveries' outcomes, always shown (0 when none).
DELIVERY_OUTCOMES = ("pending", "delivered", "failed")
# Store writes take milliseconds; a write waiting for the store's lock, seconds.
WRITE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# This process's store writes, in no registry of its own: each node's
# registry shows it. A Histogram is thread-safe (the launcher writes from
# threads).
STORE_WRITE_SECONDS = Histogram(
    "jobstatus_store_write_seconds",
    "Duration of this Scrapyd node process's own job store writes "
    "(heartbeats, queue claims), in seconds.",
    buckets=WRITE_BUCKETS,
    registry=None,
)


def observe_store_write(seconds: float) -> None:
    """Record one store write of this process that took ``seconds``."""
    STORE_WRITE_SECONDS.observe(max(seconds, 0.0))


@contextmanager
def timed_store_write() -> Iterator[None]:
    """Time the store write of the block (recorded whether or not it raises)::

    with timed_store_write():
        store.beat(heartbeat)
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_store_write(time.perf_counter() - start)


@dataclass(frozen=True)
class Reading:
    """What one scrape read from the store."""

    # (status as the status documents show it, project, spider) -> jobs
    jobs: dict[tuple[str, str, str], int]
    reasons: dict[str, int]
    deliveries: dict[str, int]
    running: list[JobState]
    nodes: list[NodeInfo]
    # The store's clock as it was read: the nodes' heartbeats are its times.
    clock: float
    seconds: float


def read_store(node: JobStatusNode) -> Reading:
    """The figures of a scrape; StoreError (one line) if the store cannot
    be read."""
    store = node.store
    limit = MAX_RUNNING_JOBS
    start = time.perf_counter()
    try:
        counts = store.status_counts()
        page = store.list_jobs(JobFilter(status=str(JobStatus.RUNNING)), limit=limit)
        cancel_requested = _cancel_requested(store, counts, page.total, limit)
        reasons = store.reason_counts()
        deliveries = store.delivery_counts()
        nodes = store.nodes()
        clock = store.clock()
    except StoreError:
        raise
    except Exception as e:
        # A backend's own error: the traceback goes to the log, not to the client.
        log.failure("Cannot read the job store for the metrics")
        raise StoreError(f"cannot read the job store ({type(e).__name__})") from e
    return Reading(
        jobs=_displayed_counts(counts, cancel_requested),
        reasons=reasons,
        deliveries=deliveries,
        running=page.jobs,
        nodes=nodes,
        clock=clock,
        seconds=time.perf_counter() - start,
    )


def _cancel_requested(
    store: JobStore, counts: list[tuple[str, str | None, str | None, int]], running: int, limit: int
) -> Counter[tuple[str | None, str | None]]:
    """The running jobs with a cancel request (their documents say
    ``cancelling``) by project and spider: status_counts counts them as
    running. Read only when there are some."""
    stored_running = sum(n for status, _, _, n in counts if status == JobStatus.RUNNING)
    if stored_running <= running:
        return Counter()
    page = store.list_jobs(JobFilter(status=str(JobStatus.CANCELLING)), limit=limit)
    return Counter(
        (s.project, s.spider)
        for s in page.jobs
        if s.status == JobStatus.RUNNING and s.cancel_requested_at is not None
    )


def _displayed_counts(
    counts: list[tuple[str, str | None, str | None, int]],
    cancel_requested: Counter[tuple[str | None, str | None]],
) -> dict[tuple[str, str, str], int]:
    """Every status of each project and spider (0 when none), a running job
    with a cancel request counted cancelling, as ``JobState.to_document``
    shows it."""
    jobs: dict[tuple[str, str, str], int] = {}
    for _, project, spider, _ in counts:
        for status in JobStatus:
            jobs[(str(status), project or "", spider or "")] = 0
    for status, project, spider, n in counts:
        key = (project or "", spider or "")
        if status == JobStatus.RUNNING:
            # The two reads are not one moment: never move more than counted.
            moved = min(cancel_requested[(project, spider)], n)
            jobs[(str(JobStatus.CANCELLING), *key)] += moved
            n -= moved
        jobs[(status, *key)] = jobs.get((status, *key), 0) + n
    return jobs


class JobStoreCollector(Collector):
    """The store's figures, read at each scrape (a prometheus_client
    collector: ``collect`` yields metric families)."""

    def __init__(self, node: JobStatusNode):
        self.node = node

    def collect(self) -> Iterable[Metric]:
        reading = read_store(self.node)
        yield from self.families(reading)

    def families(self, reading: Reading) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "jobstatus_jobs",
            "Jobs in the job store by status, project and spider; a running job with a "
            "cancel request is cancelling, as in its status document.",
            labels=["status", "project", "spider"],
        )
        for (status, project, spider), n in sorted(reading.jobs.items()):
            jobs.add_metric([status, project, spider], n)
        yield jobs

        finished = GaugeMetricFamily(
            "jobstatus_finished_jobs",
            "Finished jobs in the job store by completion reason (a gauge: pruning "
            "the store removes old jobs).",
            labels=["completion_reason"],
        )
        reasons = dict.fromkeys(map(str, CompletionReason), 0) | reading.reasons
        for reason, n in sorted(reasons.items()):
            finished.add_metric([reason], n)
        yield finished

        yield from self._running(reading.running)

        deliveries = GaugeMetricFamily(
            "jobstatus_webhook_deliveries",
            "Webhook deliveries in the job store's outbox by outcome: pending "
            "(to be tried, or retried), delivered, failed (given up).",
            labels=["outcome"],
        )
        outcomes = dict.fromkeys(DELIVERY_OUTCOMES, 0) | reading.deliveries
        for outcome, n in outcomes.items():
            deliveries.add_metric([outcome], n)
        yield deliveries

        yield from self._nodes(reading.nodes, reading.clock)

        yield GaugeMetricFamily(
            "jobstatus_scrape_duration_seconds",
            "Time this scrape took to read the job store, in seconds.",
            value=reading.seconds,
        )

    def _running(self, states: list[JobState]) -> Iterator[Metric]:
        labels = ["job", "project", "spider", "node"]
        scope = f"the newest {MAX_RUNNING_JOBS} running jobs at most"

        def family(name: str, what: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, f"{what} ({scope}).", labels=labels)

        pages = family("jobstatus_running_job_pages_crawled", "Pages a running job crawled")
        items = family("jobstatus_running_job_items", "Items a running job found")
        errors = family("jobstatus_running_job_errors", "Errors of a running job")
        in_flight = family(
            "jobstatus_running_job_requests_in_flight", "Requests a running job is downloading"
        )
        pending = family(
            "jobstatus_running_job_requests_pending",
            "Requests waiting in a running job's scheduler",
        )
        progress = family(
            "jobstatus_running_job_progress_ratio",
            "A running job's progress from 0 to 1, when it can tell (its document's "
            "progress divided by 100)",
        )
        started = family(
            "jobstatus_running_job_start_time_seconds",
            "When a running job started, in seconds since the Unix epoch",
        )
        for state in states:
            values = [state.job_id, state.project or "", state.spider or "", state.node or ""]
            pages.add_metric(values, state.total_pages_crawled)
            items.add_metric(values, state.total_documents_found)
            errors.add_metric(values, state.error_count)
            in_flight.add_metric(values, state.requests_in_flight)
            pending.add_metric(values, state.requests_pending)
            if state.progress is not None:
                progress.add_metric(values, state.progress / 100)
            if state.started_at is not None:
                started.add_metric(values, state.started_at)
        yield from (pages, items, errors, in_flight, pending, progress, started)

    def _nodes(self, nodes: list[NodeInfo], now: float) -> Iterator[Metric]:
        timeout = self.node.node_timeout
        up = GaugeMetricFamily(
            "jobstatus_node_up",
            f"1 if the Scrapyd node's last heartbeat is younger than the node timeout "
            f"({timeout:g} s), else 0.",
            labels=["node"],
        )
        running = GaugeMetricFamily(
            "jobstatus_node_running_processes",
            "Crawl processes the node ran at its last heartbeat.",
            labels=["node"],
        )
        max_proc = GaugeMetricFamily(
            "jobstatus_node_max_processes",
            "Crawl processes the node runs at most (Scrapyd's max_proc).",
            labels=["node"],
        )
        last_seen = GaugeMetricFamily(
            "jobstatus_node_last_seen_timestamp_seconds",
            "The node's last heartbeat, in seconds since the Unix epoch.",
            labels=["node"],
        )
        for info in nodes:
            alive = info.to_dict(now, timeout)["alive"]
            up.add_metric([info.name], 1 if alive else 0)
            running.add_metric([info.name], info.running)
            max_proc.add_metric([info.name], info.max_proc)
            last_seen.add_metric([info.name], info.last_seen)
        yield from (up, running, max_proc, last_seen)


def node_registry(node: JobStatusNode) -> CollectorRegistry:
    """The registry of a node's metrics page: the store's figures and this
    process's store writes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobStoreCollector(node))
    registry.register(STORE_WRITE_SECONDS)
    # Imported here: the schedules' module reaches this one through the queue.
    from .schedules import FIRING_LAG, TICKS, ScheduleCollector

    registry.register(ScheduleCollector(node))
    registry.register(TICKS)
    registry.register(FIRING_LAG)
    return registry


class Metrics(NodeResource):
    """``GET metrics``: the node's figures in the Prometheus text format;
    ``metrics = scrapy_jobstatus.scrapyd.metrics.Metrics`` in the
    ``[services]`` section of scrapyd.conf."""

    # A scrape reads the store: in the node's pool, a 503 if it is down.
    in_thread = True

    def __init__(self, root: Any):
        super().__init__(root)
        self.registry = node_registry(self.node)

    def render_GET(self, txrequest: Request) -> bytes:
        try:
            content = generate_latest(self.registry)
        except StoreError as e:
            message = str(e).splitlines()[0] if str(e) else "the job store cannot be read"
            # While the store is down, the node's one line says it.
            if self.node.calls.up:
                log.error("Metrics not available: {message}", message=message)
                self.node.calls.check()
            txrequest.setResponseCode(http.SERVICE_UNAVAILABLE)
            txrequest.setHeader("Retry-After", str(RETRY_AFTER))
            txrequest.setHeader("Content-Type", "text/plain; charset=utf-8")
            txrequest.setHeader("Cache-Control", "no-store")
            return f"metrics not available: {message}\n".encode()
        txrequest.setHeader("Content-Type", CONTENT_TYPE)
        txrequest.setHeader("Cache-Control", "no-store")
        return content
