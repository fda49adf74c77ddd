"""A node through a PostgreSQL outage, under load.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_outage [--rounds 3]
[--before 10] [--outage 30] [--jobs 4] [--pages 600] [--delay 1]``.

Real parts: a throwaway PostgreSQL server (``tests/postgres.py``), one ``scrapyd`` with the
shipped scrapyd.conf (``max_proc`` = ``--jobs``) on a database of it, the project deployed
with scrapyd-deploy, and ``--jobs`` crawls of ``--pages`` pages of the local test site,
each answered after ``--delay`` s, running through the outage.

Each round: two clients, each on its own thread, ask one service after another without
pause: ``daemonstatus.json`` (needs no store) and ``jobstatus.json`` of a running job. For
``--before`` seconds with the store up, then PostgreSQL is stopped (``pg_ctl stop -m fast``)
for ``--outage`` seconds, then started again; from then, every service (jobstatus.json,
jobs.json, nodes.json, metrics, daemonstatus.json) is asked in turn until each answers 200.
Reported: daemonstatus.json p50/p99 before and during (target: p99 during ≤ 2× before),
jobstatus.json p99 during and its answers' codes (target ≤ 2 s, 503), time from the start
of PostgreSQL (``pg_ctl start`` returned) to every service 200 (target ≤ 5 s), and the
crawls' end (checked: every job ``completed``). The machine's load average is printed
beside. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from tests.helpers import local_site
from tests.postgres import PostgresServer, postgres_server
from tests.scrapyd_node import ScrapydNode, running_node, slow_urls, unique

SERVICES = ("jobstatus.json", "jobs.json", "nodes.json", "metrics", "daemonstatus.json")


class Client(threading.Thread):
    """Asks one service again and again; keeps (time, seconds, code)."""

    def __init__(self, node: ScrapydNode, endpoint: str, params: dict[str, str]):
        super().__init__(daemon=True)
        self.node, self.endpoint, self.params = node, endpoint, params
        self.samples: list[tuple[float, float, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                code = self.node.get(self.endpoint, self.params, timeout=60).code
            except OSError:
                code = 0
            self.samples.append((start, time.monotonic() - start, code))

    def between(self, start: float, end: float) -> list[tuple[float, int]]:
        return [(s, c) for t, s, c in self.samples if start <= t < end]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def one_round(
    node: ScrapydNode, server: PostgresServer, site: str, args: argparse.Namespace
) -> dict[str, float]:
    jobs = [unique("bench-outage") for _ in range(args.jobs)]
    for job in jobs:
        node.schedule(job=job, urls=slow_urls(site, args.pages, args.delay))
    for job in jobs:
        node.wait_status(job, "running", timeout=120)
    clients = [
        Client(node, "daemonstatus.json", {}),
        Client(node, "jobstatus.json", {"job": jobs[0]}),
    ]
    for client in clients:
        client.start()
    t0 = time.monotonic()
    time.sleep(args.before)
    running = sum(node.status(job)["status"] == "running" for job in jobs)
    t1 = time.monotonic()
    server.halt()
    time.sleep(args.outage)
    t2 = time.monotonic()
    server.resume()
    t3 = time.monotonic()
    pending = list(SERVICES)
    while pending:
        params = {"job": jobs[0]} if pending[0] == "jobstatus.json" else {}
        if node.get(pending[0], params, timeout=60).code == 200:
            pending.pop(0)
    recovered = time.monotonic() - t3
    for client in clients:
        client.stopping.set()
        client.join()
    daemon, status = clients
    before = [s for s, _ in daemon.between(t0, t1)]
    during = [s for s, _ in daemon.between(t1, t2)]
    status_during = status.between(t1, t2)
    ended = [node.wait_status(job, "completed", "failed", timeout=600)["status"] for job in jobs]
    codes = Counter(c for _, c in status_during)
    figures = {
        "daemon_p50_before_ms": p(before, 0.5) * 1000,
        "daemon_p99_before_ms": p(before, 0.99) * 1000,
        "daemon_p50_during_ms": p(during, 0.5) * 1000,
        "daemon_p99_during_ms": p(during, 0.99) * 1000,
        "jobstatus_p99_during_ms": p([s for s, _ in status_during], 0.99) * 1000,
        "jobstatus_max_during_ms": max(s for s, _ in status_during) * 1000,
        "recovered_s": recovered,
    }
    print(
        f"  daemonstatus.json p50/p99 before {figures['daemon_p50_before_ms']:.1f}/"
        f"{figures['daemon_p99_before_ms']:.1f} ms ({len(before)} requests), during "
        f"{figures['daemon_p50_during_ms']:.1f}/{figures['daemon_p99_during_ms']:.1f} ms "
        f"({len(during)}); jobstatus.json during: p99 {figures['jobstatus_p99_during_ms']:.1f} ms,"
        f" max {figures['jobstatus_max_during_ms']:.1f} ms, codes {dict(codes)}; every service"
        f" 200 {recovered:.2f} s after PostgreSQL started; {running} jobs running at its stop,"
        f" at the end {dict(Counter(ended))};"
        f" load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--pages", type=int, default=600)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    with (
        postgres_server() as server,
        server.database() as url,
        local_site() as site,
        tempfile.TemporaryDirectory(prefix="bench-outage-") as workdir,
    ):
        nodes = running_node(
            Path(workdir),
            options={"poll_interval": "1", "max_proc": str(args.jobs)},
            jobstatus={"db": url},
        )
        node = next(nodes)
        try:
            for number in range(1, args.rounds + 1):
                print(f"round {number}:", flush=True)
                results.append(one_round(node, server, site, args))
        finally:
            nodes.close()
    print("medians over the rounds:")
    for key in results[0]:
        values = [r[key] for r in results]
        print(
            f"  {key}: {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
