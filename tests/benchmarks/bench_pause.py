"""Pause and resume: what being pausable costs a crawl, and how fast a node pauses, resumes
and stops its pausable jobs.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_pause [--parts 1,2,3]
[--urls 2000] [--concurrency 16] [--rounds 10] [--polls 0.5,5] [--cycles 15]
[--shutdown-rounds 5] [--documents /pages/0?links=3&max=200&docs=2&delay=0.2]
[--doc-concurrency 2] [--keep]``; ``--quick`` for a smoke run (300 URLs, 2 rounds, 3
cycles, 1 shutdown). Explicit options win over ``--quick``. A default run takes some
9 minutes on 2 CPUs (part 1: some 5).

Real parts: the local test site (``tests/site.py``), real ``scrapy crawl`` processes of the
project, and real ``scrapyd`` nodes (``tests/scrapyd_node.py``: the shipped scrapyd.conf
with ``[jobstatus] pausable = on``, the project deployed by scrapyd-deploy, a SQLite store
each).

1. The crawl's cost of being pausable: ``scrapy crawl batch`` of ``--urls`` local pages
   (``/title?t=I``, from a ``urls_file``), ``--concurrency`` requests at once (per domain
   too: the project allows 8 per domain, and the local site is one domain), a JSON lines
   feed, one store for every crawl. Three sides, rotated every round (each first in turn)
   for ``--rounds`` rounds: without a JOBDIR; with ``-s JOBDIR=`` a new directory (Scrapy's
   scheduler keeps every request in a queue on disk there, the job records its start
   requests for ``ResumedStartMiddleware``); the same with
   ``SPIDER_MIDDLEWARES={"scrapy_jobstatus.ResumedStartMiddleware": null}``. For each: the
   wall time of the process (start to exit), its CPU time (user + system, from
   ``RUSAGE_CHILDREN``) and its peak resident set (``VmHWM``, read at exit by the launcher
   of ``bench_extension``: what was forked from this process does not count). Reported as
   the median of the per-round ratios, with their range: JOBDIR / no JOBDIR (the cost of
   being pausable) and JOBDIR / JOBDIR without the middleware (the middleware's own); and
   the CPU time per URL that one side spends more than the other. The pages answer at
   once: the crawl is bound by its CPU, the worst case for a cost per request.
   Checked: every crawl exits 0, its job ``completed`` with every page crawled and one item
   per URL in its feed; the middleware's record of start requests (``jobstatus.started``)
   holds one line per URL when it is enabled and does not exist when it is not.
2. Pause and resume latency on a node, for each ``--polls`` poll_interval (0.5 s, and
   Scrapyd's default 5 s; max_proc 2): the documents job on ``--documents`` (201 pages of
   0.2 s, 402 documents with the defaults), ``--doc-concurrency`` requests at once. A cycle
   on a paused job whose crawl has exited: at a random moment (0 to poll_interval s later:
   cycles of a steady length would keep the resumes at one phase of the node's poller),
   POST ``jobresume.json``, then ``jobstatus.json`` every 50 ms until the job reads
   ``running`` (its new crawl opened the job: the wait for the node's poller and the
   crawl's start-up); then, once it has crawled
   5 pages more, POST ``jobpause.json`` and ``jobstatus.json`` every 50 ms until it reads
   ``paused`` (the crawl sees the request at its next status write, every
   ``JOBSTATUS_INTERVAL``, 1 s, lets its requests in flight finish and closes its feed);
   then the time until the paused crawl has exited (``status.json`` every 50 ms). The two
   nodes alternate, in turn first, for ``--cycles`` cycles each; median, p90 (nearest rank)
   and max. Checked: every answer (200 ``pending``, 202 ``pausing``), the statuses read on
   the way; every job, once resumed for the last time, ``completed`` with each document
   reported once in Scrapyd's items file (402 with the defaults) however many times it was
   paused.
3. A node's shutdown: a node (max_proc 2, poll_interval 0.5 s, shutdown_wait 60 s) running
   two documents jobs, each having crawled 5 pages in this round; SIGTERM to scrapyd; the
   node's SQLite store read every 50 ms until both jobs are ``pending`` (paused and queued
   again, node null), the time until both crawls have exited (a process that has exited
   but is not yet reaped counts as exited) and until scrapyd has. Then the node starts again
   and resumes the two jobs for the next round (``--shutdown-rounds``). Checked: both jobs
   ``pending`` with ``queued again`` in their history once scrapyd has exited, their
   crawls gone; after the last round, both jobs ``completed`` with each document reported
   once.

The machine is small and shared: figures are reported, never asserted; answers are checked
(a ``BenchmarkError`` stops the run). Every process started (the site, the nodes, their
crawls) is stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scrapy_jobstatus import open_store
from tests.benchmarks.bench_cluster import LOCK, lock_state, quantile
from tests.benchmarks.bench_extension import LAUNCHER, load, machine
from tests.benchmarks.bench_scrapyd import BenchmarkError, check, table
from tests.helpers import ROOT, crawl_command, local_site, read_lines
from tests.scrapyd_node import PROJECT, ScrapydNode

COMMAND = "python -m tests.benchmarks.bench_pause"
MIDDLEWARE = "scrapy_jobstatus.ResumedStartMiddleware"
# Part 1's sides, in the order of the first round.
SIDES = ("plain", "jobdir", "no-mw")
SIDE_NAMES = {
    "plain": "no JOBDIR",
    "jobdir": "JOBDIR",
    "no-mw": "JOBDIR, ResumedStartMiddleware disabled",
}
TERMINAL = ("completed", "failed", "cancelled")
# What a job resumed for the last time may read on its way to its end.
TO_THE_END = {"pending", "running", "finalizing"}
# Pages a job crawls after it is running again before it is paused (or stopped).
PROGRESS = 5
# A job this near its last page is run to its end instead of paused again.
MARGIN = 40
POLL = 0.05  # seconds between two readings of a job's status
JOB_SETTINGS = {"LOG_LEVEL": "INFO"}

FULL = {"urls": 2000, "rounds": 10, "cycles": 15, "shutdown_rounds": 5}
QUICK = {"urls": 300, "rounds": 2, "cycles": 3, "shutdown_rounds": 1}

Row = list[str]


# -- figures ---------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 3) -> str:
    """The median, with the range when there are several values."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def latency(values: list[float]) -> str:
    """Median, p90 (nearest rank) and max, in seconds."""
    return (
        f"{statistics.median(values):.2f} s ({quantile(values, 0.9):.2f} s, "
        f"max {max(values):.2f} s)"
    )


