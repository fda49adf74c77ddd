"""What the Scrapyd job services cost, beside Scrapyd's own.

Run by hand: ``python -m tests.benchmarks.bench_scrapyd [--jobs 10000] [--requests 1000]``.

A real ``scrapyd`` with the shipped config and the deployed egg, its job store
filled with ``--jobs`` finished jobs (a few errors and history events each)
and a few real crawls. Then, on the same node in the same run:

- latency (median, p99) of ``jobstatus.json`` and ``jobs.json`` beside
  Scrapyd's ``status.json`` and ``listjobs.json``: one client on a kept-alive
  connection, ``--requests`` calls each, the endpoints interleaved;
- throughput of each with 4 clients at once;
- cancel latency of a running job (pages answered after 2 s, two in flight):
  request -> ``cancelling`` visible in jobstatus.json, request -> the crawl
  takes the request up (its history event), request -> terminal; and the
  same for a forced cancel (pages answered after 10 s: it must not wait).
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from scrapy_jobstatus._model import HistoryEvent, JobError, JobState, JobStatus
from scrapy_jobstatus._store import JobStore
from tests.helpers import local_site, wait_for
from tests.scrapyd_node import ScrapydNode, slow_urls, unique

SLOW = 2.0  # seconds each page of a gracefully cancelled job takes
FORCED_SLOW = 10.0  # ... of a job cancelled with force=1: it must not wait for them


def fill(db: Path, count: int) -> list[str]:
    """``count`` finished jobs, as crawls leave them."""
    store = JobStore(db)
    ids = []
    now = time.time() - count
    statuses = [JobStatus.COMPLETED] * 8 + [JobStatus.FAILED, JobStatus.CANCELLED]
    for i in range(count):
        job_id = f"bench-{i:06d}"
        created = now + i
        status = statuses[i % len(statuses)]
        state = JobState(
            job_id=job_id,
            spider="batch" if i % 3 else "documents",
            project="crawler",
            node=store.node,
            status=JobStatus.PENDING,
            created_at=created,
            args={"urls": "http://127.0.0.1/x"},
        )
        store.add_job(state)
        state.status = JobStatus.RUNNING
        state.started_at = created + 0.1
        store.start_job(state)
        state.status = status
        state.completed_at = created + 5
        state.updated_at = created + 5
        state.completion_reason = {
            "completed": "done",
            "failed": "error",
            "cancelled": "cancelled",
        }[status]
        state.total_pages_crawled = state.total_documents_found = 20 + i % 50
        state.responses_failed = i % 4
        state.responses_finished = state.total_pages_crawled
        state.progress = 100.0
        errors = [
            JobError(
                error_type="http_error",
                error_message="HTTP 404",
                page_url=f"http://127.0.0.1/{k}",
                http_status=404,
                timestamp=created + 1,
            )
            for k in range(i % 4)
        ]
        events = [
            HistoryEvent(step=step, timestamp=created + k, status="running")
            for k, step in enumerate(("opened", "first response", "closing", "finished"))
        ]
        store.save(state, errors, events)
        ids.append(job_id)
    store.close()
    return ids


class Client:
    """One kept-alive HTTP connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.conn.request("GET", "/" + path + ("?" + urlencode(params) if params else ""))
        response = self.conn.getresponse()
        return response.status, response.read()


def latency(
    port: int, calls: dict[str, Callable[[], tuple[str, dict[str, str]]]], rounds: int
) -> dict[str, list[float]]:
    client = Client(port)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            path, params = calls[name]()
            start = time.perf_counter()
            code, _ = client.get(path, params)
            samples[name].append(time.perf_counter() - start)
            assert code == 200, (name, code)
    return samples


