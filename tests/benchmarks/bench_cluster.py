"""Scrapyd nodes sharing one PostgreSQL job store: what a cluster of three gives over one node.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_cluster [--jobs 300]
[--rounds 2] [--max-proc 4] [--poll-interval 1] [--latency 3:5,1:5,3:1] [--store-jobs 100000]
[--timeouts 20,10] [--kill-rounds 3] [--parts 1,2,3,4]``; ``--quick`` for a smoke run (30
jobs, 1 round, a store of 10,000 jobs, one kill with node_timeout 10). Explicit options win
over ``--quick``. A default run takes some 25 minutes on 2 CPUs (part 1: some 19).

Real parts: a throwaway PostgreSQL server (``tests/postgres.py``), ``scrapyd`` processes with
the shipped scrapyd.conf (the queue, the poller, the job and egg storages and the launcher of
scrapy-jobstatus), each with its own port, directory and ``node_name`` (node1, node2, ...),
the project deployed with scrapyd-deploy to node 1 only (the egg is in the store), and real
crawls (the ``batch`` spider) of the local test site, whose ``/slow`` pages answer after a
delay: crawls that wait for the network, as the machine (a few cores) cannot run many
CPU-bound ones at once.

1. Throughput, 3 nodes against 1, the same ``--max-proc`` and ``--poll-interval`` on every
   node: ``--jobs`` jobs, each the ``batch`` spider on ``--urls`` pages answered after
   ``--delay`` s (fetched at once), all scheduled through node 1's ``schedule.json`` as fast
   as it answers. Time from the first ``schedule.json`` to the latest ``completed_at``; jobs
   per minute each, and the ratio. The two configurations alternate (in turn first) over
   ``--rounds`` rounds, the nodes started afresh for each run; the median ratio and its range
   are reported. Checked: every job ends ``completed`` with its pages crawled, each crawl
   started once across the nodes (the launchers' ``Process started`` log lines), no node ran
   more than ``--max-proc`` jobs at once. To tell a CPU-bound run from a slot-bound one:
   the CPU time of the nodes and their crawls per job (``RUSAGE_CHILDREN`` of this process,
   the nodes stopped), the rate the machine's CPUs could sustain at that cost, and how long
   a job held a slot.
2. Schedule-to-running latency with free slots, for each ``--latency`` configuration
   (NODES:POLL_INTERVAL): ``--latency-jobs`` short jobs (one page of ``--delay`` s) scheduled
   one by one at random moments, few enough that a slot is always free. From
   ``schedule.json``'s answer to the job's ``started_at`` (when the crawl opened its job),
   split into the wait in the queue (to the claim: the job gets its node, seen in the store
   every 20 ms) and the crawl's start-up (claim to ``started_at``). Target: median
   ``started_at`` ≤ poll_interval + 1 s.
3. ``jobs.json`` on a store of ``--store-jobs`` finished jobs (as crawls leave them: projects
   p1..p3, spiders batch/documents/listings, mostly completed), bulk-loaded with ``COPY`` from
   the store's own row encoding (``_rows.row_values``; no history events: ``jobs.json`` does
   not read them), then ``VACUUM ANALYZE`` (what autovacuum does soon after such a load). One
   node on it; one client on a kept-alive connection, ``--requests`` calls of each page,
   interleaved: the first page (limit 50), two filtered pages, the page reached through
   ``next`` cursors (``--cursor-pages`` deep; the walk's pages timed too), and, for
   comparison, the same page by ``offset``. Each page's content and total checked; beside
   each, the same listing through the store's own ``list_jobs`` in this process (its SQL:
   the total's ``COUNT`` and the page), to tell the store's part from HTTP and JSON.
   Target: ≤ 20 ms median.
4. From a node's death to its jobs ``failed``: 2 nodes (max_proc 2, poll_interval 1), four
   long jobs (two on each node); ``kill -9`` node 2's scrapyd and its crawls (pids from its
   ``listjobs.json``), then poll ``jobstatus.json`` on node 1 until every job node 2 ran
   reads ``failed`` (with an error_message naming node 2). For each ``--timeouts``
   node_timeout, ``--kill-rounds`` times. Node 1's reaper looks every 5 s; node 2 beat every
   5 s before it died: the jobs fail between ``node_timeout - 5`` and ``node_timeout + 5`` s
   after the kill (the age of node 2's last heartbeat at the kill is reported). Checked: node
   1's own jobs stay running.

The machine is small and shared: figures are reported, never asserted; answers are checked
(a ``BenchmarkError`` stops the run). Every process started (PostgreSQL, the site, the
nodes, their crawls) is stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from scrapy_jobstatus._model import TERMINAL_STATUSES
from scrapy_jobstatus._rows import COLUMNS, row_values
from scrapy_jobstatus._store import JobFilter, open_store
from tests.benchmarks.bench_scrapyd import (
    BenchmarkError,
    Call,
    Client,
    check,
    finished_job,
    latency,
    ms,
    parse,
    table,
)
from tests.helpers import local_site, wait_for
from tests.postgres import PostgresServer, postgres_server, temporary_database
from tests.scrapyd_node import PROJECT, ScrapydNode, slow_urls

LOCK = "/tmp/jobstatus-bench.lock"  # noqa: S108 (the benchmarks' shared lock)
ENDED = {str(s) for s in TERMINAL_STATUSES}
PAGE = 50
# What every benchmark job sets: INFO, as production nodes log (DEBUG costs CPU per page).
JOB_SETTINGS = {"LOG_LEVEL": "INFO"}
# Part 4: long jobs (40 pages of 2 s, one at a time) that outlive the measurement.
KILL_MAX_PROC = 2
LONG_PAGES, LONG_DELAY = 40, 2.0
REAP_INTERVAL = 5.0  # the launcher's heartbeat and reaping period

FULL = {
    "jobs": 300,
    "rounds": 2,
    "latency_jobs": 24,
    "store_jobs": 100_000,
    "requests": 300,
    "cursor_pages": 1000,
    "timeouts": "20,10",
    "kill_rounds": 3,
}
QUICK = {
    "jobs": 30,
    "rounds": 1,
    "latency_jobs": 8,
    "store_jobs": 10_000,
    "requests": 50,
    "cursor_pages": 100,
    "timeouts": "10",
    "kill_rounds": 1,
}

Row = list[str]


# -- the cluster -------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    root: Path
    server: PostgresServer
    site: str
    rng: random.Random
    summary: list[Row] = field(default_factory=list)
    deployed: set[str] = field(default_factory=set)
    # Every node made, stopped at the end whatever happens; and crawl pids to kill.
    nodes: list[ScrapydNode] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)

    def cleanup(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as e:  # noqa: BLE001 (stop the others all the same)
                print(f"could not stop the node in {node.workdir}: {e}", file=sys.stderr)
        while self.orphans:
            kill(self.orphans.pop())


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def cluster(
    bench: Bench,
    name: str,
    db: str,
    count: int,
    options: dict[str, str],
    jobstatus: dict[str, str] | None = None,
    *,
    deploy: bool = True,
) -> Iterator[list[ScrapydNode]]:
    """``count`` nodes node1..nodeN on the store ``db``, started, the project deployed to
    node 1 if the store has no egg yet and node 1's spider list cached (unless not
    ``deploy``); stopped after, their crawls killed."""
    nodes = [
        ScrapydNode(
            bench.root / name / f"node{i}",
            options={"node_name": f"node{i}", **options},
            jobstatus={"db": db, **(jobstatus or {})},
        )
        for i in range(1, count + 1)
    ]
    bench.nodes += nodes
    try:
        for node in nodes:
            node.start()
        if deploy:
            if db not in bench.deployed:
                nodes[0].deploy()  # to node 1 only: the egg is in the shared store
                bench.deployed.add(db)
            # schedule.json lists the project's spiders (a `scrapy list` run) at its first
            # call: not in the measurements.
            answer = nodes[0].get("listspiders.json", {"project": PROJECT})
            check(answer.code == 200 and "batch" in answer.json().get("spiders", []), str(answer))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Store:
    """The benchmark's own look at the store: what the nodes' services cannot show cheaply
    (which node claimed a pending job, and when)."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url, autocommit=True)

    def jobs(self, prefix: str) -> list[tuple[str, str | None, str]]:
        return self.conn.execute(
            "SELECT job_id, node, status FROM jobs WHERE job_id LIKE %s", (prefix + "%",)
        ).fetchall()

    def describe(self, jobs: list[str]) -> str:
        """What the store says of these jobs, to tell why they did not end."""
        rows = self.conn.execute(
            "SELECT job_id, node, status, pid, created_at, updated_at, state FROM jobs"
            " WHERE job_id = ANY(%s) ORDER BY job_id",
            (jobs,),
        ).fetchall()
        now = time.time()
        return "\n".join(
            f"  {job} node={node} status={status} pid={pid} created {now - created:.0f} s ago,"
            f" updated {'never' if updated is None else f'{now - updated:.0f} s ago'}:"
            f" {state[:300]}"
            for job, node, status, pid, created, updated, state in rows
        )

    def last_seen(self, node: str) -> float:
        row = self.conn.execute("SELECT last_seen FROM nodes WHERE name = %s", (node,)).fetchone()
        check(row is not None, f"no heartbeat of {node} in the store")
        return row[0]

    def close(self) -> None:
        self.conn.close()