# What the crawls and the nodes run: the figures belong to one version of these.
CODE = ("extensions", "crawler", "scrapyd.conf", "setup.py", "pyproject.toml")


def code_state() -> tuple[str, str]:
    """The commit the code is at, with the files of ``CODE`` changed since; and a digest
    of those files' contents, to tell whether they changed during the run."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 (the work tree's git)
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", *CODE],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    digest = hashlib.sha256()
    for name in CODE:
        path = ROOT / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    described = f"commit {commit or 'unknown'}"
    if changed:
        described += f", with uncommitted changes to {', '.join(changed)}"
    return described, digest.hexdigest()


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Bench:
    args: argparse.Namespace
    root: Path
    site: str
    rng: random.Random
    summary: list[Row] = field(default_factory=list)
    nodes: list[ScrapydNode] = field(default_factory=list)

    def node(self, name: str, poll: float) -> ScrapydNode:
        """A started node, pausable, with the project deployed; stopped at the end."""
        node = ScrapydNode(
            self.root / name,
            options={"max_proc": "2", "poll_interval": f"{poll:g}", "items_dir": "items"},
            jobstatus={"pausable": "on", "shutdown_wait": "60"},
        )
        self.nodes.append(node)
        node.start()
        node.deploy()
        # schedule.json lists the project's spiders (a `scrapy list` run) at its first
        # call: not in the measurements.
        answer = node.get("listspiders.json", {"project": PROJECT})
        check(answer.code == 200 and "documents" in answer.json().get("spiders", []), answer)
        return node

    def cleanup(self) -> None:
        while self.nodes:
            node = self.nodes.pop()
            try:
                node.stop()
            except Exception as e:  # noqa: BLE001 (stop the others all the same)
                print(f"could not stop the node in {node.workdir}: {e}", file=sys.stderr)


# -- 1. the crawl's cost of being pausable ----------------------------------------------------


def crawl(bench: Bench, side: str, urls_file: Path, tag: str) -> dict[str, Any]:
    """One ``scrapy crawl batch`` process; its wall and CPU time, peak memory, and what
    differs from what it should be."""
    args = bench.args
    workdir = bench.root / "crawls"
    log, peak, feed = (workdir / f"{tag}.{ext}" for ext in ("log", "peak", "jl"))
    jobdir = workdir / f"{tag}.jobdir"
    settings = {
        "LOG_FILE": str(log),
        "LOGSTATS_INTERVAL": "0",
        "CONCURRENT_REQUESTS": str(args.concurrency),
        "CONCURRENT_REQUESTS_PER_DOMAIN": str(args.concurrency),
        "TELNETCONSOLE_ENABLED": "False",
    }
    if side != "plain":
        settings["JOBDIR"] = str(jobdir)
    if side == "no-mw":
        settings["SPIDER_MIDDLEWARES"] = json.dumps({MIDDLEWARE: None})
    db = workdir / "jobs.sqlite3"
    command = crawl_command(
        "batch", db, args={"urls_file": str(urls_file), "_job": tag}, settings=settings, output=feed
    )
    check(command[1:3] == ["-m", "scrapy"], command)
    command[1:3] = ["-c", LAUNCHER]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(  # noqa: S603 (the project's own crawl)
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PEAK_FILE": str(peak)},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = log.read_text(errors="replace") if log.exists() else ""
    problems = []
    if process.returncode != 0:
        problems.append(f"exit {process.returncode}: {process.stderr[-500:]}")
    store = open_store(db, readonly=True)
    try:
        document = store.document(tag) or {}
    finally:
        store.close()
    if document.get("status") != "completed":
        problems.append(f"status {document.get('status')!r}")
    if document.get("total_pages_crawled") != args.urls:
        problems.append(f"{document.get('total_pages_crawled')} pages, expected {args.urls}")
    items = len(read_lines(feed))
    if items != args.urls:
        problems.append(f"{items} items in the feed, expected {args.urls}")
    started_file = jobdir / "jobstatus.started"
    recorded = len(started_file.read_text().split()) if started_file.exists() else None
    if side == "jobdir" and recorded != args.urls:
        problems.append(f"{recorded} start requests recorded, expected {args.urls}")
    if side != "jobdir" and recorded is not None:
        problems.append(f"{recorded} start requests recorded without the middleware")
    if (side == "plain") == jobdir.exists():
        problems.append(f"JOBDIR {'made' if jobdir.exists() else 'missing'}")
    size = sum(p.stat().st_size for p in jobdir.rglob("*") if p.is_file())
    problems += [line for line in text.splitlines() if "] ERROR:" in line][:3]
    rss = int(peak.read_text()) / 1024 if peak.exists() else float("nan")
    if not bench.args.keep:
        for path in (log, feed, peak):
            path.unlink(missing_ok=True)
        shutil.rmtree(jobdir, ignore_errors=True)
    if problems:
        raise BenchmarkError(f"crawl {tag} ({SIDE_NAMES[side]}): {problems}")
    return {
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "jobdir_kib": size / 1024,
    }


def crawl_section(bench: Bench) -> None:
    args = bench.args
    workdir = bench.root / "crawls"
    workdir.mkdir(parents=True, exist_ok=True)
    urls_file = workdir / "urls.txt"
    urls_file.write_text("".join(f"{bench.site}/title?t={n}\n" for n in range(args.urls)))
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    # Warm-up: imports, disk caches, the site, the store's creation.
    for side in SIDES:
        crawl(bench, side, urls_file, f"warmup-{side}")
    for round_ in range(args.rounds):
        shift = round_ % len(SIDES)
        for side in SIDES[shift:] + SIDES[:shift]:
            result = crawl(bench, side, urls_file, f"r{round_}-{side}")
            results[side].append(result)
            print(
                f"  round {round_ + 1:2d} {side:6}: wall {result['wall']:.2f} s, CPU "
                f"{result['cpu']:.2f} s, peak RSS {result['rss']:.1f} MiB"
                + (f", JOBDIR {result['jobdir_kib']:.0f} KiB" if side != "plain" else "")
                + f" (load {loadavg()})"
            )

    def ratios(side: str, base: str, key: str) -> list[float]:
        return [a[key] / b[key] for a, b in zip(results[side], results[base], strict=True)]

    print(
        f"\n`scrapy crawl batch` of {args.urls:,} local pages (`/title?t=I`, a `urls_file`),"
        f" {args.concurrency} concurrent requests, a feed; {args.rounds} rounds, the three"
        " sides rotated; medians (range):\n"
    )
    rows = []
    for side in SIDES:
        runs = results[side]
        rows.append(
            [
                SIDE_NAMES[side],
                f"{spread([r['wall'] for r in runs], 2)} s",
                f"{spread([r['cpu'] for r in runs], 2)} s",
                f"{spread([r['rss'] for r in runs], 1)} MiB",
                "–"
                if side == "plain"
                else f"{statistics.median(r['jobdir_kib'] for r in runs):.0f}",
            ]
        )
    print(table(["crawl", "wall time", "CPU time", "peak RSS", "JOBDIR left after, KiB"], rows))
    print()
    compared = [
        ("jobdir", "plain", "JOBDIR / no JOBDIR"),
        ("jobdir", "no-mw", "middleware on / off"),
    ]

    def extra_cpu(side: str, base: str) -> list[float]:
        """CPU milliseconds per URL more than the other side, per round."""
        return [
            (a["cpu"] - b["cpu"]) * 1000 / args.urls
            for a, b in zip(results[side], results[base], strict=True)
        ]

    rows = [
        [
            name,
            f"**{spread(ratios(side, base, 'wall'))}**",
            spread(ratios(side, base, "cpu")),
            f"{spread(extra_cpu(side, base), 3)} ms",
            spread(ratios(side, base, "rss")),
        ]
        for side, base, name in compared
    ]
    header = [
        "ratio, median of the per-round ratios (range)",
        "wall",
        "CPU",
        "CPU per URL, difference",
        "peak RSS",
    ]
    print(table(header, rows))
    rss = {side: statistics.median(r["rss"] for r in results[side]) for side in SIDES}
    for side, base, name in compared:
        bench.summary.append(
            [
                f"crawl of {args.urls:,} pages, {name}: wall; CPU; peak RSS"
                f" (median of {args.rounds}, range)",
                f"{spread(ratios(side, base, 'wall'))}; {spread(ratios(side, base, 'cpu'))};"
                f" {spread(ratios(side, base, 'rss'))} ({rss[side] - rss[base]:+.1f} MiB)",
            ]
        )


# -- 2. pause and resume latency ------------------------------------------------------------


@dataclass
class Cycle:
    resume_answer: float  # POST jobresume.json -> its answer
    running: float  # ... -> the job reads running
    pause_answer: float  # POST jobpause.json -> its answer
    paused: float  # ... -> the job reads paused
    exited: float  # paused -> the crawl gone from the node
    pages: int  # pages crawled when the pause was asked


@dataclass
class Tracked:
    """A node's documents job between cycles: paused, its crawl gone."""

    node: ScrapydNode
    poll: float
    job: str | None = None
    cycles: list[Cycle] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


