"""Warm starts: short jobs on one Scrapyd node, its crawls forked from a zygote against a
fresh Python each, and against stock Scrapyd 1.6.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_warm [--jobs 24]
[--rounds 3] [--max-proc 4] [--poll-interval 0.2] [--latency-jobs 10]``; ``--quick`` for a
smoke run (12 jobs, 1 round, 4 latency jobs). Explicit options win over ``--quick``.

Real parts: ``scrapyd`` processes, each started afresh for each run, in a directory of its
own, the project deployed with scrapyd-deploy, and real crawls (the ``batch`` spider) of one
page each, served at once by a small HTTP server of this process that notes when each page
is asked for. Three configurations:

- ``warm``: the shipped scrapyd.conf (``warm_start = on``);
- ``cold``: the shipped scrapyd.conf with ``warm_start = off``;
- ``stock``: Scrapyd 1.6 with its own defaults (its launcher, queue and eggs) and the same
  egg, the crawl without the extension (``JOBSTATUS_ENABLED=False``).

Every node has ``--max-proc`` slots and polls its queue every ``--poll-interval`` s.

1. Short jobs per minute: ``--jobs`` one-page jobs scheduled as fast as ``schedule.json``
   answers; from the first ``schedule.json`` to the moment ``listjobs.json`` shows them all
   finished (polled every 50 ms). The three configurations alternate (in turn first) over
   ``--rounds`` rounds; the median ratio and its range. Checked: every job ran once (its
   page asked for once) and, on the nodes with the extension, ended ``completed``.
2. ``schedule.json`` to the crawl's first request, slots free: ``--latency-jobs`` jobs one
   after the other (each waited for), warm and cold; medians. Target: ≤ poll_interval +
   150 ms warm.
3. Memory: 4 crawls running at once (their page answers after 10 s), warm and cold; the
   proportional set size (``Pss`` of ``/proc/PID/smaps_rollup``) of each, read once every
   crawl has asked for its page; the median of each, and their ratio. Target ≤ 0.6.

The machine is small and shared: figures are reported with the load average, never
asserted; answers are checked (a ``BenchmarkError`` stops the run). Every process started is
stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.benchmarks.bench_scrapyd import BenchmarkError, check, machine, table
from tests.helpers import wait_for
from tests.scrapyd_node import ScrapydNode, unique

CONFIGS = ("warm", "cold", "stock")
# No robots.txt request before the page: the page is the crawl's first request.
JOB_SETTINGS = {"LOG_LEVEL": "INFO", "ROBOTSTXT_OBEY": "False"}
STOCK_SETTINGS = {**JOB_SETTINGS, "JOBSTATUS_ENABLED": "False"}
MEMORY_CRAWLS = 4
MEMORY_DELAY = 10.0

FULL = {"jobs": 24, "rounds": 3, "latency_jobs": 10}
QUICK = {"jobs": 12, "rounds": 1, "latency_jobs": 4}

Row = list[str]


# -- the pages ---------------------------------------------------------------------------------


class Pages:
    """A local HTTP server answering every page at once (or after ``delay`` s), noting when
    each job's page was first asked for and how many times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: dict[str, float] = {}
        self.count: dict[str, int] = {}
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                job = query.get("job", [""])[0]
                with pages.lock:
                    pages.first.setdefault(job, time.monotonic())
                    pages.count[job] = pages.count.get(job, 0) + 1
                delay = float(query.get("delay", ["0"])[0])
                if delay:
                    time.sleep(delay)
                body = b"<html><body><p>One page.</p></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/page"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, job: str, delay: float = 0.0) -> str:
        return f"{self.url}?job={job}&delay={delay:g}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the nodes ---------------------------------------------------------------------------------


def make_node(config: str, workdir: Path, args: argparse.Namespace) -> ScrapydNode:
    options = {"max_proc": str(args.max_proc), "poll_interval": str(args.poll_interval)}
    if config == "stock":
        node = ScrapydNode(workdir)
        # Scrapyd's own defaults but the address, the slots and the polling.
        cfg = configparser.ConfigParser()
        cfg["scrapyd"] = {"http_port": str(node.port), "bind_address": "127.0.0.1", **options}
        with open(workdir / "scrapyd.conf", "w") as f:
            cfg.write(f)
        node.warm = False
        return node
    jobstatus = {"warm_start": "on" if config == "warm" else "off"}
    return ScrapydNode(workdir, options=options, jobstatus=jobstatus)


@contextmanager
def started(config: str, root: Path, args: argparse.Namespace) -> Iterator[ScrapydNode]:
    node = make_node(config, root / unique(config), args)
    try:
        node.start()
        node.deploy()
        yield node
    finally:
        node.stop()


def schedule(node: ScrapydNode, config: str, job: str, url: str) -> None:
    settings = STOCK_SETTINGS if config == "stock" else JOB_SETTINGS
    answer = node.schedule(job=job, settings=settings, urls=url).json()
    check(answer.get("status") == "ok", f"schedule.json answered {answer}")


def finished(node: ScrapydNode, jobs: set[str]) -> bool:
    done = {job["id"] for job in node.get("listjobs.json").json()["finished"]}
    return jobs <= done