def schedule(node: ScrapydNode, job: str, urls: str, **settings: Any) -> float:
    """Schedule the job; the wall-clock time of the answer."""
    answer = node.schedule(job=job, urls=urls, settings={**JOB_SETTINGS, **settings})
    answered = time.time()
    check(
        answer.code == 200 and answer.json().get("status") == "ok",
        f"schedule.json {job}: HTTP {answer.code}: {answer.body[:300]!r}",
    )
    return answered


def listed(node: ScrapydNode, prefix: str, count: int) -> dict[str, dict[str, Any]]:
    """The documents of the jobs whose id starts with ``prefix``, from ``jobs.json`` pages
    (newest first: the benchmark's jobs are the latest)."""
    found: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {"limit": 1000}
    while len(found) < count:
        answer = node.get("jobs.json", params)
        check(answer.code == 200, f"jobs.json: HTTP {answer.code}: {answer.body[:300]!r}")
        page = answer.json()
        found |= {j["job_id"]: j for j in page["jobs"] if j["job_id"].startswith(prefix)}
        if not page["next"]:
            break
        params = {"limit": 1000, "cursor": page["next"]}
    check(len(found) == count, f"jobs.json lists {len(found)} of the {count} jobs {prefix}*")
    return found


def check_ran_once(nodes: list[ScrapydNode], jobs: list[str]) -> None:
    logs = "".join(node.log.read_text() for node in nodes)
    for job in jobs:
        line = f"Process started: project='{PROJECT}' spider='batch' job='{job}' "
        started = logs.count(line)
        check(started == 1, f"job {job}: {started} crawls started")