def expected_documents(path: str) -> int | None:
    """Documents of the site's tree: ``docs`` per page and the first one, linked from every
    page, counted once; None when the URL does not say."""
    query = parse_qs(urlsplit(path).query)
    try:
        pages = int(query["max"][0]) + 1
        docs = int(query.get("docs", ["0"])[0])
    except (KeyError, ValueError):
        return None
    return pages * docs


def pages_of(path: str) -> int:
    try:
        return int(parse_qs(urlsplit(path).query)["max"][0]) + 1
    except (KeyError, ValueError):
        return 1_000_000


def status(node: ScrapydNode, job: str) -> dict[str, Any]:
    answer = node.get("jobstatus.json", {"job": job})
    check(answer.code == 200, f"jobstatus.json {job}: HTTP {answer.code}: {answer.body[:300]!r}")
    return answer.json()["job"]


def read_until(
    node: ScrapydNode, job: str, wanted: set[str], allowed: set[str], timeout: float = 120
) -> tuple[dict[str, Any], float]:
    """``jobstatus.json`` every 50 ms until the job reads one of ``wanted``; that
    document and when it was read (monotonic). Any status outside ``wanted`` and
    ``allowed`` stops the run."""
    deadline = time.monotonic() + timeout
    while True:
        document = status(node, job)
        at = time.monotonic()
        if document["status"] in wanted:
            return document, at
        check(
            document["status"] in allowed,
            f"job {job} reads {document['status']!r} waiting for {sorted(wanted)}:"
            f" {document.get('message')!r}",
        )
        check(at < deadline, f"job {job} not {sorted(wanted)} after {timeout:.0f} s")
        time.sleep(POLL)