# -- 1. throughput -----------------------------------------------------------------------------


def throughput(config: str, root: Path, pages: Pages, args: argparse.Namespace) -> float:
    with started(config, root, args) as node:
        jobs = [unique(f"short-{config}") for _ in range(args.jobs)]
        begin = time.monotonic()
        for job in jobs:
            schedule(node, config, job, pages.page(job))
        wait_for(
            lambda: finished(node, set(jobs)),
            timeout=600,
            interval=0.05,
            what=f"{config}: {len(jobs)} jobs",
        )
        elapsed = time.monotonic() - begin
        for job in jobs:
            check(pages.count.get(job) == 1, f"{config}: job {job} asked its page {pages.count}")
            if config != "stock":
                status = node.status(job)["status"]
                check(status == "completed", f"{config}: job {job} ended {status}")
    return len(jobs) / elapsed * 60


# -- 2. latency --------------------------------------------------------------------------------


def first_request(config: str, root: Path, pages: Pages, args: argparse.Namespace) -> list[float]:
    latencies = []
    with started(config, root, args) as node:
        for _ in range(args.latency_jobs):
            job = unique(f"latency-{config}")
            sent = time.monotonic()
            schedule(node, config, job, pages.page(job))
            wait_for(lambda j=job: j in pages.first, timeout=60, interval=0.005, what=job)
            latencies.append(pages.first[job] - sent)
            wait_for(lambda j=job: finished(node, {j}), timeout=60, interval=0.05, what=job)
    return latencies


# -- 3. memory ---------------------------------------------------------------------------------


def pss_kib(pid: int) -> tuple[int, int]:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name] = int(rest.split()[0])
    return values["Pss"], values["Rss"]


def memory(
    config: str, root: Path, pages: Pages, args: argparse.Namespace
) -> list[tuple[int, int]]:
    with started(config, root, args) as node:
        jobs = [unique(f"memory-{config}") for _ in range(MEMORY_CRAWLS)]
        for job in jobs:
            schedule(node, config, job, pages.page(job, MEMORY_DELAY))
        wait_for(lambda: all(job in pages.first for job in jobs), timeout=60, what="the pages")
        sizes = [pss_kib(node.crawl_pid(job)) for job in jobs]
        wait_for(lambda: finished(node, set(jobs)), timeout=120, interval=0.1, what="the crawls")
    return sizes


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    rates: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONFIGS})
    loads: list[float] = field(default_factory=list)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--latency-jobs", type=int)
    parser.add_argument("--max-proc", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    print(machine())
    print(f"load average at the start: {os.getloadavg()}")
    root = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    pages = Pages()
    results = Results()
    try:
        for round_ in range(args.rounds):
            order = CONFIGS[round_ % 3 :] + CONFIGS[: round_ % 3]
            for config in order:
                rate = throughput(config, root, pages, args)
                results.rates[config].append(rate)
                results.loads.append(os.getloadavg()[0])
                print(f"round {round_ + 1}, {config}: {rate:.0f} jobs/min", flush=True)
        rates = results.rates
        warm_stock = [w / s for w, s in zip(rates["warm"], rates["stock"], strict=True)]
        warm_cold = [w / c for w, c in zip(rates["warm"], rates["cold"], strict=True)]
        rows = [
            [config, f"{statistics.median(values):.0f}", f"{min(values):.0f}-{max(values):.0f}"]
            for config, values in rates.items()
        ]
        print(
            f"\n1. {args.jobs} one-page jobs, {args.max_proc} slots, poll_interval "
            f"{args.poll_interval:g} s, {args.rounds} rounds"
        )
        print(table(["node", "jobs/min (median)", "range"], rows))
        print(f"warm / stock: {spread(warm_stock)} (target >= 2.0)")
        print(f"warm / cold:  {spread(warm_cold)} (target >= 2.0)")

        print(f"\n2. schedule.json to the first request, {args.latency_jobs} jobs each")
        rows = []
        for config in ("warm", "cold"):
            values = first_request(config, root, pages, args)
            rows.append(
                [
                    config,
                    f"{statistics.median(values) * 1000:.0f}",
                    f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}",
                ]
            )
        print(table(["node", "median ms", "range ms"], rows))
        print(f"target: warm <= {args.poll_interval * 1000 + 150:.0f} ms")

        print(f"\n3. PSS of {MEMORY_CRAWLS} running crawls")
        sizes = {config: memory(config, root, pages, args) for config in ("warm", "cold")}
        rows = [
            [
                config,
                f"{statistics.median(p for p, _ in values) / 1024:.1f}",
                f"{statistics.median(r for _, r in values) / 1024:.1f}",
            ]
            for config, values in sizes.items()
        ]
        print(table(["node", "PSS MiB (median)", "RSS MiB (median)"], rows))
        ratio = statistics.median(p for p, _ in sizes["warm"]) / statistics.median(
            p for p, _ in sizes["cold"]
        )
        print(f"warm / cold PSS: {ratio:.2f} (target <= 0.6)")
        print(
            f"\nload average (1 min) after each run: {', '.join(f'{x:.1f}' for x in results.loads)}"
        )
        print(f"load average at the end: {os.getloadavg()}")
    except BenchmarkError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        pages.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