def quantile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def verdict(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- 1. throughput -----------------------------------------------------------------------------


@dataclass
class Run:
    nodes: int
    round: int
    seconds: float
    jobs_per_min: float
    scheduling: float  # seconds taken by the schedule.json calls
    per_node: dict[str, int]
    busiest: dict[str, int]
    load: str
    cpu_per_job: float  # CPU seconds of the nodes and their crawls, per job
    crawl: float  # median seconds from a crawl's started_at to its completed_at
    slot_time: float  # slots x seconds / jobs: how long a job holds a slot, poll wait included


def children_cpu() -> float:
    """CPU seconds of this process's ended (and waited for) descendants: the scrapyd
    processes once stopped, with the crawls they waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def throughput_run(bench: Bench, db: str, store: Store, count: int, round_: int) -> Run:
    args = bench.args
    options = {"max_proc": str(args.max_proc), "poll_interval": str(args.poll_interval)}
    prefix = f"tp-r{round_}-n{count}-{time.time_ns()}-"
    jobs = [f"{prefix}{i:04}" for i in range(args.jobs)]
    urls = slow_urls(bench.site, args.urls, args.delay)
    load = loadavg()
    with cluster(bench, f"throughput-r{round_}-{count}nodes", db, count, options) as nodes:
        cpu = children_cpu()  # the nodes count when they are stopped, after the block
        first = time.time()
        for job in jobs:
            schedule(nodes[0], job, urls)
        scheduling = time.time() - first
        busiest: Counter[str] = Counter()
        # Generous: 10 jobs a minute, on a machine loaded by others.
        deadline = time.monotonic() + 300 + 6 * args.jobs
        while True:
            rows = store.jobs(prefix)
            active = Counter(n for _, n, status in rows if n and status not in ENDED)
            for name, busy in active.items():
                busiest[name] = max(busiest[name], busy)
            ended = sum(status in ENDED for *_, status in rows)
            if ended == len(jobs):
                break
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{ended} of {len(jobs)} jobs ended in time; the others:\n"
                    + store.describe([job for job, _, status in rows if status not in ENDED])
                )
            time.sleep(0.5)
        documents = listed(nodes[-1], prefix, len(jobs))
        statuses = Counter(d["status"] for d in documents.values())
        check(statuses == {"completed": len(jobs)}, f"throughput jobs ended {dict(statuses)}")
        pages = Counter(d["total_pages_crawled"] for d in documents.values())
        check(pages == {args.urls: len(jobs)}, f"pages crawled per job: {dict(pages)}")
        check_ran_once(nodes, jobs)
        check(
            max(busiest.values()) <= args.max_proc,
            f"a node ran more than max_proc jobs: {dict(busiest)}",
        )
        end = max(parse(d["completed_at"]) for d in documents.values())
    cpu = children_cpu() - cpu
    per_node = Counter(d["node"] for d in documents.values())
    check(len(per_node) == count, f"{count} nodes, jobs ran on {sorted(per_node)}")
    seconds = end - first
    return Run(
        count,
        round_,
        seconds,
        60 * len(jobs) / seconds,
        scheduling,
        dict(sorted(per_node.items())),
        dict(sorted(busiest.items())),
        load,
        cpu / len(jobs),
        statistics.median(
            parse(d["completed_at"]) - parse(d["started_at"]) for d in documents.values()
        ),
        count * args.max_proc * seconds / len(jobs),
    )


def throughput_section(bench: Bench, db: str) -> None:
    args = bench.args
    store = Store(db)
    runs: list[Run] = []
    try:
        for round_ in range(1, args.rounds + 1):
            order = (1, 3) if round_ % 2 else (3, 1)
            for count in order:
                run = throughput_run(bench, db, store, count, round_)
                print(
                    f"  round {round_}, {count} node(s): {run.seconds:.1f} s,"
                    f" {run.jobs_per_min:.1f} jobs/min (scheduling {run.scheduling:.1f} s;"
                    f" jobs per node {run.per_node}; load before {run.load})"
                )
                runs.append(run)
    finally:
        store.close()
    one = [r for r in runs if r.nodes == 1]
    three = [r for r in runs if r.nodes == 3]
    by_round = {(r.round, r.nodes): r.jobs_per_min for r in runs}
    ratios = [by_round[(n, 3)] / by_round[(n, 1)] for n in range(1, args.rounds + 1)]
    rows = [
        [
            str(r.round),
            str(r.nodes),
            f"{r.seconds:.1f}",
            f"{r.jobs_per_min:.1f}",
            f"{r.scheduling:.1f}",
            ", ".join(f"{k} {v}" for k, v in r.per_node.items()),
            ", ".join(f"{k} {v}" for k, v in r.busiest.items()),
            f"{r.cpu_per_job:.2f}",
            f"{60 * (os.cpu_count() or 1) / r.cpu_per_job:.0f}",
            f"{r.crawl:.2f}",
            f"{r.slot_time:.1f}",
            r.load,
        ]
        for r in runs
    ]
    print(
        f"\nThroughput: {args.jobs} jobs (batch spider, {args.urls} pages of {args.delay:g} s"
        f" each), max_proc {args.max_proc} and poll_interval {args.poll_interval:g} s on every"
        " node, all scheduled through node 1; from the first schedule.json to the last"
        " completed_at:\n"
    )
    header = [
        "round",
        "nodes",
        "seconds",
        "jobs/min",
        "scheduling s",
        "jobs per node",
        "most at once",
        "CPU s/job",
        "CPU-bound jobs/min",
        "crawl s",
        "slot s/job",
        "load 1/5/15 before",
    ]
    print(table(header, rows))
    print(
        "\nCPU s/job: the CPU time of the scrapyd processes and of their crawls (not of"
        " PostgreSQL nor of the site), per job; CPU-bound jobs/min: what the machine's"
        f" {os.cpu_count()} CPUs could do at that cost; crawl s: median started_at →"
        " completed_at (the spider's own run); slot s/job: slots × seconds / jobs, how long"
        " a job held a slot (process start-up and exit, and the wait for a poll, included)."
    )
    setup = f"max_proc {args.max_proc}, poll {args.poll_interval:g} s"
    for name, group in (("1 node", one), ("3 nodes", three)):
        rates = [r.jobs_per_min for r in group]
        cpu = statistics.median(r.cpu_per_job for r in group)
        bench.summary.append(
            [
                f"throughput, {name} ({setup}), {args.jobs} jobs: jobs/min median (range);"
                " CPU s/job median",
                f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}); {cpu:.2f} s",
                "",
                "",
            ]
        )
    bench.summary.append(
        [
            f"throughput ratio 3 nodes / 1 node: median (range) over {len(ratios)} round(s)",
            f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})",
            "",
            "",
        ]
    )


# -- 2. schedule-to-running latency --------------------------------------------------------------


@dataclass
class Latency:
    nodes: int
    poll: float
    started: list[float]  # schedule.json's answer -> started_at
    queued: list[float]  # ... -> claimed (the job got its node)
    startup: list[float]  # claimed -> started_at
    busiest: dict[str, int]
    gap: float


def latency_run(bench: Bench, db: str, store: Store, count: int, poll: float) -> Latency:
    args = bench.args
    options = {"max_proc": str(args.max_proc), "poll_interval": str(poll)}
    prefix = f"lat-n{count}-p{poll:g}-{time.time_ns()}-"
    jobs = [f"{prefix}{i:03}" for i in range(args.latency_jobs)]
    urls = slow_urls(bench.site, 1, args.delay)
    # Few enough jobs that a slot is always free: a job holds its slot some 3 s after its
    # claim, and the first node to poll claims every job queued since its last poll.
    gap = max(1.5, poll / 2)
    rng = bench.rng
    answered: dict[str, float] = {}
    claimed: dict[str, float] = {}
    busiest: Counter[str] = Counter()
    with cluster(bench, f"latency-{count}nodes-poll{poll:g}", db, count, options) as nodes:
        due = time.monotonic() + rng.uniform(0, poll)
        deadline = time.monotonic() + len(jobs) * gap * 2 + 180
        while True:
            if len(answered) < len(jobs) and time.monotonic() >= due:
                job = jobs[len(answered)]
                answered[job] = schedule(nodes[0], job, urls)
                due = time.monotonic() + rng.uniform(0.5 * gap, 1.5 * gap)
            rows = store.jobs(prefix)
            now = time.time()
            active: Counter[str] = Counter()
            for job, node, status in rows:
                if node is not None and job not in claimed:
                    claimed[job] = now
                if node is not None and status not in ENDED:
                    active[node] += 1
            for name, busy in active.items():
                busiest[name] = max(busiest[name], busy)
            busiest["total"] = max(busiest["total"], sum(active.values()))
            if len(answered) == len(jobs) and sum(s in ENDED for *_, s in rows) == len(jobs):
                break
            check(time.monotonic() < deadline, f"latency jobs {prefix}* did not end in time")
            time.sleep(0.02)
        documents = listed(nodes[0], prefix, len(jobs))
        statuses = Counter(d["status"] for d in documents.values())
        check(statuses == {"completed": len(jobs)}, f"latency jobs ended {dict(statuses)}")
        check_ran_once(nodes, jobs)
    started = {job: parse(documents[job]["started_at"]) for job in jobs}
    return Latency(
        count,
        poll,
        [started[j] - answered[j] for j in jobs],
        [claimed[j] - answered[j] for j in jobs],
        [started[j] - claimed[j] for j in jobs],
        dict(sorted(busiest.items())),
        gap,
    )


def latency_section(bench: Bench, db: str) -> None:
    args = bench.args
    store = Store(db)
    results = []
    try:
        for count, poll in args.latency:
            result = latency_run(bench, db, store, count, poll)
            print(
                f"  {count} node(s), poll_interval {poll:g} s: median"
                f" {statistics.median(result.started):.2f} s (most at once {result.busiest})"
            )
            results.append(result)
    finally:
        store.close()

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} / {quantile(values, 0.9):.2f} / {max(values):.2f}"

    rows = [
        [
            str(r.nodes),
            f"{r.poll:g}",
            f"{len(r.started)}, every {r.gap:.1f} s",
            cell(r.queued),
            cell(r.startup),
            cell(r.started),
            ", ".join(f"{k} {v}" for k, v in r.busiest.items()),
        ]
        for r in results
    ]
    print(
        f"\nSchedule-to-running latency with free slots (max_proc {args.max_proc} a node), jobs"
        f" of one {args.delay:g} s page scheduled through node 1 at random moments; seconds,"
        " median / p90 / max:\n"
    )
    header = [
        "nodes",
        "poll s",
        "jobs",
        "answer → claimed",
        "claimed → started_at",
        "answer → started_at",
        "most at once",
    ]
    print(table(header, rows))
    for r in results:
        median = statistics.median(r.started)
        bench.summary.append(
            [
                f"schedule.json answer → started_at, {r.nodes} node(s), poll_interval {r.poll:g} s:"
                " median (p90); of which queue wait median",
                f"{median:.2f} s ({quantile(r.started, 0.9):.2f}); "
                f"{statistics.median(r.queued):.2f} s",
                f"≤ {r.poll + 1:g} s median",
                verdict(median, r.poll + 1),
            ]
        )


# -- 3. jobs.json on a big store -----------------------------------------------------------------


@dataclass
class Filled:
    ids: list[str]  # in creation order
    statuses: list[str]
    projects: list[str]
    spiders: list[str]

    def newest(self, keep: Callable[[int], bool] = lambda i: True) -> list[str]:
        return [self.ids[i] for i in reversed(range(len(self.ids))) if keep(i)]


def fill(url: str, count: int) -> Filled:
    """``count`` finished jobs in one COPY, each row as the store encodes it."""
    store = open_store(url)
    store.nodes()  # makes the schema
    store.close()
    rng = random.Random(1)  # noqa: S311 (reproducible data)
    spacing = 20.0
    base = time.time() - count * spacing - 3600
    filled = Filled([], [], [], [])
    columns = ", ".join(f'"{c}"' for c in (*COLUMNS, "state"))
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY jobs ({columns}) FROM STDIN") as copy:
            for i in range(count):
                created = base + i * spacing + rng.uniform(0, spacing / 2)
                state, _ = finished_job(rng, created, f"node{1 + i % 3}")
                copy.write_row(row_values(state))
                filled.ids.append(state.job_id)
                filled.statuses.append(str(state.status))
                filled.projects.append(state.project or "")
                filled.spiders.append(state.spider or "")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")
    return filled


STORE_CALLS = 100


def store_calls(
    url: str, queries: dict[str, dict[str, str]], bench: Bench
) -> dict[str, list[float]]:
    """Each listing read through the store's API in this process: what the SQL costs."""
    store = open_store(url, readonly=True)
    try:
        names = list(queries)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(STORE_CALLS + 5):
            bench.rng.shuffle(names)
            for name in names:
                params = queries[name]
                where = JobFilter(params.get("project"), params.get("spider"), params.get("status"))
                start = time.perf_counter()
                page = store.list_jobs(
                    where,
                    limit=int(params["limit"]),
                    offset=int(params.get("offset", 0)),
                    cursor=params.get("cursor"),
                )
                elapsed = time.perf_counter() - start
                check(len(page.jobs) == PAGE, f"list_jobs {params}: {len(page.jobs)} jobs")
                if i >= 5:  # the first five: warm-up
                    samples[name].append(elapsed)
    finally:
        store.close()
    return samples


def check_page(client: Client, params: dict[str, str], expected: list[str], total: int) -> Any:
    page = client.json("jobs.json", params)
    got = [j["job_id"] for j in page["jobs"]]
    check(got == expected, f"jobs.json {params}: not the expected jobs")
    check(page["total"] == total, f"jobs.json {params}: total {page['total']}, not {total}")
    return page


def store_section(bench: Bench, url: str) -> None:
    args = bench.args
    clock = time.perf_counter()
    filled = fill(url, args.store_jobs)
    print(f"  {args.store_jobs:,} jobs loaded and vacuumed in {time.perf_counter() - clock:.1f} s")
    newest = filled.newest()
    failed = filled.newest(lambda i: filled.statuses[i] == "failed")
    p2_batch = filled.newest(lambda i: (filled.projects[i], filled.spiders[i]) == ("p2", "batch"))
    queries: dict[str, tuple[dict[str, str], list[str], int]] = {
        "first page": ({"limit": str(PAGE)}, newest[:PAGE], len(newest)),
        "status=failed": ({"status": "failed", "limit": str(PAGE)}, failed[:PAGE], len(failed)),
        "project=p2&spider=batch": (
            {"project": "p2", "spider": "batch", "limit": str(PAGE)},
            p2_batch[:PAGE],
            len(p2_batch),
        ),
    }
    with cluster(bench, "store", url, 1, {"max_proc": "1"}, deploy=False) as (node,):
        client = Client(node.port)
        try:
            depth = min(args.cursor_pages, len(newest) // PAGE - 2)
            cursor, walk = None, []
            for i in range(depth):
                params = {"limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
                start = time.perf_counter()
                page = check_page(client, params, newest[i * PAGE : (i + 1) * PAGE], len(newest))
                walk.append(time.perf_counter() - start)
                cursor = page["next"]
            deep = newest[depth * PAGE : (depth + 1) * PAGE]
            queries[f"page {depth + 1:,} by `cursor`"] = (
                {"limit": str(PAGE), "cursor": cursor},
                deep,
                len(newest),
            )
            queries[f"page {depth + 1:,} by `offset` (for comparison)"] = (
                {"limit": str(PAGE), "offset": str(depth * PAGE)},
                deep,
                len(newest),
            )
            for params, expected, total in queries.values():
                check_page(client, params, expected, total)
            calls: dict[str, Callable[[], Call]] = {
                name: (lambda p=params: ("jobs.json", p))
                for name, (params, _, _) in queries.items()
            }
            latency(client, calls, 5, bench.rng)  # warm-up
            samples = latency(client, calls, args.requests, bench.rng)
        finally:
            client.close()
    inside = store_calls(url, {name: params for name, (params, _, _) in queries.items()}, bench)
    samples[f"the `next` walk, pages 1 to {depth:,} (one call each)"] = walk
    rows = [
        [
            name,
            f"{ms(v, 0.5):.2f}",
            f"{ms(v, 0.99):.2f}",
            f"{len(v) / sum(v):.0f}",
            f"{ms(inside[name], 0.5):.2f}" if name in inside else "",
        ]
        for name, v in samples.items()
    ]
    print(
        f"\n`jobs.json` on a store of {args.store_jobs:,} finished jobs, pages of {PAGE}, one"
        f" client on a kept-alive connection, {args.requests} calls each, interleaved; every"
        " page's jobs and total checked. The last column: the same listing read in this"
        f" process through the store's own `list_jobs` ({STORE_CALLS} calls each; the count"
        " and the page, without HTTP and JSON):\n"
    )
    header = ["page", "median ms", "p99 ms", "req/s", "`list_jobs` alone, median ms"]
    print(table(header, rows))
    for name in queries:
        values = samples[name]
        compared = "offset" in name  # not a way the target is about
        bench.summary.append(
            [
                f"`jobs.json` {name}, {args.store_jobs:,} jobs in PostgreSQL: median (p99);"
                " `list_jobs` alone median",
                f"{ms(values, 0.5):.1f} ms ({ms(values, 0.99):.1f});"
                f" {ms(inside[name], 0.5):.1f} ms",
                "" if compared else "≤ 20 ms median",
                "" if compared else verdict(ms(values, 0.5), 20),
            ]
        )


# -- 4. a node's death -----------------------------------------------------------------------------


@dataclass
class Death:
    timeout: float
    failed_after: float  # kill -> every job of node 2 failed
    dead_after: float  # kill -> nodes.json says node 2 is not alive
    heartbeat_age: float  # kill - node 2's last heartbeat
    jobs: int


def jobs_on(node: ScrapydNode, name: str, prefix: str) -> list[str]:
    page = node.get("jobs.json", {"limit": 100}).json()["jobs"]
    return sorted(
        j["job_id"]
        for j in page
        if j["job_id"].startswith(prefix) and j["node"] == name and j["status"] == "running"
    )


def kill_round(bench: Bench, nodes: list[ScrapydNode], store: Store, timeout: float) -> Death:
    first, second = nodes
    prefix = f"kill-t{timeout:g}-{time.time_ns()}-"
    jobs = [f"{prefix}{i}" for i in range(2 * KILL_MAX_PROC)]
    urls = slow_urls(bench.site, LONG_PAGES, LONG_DELAY)
    for job in jobs:
        schedule(first, job, urls, CONCURRENT_REQUESTS=1)
    doomed = wait_for(
        lambda: len(found := jobs_on(first, "node2", prefix)) == KILL_MAX_PROC and found,
        timeout=60,
        what="node 2 to run its jobs",
    )
    survivors = wait_for(
        lambda: len(found := jobs_on(first, "node1", prefix)) == KILL_MAX_PROC and found,
        timeout=60,
        what="node 1 to run its jobs",
    )
    pids = [second.crawl_pid(job) for job in doomed]
    bench.orphans += pids
    assert second.process is not None
    second.process.send_signal(signal.SIGKILL)
    for pid in pids:
        kill(pid)
    killed = time.time()
    del bench.orphans[:]
    second.process.wait(10)
    second.process = None
    age = killed - store.last_seen("node2")

    dead_after = None
    waiting = set(doomed)
    while waiting:
        for job in sorted(waiting):
            document = first.status(job)
            if document["status"] == "failed":
                check(
                    "node 'node2'" in (document["error_message"] or ""),
                    f"job {job}: {document['error_message']!r}",
                )
                waiting.discard(job)
            else:
                check(document["status"] == "running", f"job {job} is {document['status']}")
        if dead_after is None:
            alive = {n["name"]: n["alive"] for n in first.get("nodes.json").json()["nodes"]}
            if not alive["node2"]:
                dead_after = time.time() - killed
        check(time.time() - killed < timeout + 60, f"node 2's jobs not failed: {waiting}")
        time.sleep(0.1)
    failed_after = time.time() - killed
    for job in survivors:
        status = first.status(job)["status"]
        check(status == "running", f"node 1's job {job} is {status}")
        first.post("jobcancel.json", {"job": job, "force": "1"})
    for job in survivors:
        first.wait_status(job, *ENDED, timeout=60)
    second.start()  # for the next round: node 2 back, same name
    return Death(timeout, failed_after, dead_after or failed_after, age, len(doomed))


def death_section(bench: Bench, db: str) -> None:
    args = bench.args
    results: list[Death] = []
    store = Store(db)
    try:
        for timeout in args.timeouts:
            options = {"max_proc": str(KILL_MAX_PROC), "poll_interval": "1"}
            jobstatus = {"node_timeout": f"{timeout:g}"}
            with cluster(bench, f"kill-t{timeout:g}", db, 2, options, jobstatus) as nodes:
                for _ in range(args.kill_rounds):
                    death = kill_round(bench, nodes, store, timeout)
                    print(
                        f"  node_timeout {timeout:g} s: {death.jobs} jobs failed"
                        f" {death.failed_after:.1f} s after the kill"
                        f" (last heartbeat {death.heartbeat_age:.1f} s before it)"
                    )
                    results.append(death)
    finally:
        store.close()
    rows = [
        [
            f"{d.timeout:g}",
            f"{d.heartbeat_age:.1f}",
            f"{d.dead_after:.1f}",
            f"{d.failed_after:.1f}",
            f"{d.timeout - REAP_INTERVAL:g} – {d.timeout + REAP_INTERVAL:g}",
        ]
        for d in results
    ]
    print(
        f"\nA dead node: 2 nodes, max_proc {KILL_MAX_PROC}; kill -9 of node 2's scrapyd and of"
        " its crawls; jobstatus.json polled on node 1 every 0.1 s; seconds after the kill:\n"
    )
    header = [
        "node_timeout s",
        "node 2's last heartbeat before the kill",
        "nodes.json: node 2 not alive",
        "every node-2 job failed",
        "expected window",
    ]
    print(table(header, rows))
    for timeout in args.timeouts:
        each = [d.failed_after for d in results if d.timeout == timeout]
        low, high = timeout - REAP_INTERVAL, timeout + REAP_INTERVAL
        inside = all(low - 1 <= s <= high + 1 for s in each)  # 1 s: the polling, the reads
        bench.summary.append(
            [
                f"kill -9 of a node → its jobs failed, node_timeout {timeout:g} s: each round",
                ", ".join(f"{s:.1f} s" for s in each),
                f"{low:g}–{high:g} s",
                "yes" if inside else "**no**",
            ]
        )


# -- the run -----------------------------------------------------------------------------------


def machine(server: PostgresServer | None = None) -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    postgres = ""
    if server is not None:
        with psycopg.connect(server.url()) as conn:
            postgres = f", PostgreSQL {conn.info.server_version // 10000}"
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()},"
        f" Python {platform.python_version()}{postgres}; load average {loadavg()}"
    )


def lock_state() -> str:
    """Whether the benchmarks' lock is held (by the ``flock`` this runs under, one hopes)."""
    try:
        fd = os.open(LOCK, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as e:
        return f"{LOCK}: {e.strerror}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return f"{LOCK} held (run under flock)"
        return f"{LOCK}: {e.strerror}"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return f"**{LOCK} NOT held**: another benchmark may have run at the same time"
    finally:
        os.close(fd)


def configs(text: str) -> list[tuple[int, float]]:
    pairs = []
    for item in text.split(","):
        nodes, _, poll = item.partition(":")
        pairs.append((int(nodes), float(poll)))
    return pairs


def numbers(text: str) -> list[float]:
    values = [float(x) for x in text.split(",")]
    if any(v < 10 for v in values):
        raise argparse.ArgumentTypeError("node_timeout: 10 seconds or more")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run")
    parser.add_argument("--jobs", type=int, help=f"jobs per throughput run ({FULL['jobs']})")
    parser.add_argument("--rounds", type=int, help=f"throughput rounds ({FULL['rounds']})")
    parser.add_argument("--max-proc", type=int, default=4, help="max_proc of every node")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="for the throughput")
    parser.add_argument("--urls", type=int, default=2, help="pages per throughput job")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds each page takes")
    parser.add_argument(
        "--latency",
        type=configs,
        default=configs("3:5,1:5,3:1"),
        help="NODES:POLL_INTERVAL,... of the latency runs",
    )
    parser.add_argument("--latency-jobs", type=int, help=f"({FULL['latency_jobs']})")
    parser.add_argument("--store-jobs", type=int, help=f"({FULL['store_jobs']:,})")
    parser.add_argument("--requests", type=int, help=f"calls per page ({FULL['requests']})")
    parser.add_argument("--cursor-pages", type=int, help=f"({FULL['cursor_pages']})")
    parser.add_argument("--timeouts", type=numbers, help=f"node_timeouts ({FULL['timeouts']})")
    parser.add_argument("--kill-rounds", type=int, help=f"per node_timeout ({FULL['kill_rounds']})")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' directories")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, numbers(value) if key == "timeouts" else value)
    parts = {int(p) for p in args.parts.split(",")}
    check(args.jobs >= 1 and args.rounds >= 1 and args.latency_jobs >= 1, "nothing to measure")
    check(args.store_jobs >= 4 * PAGE, "--store-jobs: at least 200")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    command = shlex.join([sys.executable, "-m", "tests.benchmarks.bench_cluster", *sys.argv[1:]])
    started = time.perf_counter()
    print(f"# `flock {LOCK} {command}`\n\n{lock_state()}\n")

    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    bench = None
    timings: list[str] = []
    try:
        with postgres_server() as server, local_site() as site:
            print(f"Machine: {machine(server)}\n")
            bench = Bench(args, root, server, site, random.Random(7))  # noqa: S311
            sections = [
                (1, "1. throughput, 3 nodes vs 1", throughput_section),
                (2, "2. schedule-to-running latency", latency_section),
                (3, "3. jobs.json on a big store", store_section),
                (4, "4. a node's death", death_section),
            ]
            with temporary_database(server.url()) as shared:
                for number, name, section in sections:
                    if number not in parts:
                        continue
                    clock = time.perf_counter()
                    print(f"## {name}\n")
                    if number in (1, 2):  # one store for both: the egg deployed once
                        section(bench, shared)
                    else:
                        with temporary_database(server.url()) as db:
                            section(bench, db)
                    timings.append(f"part {number} {time.perf_counter() - clock:.0f} s")
                    print()
                # The nodes hold connections: stop them before the databases go.
                bench.cleanup()
    finally:
        if bench is not None:
            bench.cleanup()
        if args.keep:
            print(f"\nThe nodes' directories: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    elapsed = time.perf_counter() - started
    print(f"## Summary\n\n`flock {LOCK} {command}` ({elapsed:.0f} s: {', '.join(timings)})\n")
    print(f"Machine: {machine()}\n")
    print(table(["measure", "result", "target", "holds"], bench.summary))


if __name__ == "__main__":
    main()