def crawled(node: ScrapydNode, job: str, pages: int) -> dict[str, Any]:
    """The job's document once it has crawled ``pages`` pages (or ended)."""
    deadline = time.monotonic() + 120
    while True:
        document = status(node, job)
        if document["status"] in TERMINAL or (
            document["status"] == "running" and document["total_pages_crawled"] >= pages
        ):
            return document
        check(document["status"] in ("pending", "running"), f"job {job}: {document['status']}")
        check(time.monotonic() < deadline, f"job {job} did not crawl {pages} pages")
        time.sleep(POLL)


def crawl_gone(node: ScrapydNode, job: str, timeout: float = 60) -> float:
    """When Scrapyd no longer lists the job's crawl (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        if node.get("status.json", {"job": job}).json().get("currstate") is None:
            return time.monotonic()
        check(time.monotonic() < deadline, f"the crawl of {job} did not exit")
        time.sleep(POLL)


def schedule_documents(bench: Bench, node: ScrapydNode, prefix: str) -> str:
    job = f"{prefix}-{time.time_ns()}"
    answer = node.schedule(
        "documents",
        job=job,
        url=bench.site + bench.args.documents,
        settings={**JOB_SETTINGS, "CONCURRENT_REQUESTS": bench.args.doc_concurrency},
    )
    check(answer.code == 200 and answer.json()["status"] == "ok", answer.body[:300])
    return job


def request(
    node: ScrapydNode, service: str, job: str, code: int, prevstate: str, status: str
) -> float:
    """POST a pause or resume request, checking its answer. How long it took."""
    asked = time.monotonic()
    answer = node.post(service, {"job": job})
    took = time.monotonic() - asked
    body = answer.json()
    check(
        answer.code == code and body["prevstate"] == prevstate and body["job"]["status"] == status,
        f"{service} {job}: HTTP {answer.code}: {answer.body[:300]!r}",
    )
    return took


def pause(node: ScrapydNode, job: str) -> float:
    return request(node, "jobpause.json", job, 202, "running", "pausing")


def resume(node: ScrapydNode, job: str) -> float:
    return request(node, "jobresume.json", job, 200, "paused", "pending")


def check_documents(bench: Bench, node: ScrapydNode, job: str, document: dict[str, Any]) -> None:
    """A job run to its end, however often paused: every document reported once."""
    check(document["status"] == "completed", f"job {job} ended {document['status']}")
    urls = [
        item["url"]
        for item in read_lines(node.workdir / "items" / PROJECT / "documents" / f"{job}.jl")
    ]
    twice = [url for url, n in Counter(urls).items() if n > 1]
    check(not twice, f"job {job}: {len(twice)} documents reported twice, e.g. {twice[:3]}")
    check(
        len(urls) == document["total_documents_found"],
        f"job {job}: {len(urls)} items, {document['total_documents_found']} documents found",
    )
    expected = expected_documents(bench.args.documents)
    check(expected is None or len(urls) == expected, f"job {job}: {len(urls)} of {expected}")


def finish(bench: Bench, tracked: Tracked) -> None:
    """Resume the paused job and let it end; check its documents."""
    if tracked.job is None:
        return
    job, tracked.job = tracked.job, None
    resume(tracked.node, job)
    document, _ = read_until(tracked.node, job, set(TERMINAL), TO_THE_END, 300)
    check_documents(bench, tracked.node, job, document)
    tracked.done.append(job)


def prepare(bench: Bench, tracked: Tracked) -> None:
    """A paused job with pages left to crawl, its crawl gone: a new one if needed."""
    node = tracked.node
    if tracked.job is not None:
        left = pages_of(bench.args.documents) - status(node, tracked.job)["total_pages_crawled"]
        if left >= MARGIN:
            return
        finish(bench, tracked)
    job = tracked.job = schedule_documents(bench, node, f"latency-p{tracked.poll:g}")
    read_until(node, job, {"running"}, {"pending"})
    crawled(node, job, PROGRESS)
    pause(node, job)
    read_until(node, job, {"paused"}, {"running", "pausing"})
    crawl_gone(node, job)


def cycle(bench: Bench, tracked: Tracked) -> Cycle:
    """Resume the paused job; once it has crawled some pages, pause it again."""
    prepare(bench, tracked)
    node, job = tracked.node, tracked.job
    assert job is not None
    before = status(node, job)
    check(before["status"] == "paused", f"job {job} is {before['status']}, not paused")
    # At a random moment: resumes a cycle apart would keep one phase of the node's poller.
    time.sleep(bench.rng.uniform(0, tracked.poll))
    asked = time.monotonic()
    resume_answer = resume(node, job)
    document, running = read_until(node, job, {"running"}, {"paused", "pending"})
    document = crawled(node, job, document["total_pages_crawled"] + PROGRESS)
    check(document["status"] == "running", f"job {job} ended {document['status']} too soon")
    pages = document["total_pages_crawled"]
    pausing = time.monotonic()
    pause_answer = pause(node, job)
    _, paused = read_until(node, job, {"paused"}, {"running", "pausing"})
    gone = crawl_gone(node, job)
    return Cycle(
        resume_answer, running - asked, pause_answer, paused - pausing, gone - paused, pages
    )


def latency_section(bench: Bench) -> None:
    args = bench.args
    nodes = [Tracked(bench.node(f"latency-poll{poll:g}", poll), poll) for poll in args.polls]
    for round_ in range(args.cycles):
        shift = round_ % len(nodes)
        for tracked in nodes[shift:] + nodes[:shift]:
            result = cycle(bench, tracked)
            tracked.cycles.append(result)
            print(
                f"  poll {tracked.poll:g} s, cycle {round_ + 1:2d}: resume → running "
                f"{result.running:.2f} s, pause → paused {result.paused:.2f} s, crawl exited "
                f"{result.exited:.2f} s later (paused at {result.pages} pages; load {loadavg()})"
            )
    # Every job to its end: each document reported once however often it was paused.
    for tracked in nodes:
        if tracked.job is not None:
            resume(tracked.node, tracked.job)
    for tracked in nodes:
        if tracked.job is not None:
            job, tracked.job = tracked.job, None
            document, _ = read_until(tracked.node, job, set(TERMINAL), TO_THE_END, 300)
            check_documents(bench, tracked.node, job, document)
            tracked.done.append(job)
    print(
        f"\nThe documents job on `{args.documents}`, {args.doc_concurrency} requests at once;"
        f" max_proc 2; {args.cycles} cycles per node, the nodes alternated; median (p90, max):\n"
    )
    rows = []
    for tracked in nodes:
        cycles = tracked.cycles
        rows.append(
            [
                f"{tracked.poll:g} s",
                latency([c.paused for c in cycles]),
                latency([c.running for c in cycles]),
                latency([c.exited for c in cycles]),
                f"{statistics.median(c.pause_answer for c in cycles) * 1000:.1f} / "
                f"{statistics.median(c.resume_answer for c in cycles) * 1000:.1f} ms",
                f"{len(tracked.done)}: completed, each document once",
            ]
        )
        bench.summary.append(
            [
                f"poll_interval {tracked.poll:g} s: jobpause.json → `paused`;"
                " jobresume.json → `running` (median, p90)",
                f"{statistics.median(c.paused for c in cycles):.2f} s"
                f" ({quantile([c.paused for c in cycles], 0.9):.2f} s);"
                f" {statistics.median(c.running for c in cycles):.2f} s"
                f" ({quantile([c.running for c in cycles], 0.9):.2f} s)",
            ]
        )
    header = [
        "poll_interval",
        "jobpause.json → `paused`",
        "jobresume.json → `running`",
        "`paused` → crawl exited",
        "answer: pause / resume",
        "jobs run to the end",
    ]
    print(table(header, rows))
    for tracked in nodes:
        tracked.node.stop()


# -- 3. a node's shutdown ------------------------------------------------------------------------


@dataclass
class Shutdown:
    exited: float  # SIGTERM -> scrapyd exited
    pending: list[float]  # SIGTERM -> each job pending in the store
    crawls: float  # SIGTERM -> both crawl processes gone
    pages: list[int]
    problems: list[str]


def alive(pid: int) -> bool:
    """Whether the process runs: one that has exited but is not reaped yet (a zombie, its
    parent gone or busy) does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def shutdown_round(bench: Bench, node: ScrapydNode, jobs: list[str]) -> Shutdown:
    """SIGTERM to the node running ``jobs``; when they are pending, when its crawls and
    scrapyd have exited."""
    documents = [read_until(node, job, {"running"}, {"pending"})[0] for job in jobs]
    documents = [
        crawled(node, job, d["total_pages_crawled"] + PROGRESS)
        for job, d in zip(jobs, documents, strict=True)
    ]
    for job, document in zip(jobs, documents, strict=True):
        check(document["status"] == "running", f"job {job} ended {document['status']} too soon")
    pids = [node.crawl_pid(job) for job in jobs]
    store = open_store(str(node.db), readonly=True)
    process, node.process = node.process, None
    check(process is not None, "the node is not running")
    assert process is not None
    pending: dict[str, float] = {}
    exited = crawls = None
    try:
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        deadline = sent + 120
        while exited is None or crawls is None or len(pending) < len(jobs):
            now = time.monotonic()
            if exited is None and process.poll() is not None:
                exited = now - sent
            if crawls is None and not any(alive(pid) for pid in pids):
                crawls = now - sent
            for job in jobs:
                state = store.get(job)
                if job not in pending and state is not None and str(state.status) == "pending":
                    pending[job] = now - sent
            if now > deadline:
                for pid in [*pids, process.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait()
                raise BenchmarkError(
                    f"after 120 s: scrapyd {'exited' if exited else 'running'}, crawls"
                    f" {'exited' if crawls else 'running'}, pending {pending}"
                )
            time.sleep(POLL)
        # Twisted stops on the signal, then ends the process with it.
        check(process.returncode in (0, -signal.SIGTERM), f"scrapyd exited {process.returncode}")
        for job in jobs:
            state = store.get(job)
            assert state is not None
            check(
                str(state.status) == "pending" and state.node is None,
                f"job {job}: {state.status} on {state.node} after the node stopped",
            )
            steps = [event.step for event in store.history(job)]
            check("queued again" in steps, f"job {job}: no 'queued again' in {steps}")
    finally:
        store.close()
    assert exited is not None and crawls is not None
    problems = []
    if exited < crawls:
        problems.append(
            f"scrapyd exited {crawls - exited:.2f} s before its crawls: it did not wait for them"
        )
    return Shutdown(
        exited,
        [pending[job] for job in jobs],
        crawls,
        [d["total_pages_crawled"] for d in documents],
        problems,
    )


def shutdown_section(bench: Bench) -> None:
    args = bench.args
    node = bench.node("shutdown", 0.5)
    jobs = [schedule_documents(bench, node, f"shutdown-{i}") for i in range(2)]
    results: list[Shutdown] = []
    done = 0
    for round_ in range(args.shutdown_rounds):
        # A job near its end is replaced: both must outlive the next SIGTERM.
        for i, job in enumerate(jobs):
            left = pages_of(args.documents) - status(node, job)["total_pages_crawled"]
            if left < MARGIN:
                document, _ = read_until(node, job, set(TERMINAL), TO_THE_END, 300)
                check_documents(bench, node, job, document)
                done += 1
                jobs[i] = schedule_documents(bench, node, f"shutdown-{round_}-{i}")
        result = shutdown_round(bench, node, jobs)
        results.append(result)
        print(
            f"  round {round_ + 1}: scrapyd exited {result.exited:.2f} s after SIGTERM; jobs"
            f" pending at {', '.join(f'{p:.2f}' for p in result.pending)} s; crawls exited"
            f" {result.crawls:.2f} s (pages {result.pages}; load {loadavg()})"
            + (f", PROBLEMS {result.problems}" if result.problems else "")
        )
        node.start()
    for job in jobs:
        document, _ = read_until(node, job, set(TERMINAL), TO_THE_END, 300)
        check_documents(bench, node, job, document)
        done += 1
    node.stop()
    both = [max(r.pending) for r in results]
    exits = [r.exited for r in results]
    print(
        f"\nA node (max_proc 2, poll_interval 0.5 s, shutdown_wait 60 s) running two documents"
        f" jobs; SIGTERM to scrapyd; {len(results)} rounds, median (range):\n"
    )
    rows = [
        [
            "SIGTERM → both jobs `pending` in the store (paused, queued again)",
            f"**{spread(both, 2)} s**",
        ],
        ["SIGTERM → the first job `pending`", f"{spread([min(r.pending) for r in results], 2)} s"],
        ["SIGTERM → both crawl processes exited", f"{spread([r.crawls for r in results], 2)} s"],
        ["SIGTERM → scrapyd exited", f"**{spread(exits, 2)} s**"],
        [
            "jobs run to the end after the restarts",
            f"{done}: completed, each document once",
        ],
    ]
    print(table(["measure", "result"], rows))
    problems = [f"round {i + 1}: {p}" for i, r in enumerate(results) for p in r.problems]
    print(f"\nProblems: {len(problems)}")
    for problem in problems:
        print(f"- {problem}")
    bench.summary.append(
        [
            "SIGTERM to a node with 2 pausable crawls → both `pending`; scrapyd exited"
            f" (median of {len(results)}, range)",
            f"{spread(both, 2)} s; {spread(exits, 2)} s",
        ]
    )
    if problems:
        bench.summary.append(["**problems** of the shutdown rounds", str(len(problems))])


# -- main -----------------------------------------------------------------------------------------


def polls(text: str) -> list[float]:
    values = [float(x) for x in text.split(",")]
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("poll intervals above 0")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run")
    parser.add_argument("--urls", type=int, help=f"URLs of each batch crawl ({FULL['urls']})")
    parser.add_argument("--concurrency", type=int, default=16, help="of the batch crawls")
    parser.add_argument("--rounds", type=int, help=f"rounds of the 3 crawls ({FULL['rounds']})")
    parser.add_argument("--polls", type=polls, default=polls("0.5,5"), help="poll_intervals")
    parser.add_argument("--cycles", type=int, help=f"pause cycles per node ({FULL['cycles']})")
    parser.add_argument("--shutdown-rounds", type=int, help=f"SIGTERMs ({FULL['shutdown_rounds']})")
    parser.add_argument(
        "--documents",
        default="/pages/0?links=3&max=200&docs=2&delay=0.2",
        help="the documents job's start page on the local site",
    )
    parser.add_argument("--doc-concurrency", type=int, default=2, help="of the documents jobs")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' directories")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = {int(p) for p in args.parts.split(",")}
    check(args.urls >= 1 and args.rounds >= 1 and args.cycles >= 1, "nothing to measure")
    check(pages_of(args.documents) >= MARGIN + 2 * PROGRESS, "--documents: too few pages")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    command = shlex.join([*COMMAND.split(), *sys.argv[1:]])
    started = time.perf_counter()
    code, digest = code_state()
    print(
        f"# `flock {LOCK} {command}`\n\n{lock_state()}\n\nMachine: {machine()}; {load()}\n"
        f"\nCode: {code}\n"
    )

    root = Path(tempfile.mkdtemp(prefix="bench-pause-"))
    bench = None
    timings: list[str] = []
    try:
        with local_site() as site:
            bench = Bench(args, root, site, random.Random(7))  # noqa: S311
            sections = [
                (1, "1. the crawl's cost of being pausable", crawl_section),
                (2, "2. pause and resume latency on a node", latency_section),
                (3, "3. a node's shutdown", shutdown_section),
            ]
            for number, name, section in sections:
                if number not in parts:
                    continue
                clock = time.perf_counter()
                print(f"## {name}\n")
                section(bench)
                timings.append(f"part {number} {time.perf_counter() - clock:.0f} s")
                print()
    finally:
        if bench is not None:
            bench.cleanup()
        if args.keep:
            print(f"\nThe directories: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    elapsed = time.perf_counter() - started
    print(f"## Summary\n\n`flock {LOCK} {command}` ({elapsed:.0f} s: {', '.join(timings)})\n")
    print(f"Machine: {machine()}; end: {load()}\n")
    print(f"Code: {code}", end="")
    if code_state()[1] != digest:
        print(" — **changed during the run**: its figures mix versions", end="")
    print("\n")
    print(table(["measure", "result"], bench.summary))


if __name__ == "__main__":
    main()