def throughput(
    port: int, call: Callable[[], tuple[str, dict[str, str]]], clients: int, per_client: int
) -> float:
    def run() -> None:
        client = Client(port)
        for _ in range(per_client):
            path, params = call()
            code, _ = client.get(path, params)
            assert code == 200

    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start)


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def cancel_round(node: ScrapydNode, site: str, force: bool) -> dict[str, float]:
    job = unique("cancel")
    slow = FORCED_SLOW if force else SLOW
    node.schedule(job=job, urls=slow_urls(site, 12, slow), settings={"CONCURRENT_REQUESTS": 2})
    node.wait_status(job, "running")
    wait_for(lambda: node.status(job)["requests_in_flight"] >= 1)
    # A random point in the in-flight requests' life.
    time.sleep(random.uniform(0, min(slow, SLOW)))  # noqa: S311
    requested_wall, requested = time.time(), time.perf_counter()
    answer = node.post("jobcancel.json", {"job": job, "force": "1" if force else "0"})
    assert answer.code == 202, answer.body
    visible = None
    while True:
        document = node.status(job)
        now = time.perf_counter()
        if visible is None and document["status"] in ("cancelling", "cancelled"):
            visible = now - requested
        if not document["is_active"]:
            break
        time.sleep(0.01)
    taken_up = [e["timestamp"] for e in document["history"] if e["step"] == "cancel requested"]
    node.wait_idle()
    return {
        "visible": visible or 0.0,
        "taken_up": parse(taken_up[0]) - requested_wall if taken_up else float("nan"),
        "terminal": now - requested,
    }


def ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--cancel-rounds", type=int, default=5)
    args = parser.parse_args()

    with local_site() as site:
        workdir = Path(tempfile.mkdtemp(prefix="bench-scrapyd-"))
        node = ScrapydNode(workdir, options={"max_proc": "2", "poll_interval": "0.2"})
        try:
            started = time.perf_counter()
            ids = fill(node.db, args.jobs)
            print(f"store filled with {args.jobs} jobs in {time.perf_counter() - started:.1f} s")
            node.start()
            node.deploy()
            real = [unique("real") for _ in range(10)]
            for job in real:
                node.schedule(job=job, urls=f"{site}/sample/")
            for job in real:
                node.wait_status(job, "completed")
            node.wait_idle()
            wait_for(lambda: all(node.scrapyd_state(job) == "finished" for job in real))
            known = ids + real

            calls: dict[str, Callable[[], tuple[str, dict[str, str]]]] = {
                "jobstatus.json": lambda: ("jobstatus.json", {"job": random.choice(known)}),  # noqa: S311
                "status.json (Scrapyd)": lambda: ("status.json", {"job": random.choice(known)}),  # noqa: S311
                "jobs.json (50 newest)": lambda: ("jobs.json", {}),
                "jobs.json (status=failed, page 20)": lambda: (
                    "jobs.json",
                    {"status": "failed", "offset": "950"},
                ),
                "listjobs.json (Scrapyd)": lambda: ("listjobs.json", {}),
            }
            samples = latency(node.port, calls, args.requests)
            print()
            print(
                f"| endpoint ({args.jobs} jobs in the store) | median ms | p99 ms"
                " | req/s, 1 client | req/s, 4 clients |"
            )
            print("| --- | ---: | ---: | ---: | ---: |")
            for name, call in calls.items():
                values = samples[name]
                sequential = len(values) / sum(values)
                parallel = throughput(
                    node.port, call, clients=4, per_client=max(50, args.requests // 4)
                )
                print(
                    f"| `{name}` | {ms(values, 0.5):.2f} | {ms(values, 0.99):.2f}"
                    f" | {sequential:.0f} | {parallel:.0f} |"
                )

            print()
            print(
                f"Cancel of a running job (2 requests in flight, pages answered after {SLOW:g} s,"
                f" or {FORCED_SLOW:g} s for force=1; JOBSTATUS_INTERVAL 1 s),"
                f" {args.cancel_rounds} rounds:"
            )
            print()
            print(
                "| cancel | request -> cancelling visible | request -> taken up by the crawl"
                " | request -> terminal |"
            )
            print("| --- | ---: | ---: | ---: |")
            for force in (False, True):
                rounds = [cancel_round(node, site, force) for _ in range(args.cancel_rounds)]

                def cell(key: str, rounds: list[dict[str, float]] = rounds) -> str:
                    values = [r[key] for r in rounds]
                    return f"{statistics.median(values):.2f} s (max {max(values):.2f})"

                name = "forced (`force=1`)" if force else "graceful"
                print(f"| {name} | {cell('visible')} | {cell('taken_up')} | {cell('terminal')} |")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
