"""Webhooks: how fast the outbox is delivered, and what webhooks cost a crawl.

Run by hand, alone on the machine, under the benchmarks' lock:
``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_webhooks
[--events 1000] [--rounds 5] [--node-events 1000] [--node-rounds 1]
[--crawl-rounds 10] [--pages 200] [--delay 0.05] [--no-postgres] [--quick]``.
Some 12 minutes with the defaults on 2 CPUs, most of it the node rounds
(4 minutes each for 1,000 events); ``--quick`` is a smoke run of a minute.

Delivery throughput. A store is filled with ``--events`` pending deliveries
to the test receiver (``tests/webhook_receiver.py``, a threaded HTTP server
that verifies every Standard Webhooks signature): ``--events`` / 2 jobs
started and ended through the store API with ``webhooks=[receiver]``, each
writing ``job.started`` and ``job.completed`` into the outbox with its status
change. Then:

- one ``WebhookSender`` in one thread (``deliver_due(50)`` in a loop until
  it returns nothing; it claims each delivery just before sending it), the
  receiver in the same process (a thread of its own), ``--rounds`` rounds,
  each on a new store; the deliveries per second are the events over the
  loop's wall time. Beside it, the HTTP round trip of an attempt
  (``Attempt.duration_ms``) against the whole time per delivery (claim,
  signing, POST, the attempt's write).
- a real Scrapyd node (``tests/scrapyd_node.py``, the shipped scrapyd.conf
  with ``webhook_secret``) whose store was filled before it starts: its
  ``WebhookDelivery`` loop (a ``LoopingCall`` every 1 s claiming up to 4
  deliveries, sent by a pool of 4 threads) delivers the outbox. Timed from
  ``node.start()`` to the receiver's last acceptance; the drain rate is
  over the first to the last acceptance (the node's start-up excluded).
  The acceptances come in bursts (less than 0.3 s apart), one a claim:
  their size and the time between them show what bounds the rate.

On SQLite, then on PostgreSQL (a throwaway server, ``tests/postgres.py``,
fsync off) unless ``--no-postgres`` or it is not installed. Every round is
checked: each event id accepted exactly once, every signature verified,
every job's two events, and the store's outbox all ``delivered``.

Crawl overhead. The same ``scrapy crawl batch`` job (``--pages`` URLs of the
local site, ``/slow?delay=--delay`` each, or ``/pages/N`` with ``--delay 0``;
the project's concurrency, 8 requests per domain) runs three ways, rotated
every round for ``--crawl-rounds`` rounds: without webhooks; with
``JOBSTATUS_WEBHOOKS`` = a receiver that answers 200 and
``JOBSTATUS_WEBHOOK_SECRET``; with a receiver that never answers (the
default ``JOBSTATUS_WEBHOOK_TIMEOUT`` and ``JOBSTATUS_WEBHOOK_WAIT``, 10 s
each). For each: the wall time of the process (start to exit), the job's
``processing_time`` from the store (the job's start to its final status,
written before the crawl waits for its deliveries), and the CPU time of the
process (user + system). Reported as the median of the per-round ratios
to the run without webhooks, with their range. Checked: every job
``completed`` with all its pages; with webhooks, both events accepted once
each before the process exits and nothing left in the outbox; with the
receiver that hangs, both deliveries left in the outbox for ``scrapy
jobnotify`` and said so in the log.

Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._store import open_store
from scrapy_jobstatus._webhooks import WebhookPolicy, WebhookSender
from tests.benchmarks.bench_extension import load, machine
from tests.helpers import ROOT, crawl_command, local_site
from tests.scrapyd_node import ScrapydNode
from tests.webhook_receiver import SECRET, Receiver, webhook_receiver

COMMAND = "python -m tests.benchmarks.bench_webhooks"
EVENTS_PER_JOB = ("job.started", "job.completed")
# The crawl sides, in the order of the first round.
SIDES = ("off", "on", "hang")
SIDE_NAMES = {
    "off": "no webhooks",
    "on": "webhooks, receiver answers",
    "hang": "webhooks, receiver hangs",
}


# -- figures ------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 3) -> str:
    """The median, with the range when there are several values."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def bursts(times: list[float], gap: float = 0.3) -> list[tuple[float, int]]:
    """Acceptances close together (less than ``gap`` apart), as (first
    time, how many): one burst per claim of the node's delivery loop."""
    found: list[tuple[float, int]] = []
    last = None
    for at in sorted(times):
        if last is not None and at - last < gap:
            found[-1] = (found[-1][0], found[-1][1] + 1)
        else:
            found.append((at, 1))
        last = at
    return found


# -- the outbox --------------------------------------------------------------------------


def fill(location: str, url: str, events: int, tag: str) -> tuple[list[str], float]:
    """``events`` / 2 jobs started and ended through the store API, each
    writing its two events to the outbox for ``url``; the job ids and the
    seconds the writes took."""
    store = open_store(location, node="bench-fill")
    jobs = [f"{tag}-{number:05d}" for number in range(events // len(EVENTS_PER_JOB))]
    started = time.perf_counter()
    try:
        for job_id in jobs:
            now = time.time()
            state = JobState(
                job_id=job_id,
                spider="batch",
                project="crawler",
                node="bench-fill",
                status=JobStatus.RUNNING,
                pid=1,
                interval=1.0,
                created_at=now,
                started_at=now,
                updated_at=now,
                webhooks=[url],
            )
            assert store.start_job(state).started, job_id
            assert store.end_job(job_id, JobStatus.COMPLETED, "done", unstarted=False), job_id
        took = time.perf_counter() - started
        counts = store.delivery_counts()
        assert counts == {"pending": len(jobs) * len(EVENTS_PER_JOB)}, counts
    finally:
        store.close()
    return jobs, took


def check_received(receiver: Receiver, jobs: list[str], location: str) -> list[str]:
    """What differs from every event of ``jobs`` accepted exactly once,
    verified, and the outbox all delivered."""
    problems = []
    with receiver.lock:
        received = list(receiver.received)
    unverified = sum(not r.verified for r in received)
    if unverified:
        problems.append(f"{unverified} deliveries failed the signature check")
    accepted = [r for r in received if r.verified and 200 <= (r.answered or 0) < 300]
    expected = len(jobs) * len(EVENTS_PER_JOB)
    twice = sum(1 for n in Counter(r.event_id for r in accepted).values() if n > 1)
    if twice:
        problems.append(f"{twice} event ids accepted more than once")
    if len(accepted) != expected:
        problems.append(f"{len(accepted)} accepted, expected {expected}")
    types: dict[str, list[str]] = {job: [] for job in jobs}
    for r in accepted:
        payload = r.payload
        types.setdefault(payload["data"]["job_id"], []).append(payload["type"])
    wrong = [job for job, seen in types.items() if sorted(seen) != sorted(EVENTS_PER_JOB)]
    if wrong:
        problems.append(f"{len(wrong)} jobs without exactly their two events, e.g. {wrong[0]}")
    store = open_store(location, readonly=True)
    try:
        counts = store.delivery_counts()
    finally:
        store.close()
    if counts != {"delivered": expected}:
        problems.append(f"outbox {counts}, expected {expected} delivered")
    return problems


@contextmanager
def store_location(kind: str, workdir: Path, tag: str, server: Any) -> Iterator[str]:
    """A new, empty store: a SQLite file, or a database of the server."""
    if kind == "sqlite":
        yield str(workdir / f"{tag}.sqlite3")
    else:
        with server.database() as url:
            yield url


# -- one WebhookSender in one thread ---------------------------------------------------------


def sender_round(kind: str, events: int, workdir: Path, tag: str, server: Any) -> dict[str, Any]:
    with webhook_receiver() as receiver, store_location(kind, workdir, tag, server) as location:
        jobs, filled = fill(location, receiver.url, events, tag)
        sender = WebhookSender(location, SECRET, WebhookPolicy())
        round_trips: list[int] = []
        try:
            started = time.perf_counter()
            while attempts := sender.deliver_due(limit=50):
                round_trips += [a.duration_ms for a in attempts]
            took = time.perf_counter() - started
        finally:
            sender.close()
        problems = check_received(receiver, jobs, location)
    return {
        "events": len(jobs) * len(EVENTS_PER_JOB),
        "fill": filled,
        "jobs": len(jobs),
        "seconds": took,
        "rate": len(round_trips) / took,
        "ms_per_delivery": took * 1000 / max(1, len(round_trips)),
        "round_trip_ms": statistics.median(round_trips) if round_trips else float("nan"),
        "problems": problems,
    }


# -- a Scrapyd node's delivery loop -------------------------------------------------------------


def node_round(
    kind: str, events: int, workdir: Path, tag: str, server: Any, timeout: float
) -> dict[str, Any]:
    with webhook_receiver() as receiver, store_location(kind, workdir, tag, server) as url:
        jobstatus = {"webhook_secret": SECRET}
        if kind != "sqlite":
            jobstatus["db"] = url
        node = ScrapydNode(workdir / tag, jobstatus=jobstatus)
        location = url if kind != "sqlite" else str(node.db)
        jobs, filled = fill(location, receiver.url, events, tag)
        expected = len(jobs) * len(EVENTS_PER_JOB)
        started = time.time()
        up = 0.0
        try:
            node.start()
            up = time.time() - started
            deadline = time.monotonic() + timeout
            shown = time.monotonic()
            while len(receiver.accepted()) < expected and time.monotonic() < deadline:
                time.sleep(0.1)
                if time.monotonic() - shown >= 30:
                    shown = time.monotonic()
                    print(
                        f"  ... {len(receiver.accepted())} of {expected} accepted after "
                        f"{time.time() - started:.0f} s",
                        flush=True,
                    )
            # A moment more: a delivery made twice would show now.
            time.sleep(1.5)
        finally:
            node.stop()
        times = sorted(r.at for r in receiver.accepted())
        problems = check_received(receiver, jobs, location)
        log = node.log.read_text(errors="replace")
    problems += [
        line[:200]
        for line in log.splitlines()
        if "Could not deliver webhooks" in line or "Traceback" in line
    ][:3]
    if len(times) < expected:
        problems.append(f"timed out after {timeout:.0f} s")
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    found = bursts(times)
    starts = [at for at, _ in found]
    sizes = [size for _, size in found]
    return {
        "events": expected,
        "fill": filled,
        "up": up,
        "first": times[0] - started if times else float("nan"),
        "total": times[-1] - started if times else float("nan"),
        "span": span,
        "rate": (len(times) - 1) / span if len(times) > 1 else float("nan"),
        "bursts": len(found),
        "burst_size": statistics.median(sizes) if sizes else float("nan"),
        "burst_max": max(sizes, default=0),
        "burst_gap": statistics.median(b - a for a, b in itertools.pairwise(starts))
        if len(starts) > 1
        else float("nan"),
        "problems": problems,
    }


# -- crawls --------------------------------------------------------------------------------


def crawl_urls(site: str, pages: int, delay: float) -> str:
    if delay:
        return ",".join(f"{site}/slow?delay={delay:g}&n={n}" for n in range(pages))
    return ",".join(f"{site}/pages/{n}?links=0" for n in range(pages))


def crawl(
    side: str,
    urls: str,
    pages: int,
    db: Path,
    workdir: Path,
    job: str,
    receivers: dict[str, Receiver],
) -> dict[str, Any]:
    """One ``scrapy crawl batch`` process; its wall and CPU time, the job's
    processing_time, and what differs from what it should be."""
    log = workdir / f"{job}.log"
    settings = {"LOG_FILE": str(log), "LOGSTATS_INTERVAL": "0"}
    if side != "off":
        settings["JOBSTATUS_WEBHOOKS"] = receivers[side].url
        settings["JOBSTATUS_WEBHOOK_SECRET"] = SECRET
    command = crawl_command(
        "batch",
        db,
        args={"urls": urls, "_job": job},
        settings=settings,
        output=workdir / f"{job}.jl",
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = log.read_text() if log.exists() else ""
    problems = []
    if process.returncode != 0:
        problems.append(f"exit {process.returncode}: {process.stderr[-500:]}")
    store = open_store(db, readonly=True)
    try:
        document = store.document(job) or {}
        left = store.count_undelivered(job)
        deliveries = len(store.webhook_log(job))
    finally:
        store.close()
    if document.get("status") != "completed":
        problems.append(f"status {document.get('status')!r}")
    if document.get("total_pages_crawled") != pages:
        problems.append(f"{document.get('total_pages_crawled')} pages, expected {pages}")
    if side == "off" and deliveries:
        problems.append(f"{deliveries} deliveries without webhooks")
    if side == "on":
        accepted = [r for r in receivers["on"].accepted() if r.payload["data"]["job_id"] == job]
        types = sorted(r.payload["type"] for r in accepted)
        if types != sorted(EVENTS_PER_JOB) or left:
            problems.append(f"accepted {types}, {left} left in the outbox")
    if side == "hang":
        if left != len(EVENTS_PER_JOB):
            problems.append(f"{left} left in the outbox, expected {len(EVENTS_PER_JOB)}")
        if "left for scrapy jobnotify" not in text:
            problems.append("no 'left for scrapy jobnotify' in the log")
    errors = [line for line in text.splitlines() if "] ERROR:" in line]
    problems += errors[:3]
    for path in (log, workdir / f"{job}.jl"):
        path.unlink(missing_ok=True)
    return {
        "wall": wall,
        "cpu": cpu,
        "processing": document.get("processing_time") or float("nan"),
        "problems": problems,
    }


def crawl_rounds(args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    db = workdir / "crawls.sqlite3"
    with (
        local_site() as site,
        webhook_receiver() as answering,
        webhook_receiver() as hanging,
    ):
        hanging.answer = lambda attempt: None
        receivers = {"on": answering, "hang": hanging}
        urls = crawl_urls(site, args.pages, args.delay)

        def run(side: str, job: str) -> dict[str, Any]:
            return crawl(side, urls, args.pages, db, workdir, job, receivers)

        # Warm-up: imports, disk caches, the site, the store's creation.
        for side in ("off", "on"):
            run(side, f"warmup-{side}")
        for round_ in range(args.crawl_rounds):
            shift = round_ % len(SIDES)
            for side in SIDES[shift:] + SIDES[:shift]:
                result = run(side, f"r{round_}-{side}")
                results[side].append(result)
                print(
                    f"crawl round {round_ + 1:2d} {side:4}: wall {result['wall']:.2f} s, "
                    f"processing_time {result['processing']:.3f} s, CPU {result['cpu']:.2f} s"
                    + (f", PROBLEMS {result['problems']}" if result["problems"] else ""),
                    flush=True,
                )
    return results


# -- report ----------------------------------------------------------------------------------


def ratios(results: dict[str, list[dict[str, Any]]], side: str, key: str) -> list[float]:
    return [on[key] / off[key] for on, off in zip(results[side], results["off"], strict=True)]


def report(
    command: str,
    senders: dict[str, list[dict[str, Any]]],
    nodes: dict[str, list[dict[str, Any]]],
    crawls: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
) -> None:
    print(f"\nMachine: {machine()}; end: {load()}.\n`flock /tmp/jobstatus-bench.lock {command}`")
    problems = [
        (f"{part} {kind} round {i + 1}", p)
        for part, runs in (("sender", senders), ("node", nodes))
        for kind, rounds in runs.items()
        for i, r in enumerate(rounds)
        for p in r["problems"]
    ]
    problems += [
        (f"crawl {side} round {i + 1}", p)
        for side, rounds in crawls.items()
        for i, r in enumerate(rounds)
        for p in r["problems"]
    ]

    print("\n## Delivery throughput (median over rounds, range in brackets)\n")
    print("| Deliverer | Store | Rounds × events | Deliveries/s | Details |")
    print("|---|---|---:|---:|---|")
    for kind, rounds in senders.items():
        rate = spread([r["rate"] for r in rounds], 0)
        fills = [r["jobs"] / r["fill"] for r in rounds]
        print(
            f"| one `WebhookSender`, one thread (`deliver_due(50)` loop) | {kind} | "
            f"{len(rounds)} × {rounds[0]['events']:,} | **{rate}**"
            f" | {spread([r['ms_per_delivery'] for r in rounds], 2)} ms per delivery, of which "
            f"the HTTP round trip {spread([r['round_trip_ms'] for r in rounds], 1)} ms "
            f"(median attempt); fill: {spread(fills, 0)} jobs/s started + ended |"
        )
    for kind, rounds in nodes.items():
        rate = spread([r["rate"] for r in rounds], 2)
        print(
            f"| Scrapyd node, `WebhookDelivery` loop | {kind} | "
            f"{len(rounds)} × {rounds[0]['events']:,} | **{rate}**"
            f" (first to last acceptance) | all {rounds[0]['events']:,} accepted "
            f"{spread([r['total'] for r in rounds], 1)} s after `start()` (node up in "
            f"{spread([r['up'] for r in rounds], 1)} s, first acceptance at "
            f"{spread([r['first'] for r in rounds], 1)} s); in bursts (acceptances < 0.3 s "
            f"apart) of {spread([r['burst_size'] for r in rounds], 0)} deliveries (at most "
            f"{max(r['burst_max'] for r in rounds)}), "
            f"{spread([r['burst_gap'] for r in rounds], 3)} s apart (median) |"
        )
    print(
        "\nEvery round checked: each event id accepted exactly once, signatures verified, "
        "each job's two events, the outbox all delivered."
    )

    if crawls["off"]:
        off = crawls["off"]
        print(
            f"\n## Crawl overhead: `scrapy crawl batch`, {args.pages} URLs"
            + (f" (`/slow?delay={args.delay:g}`)" if args.delay else " (`/pages/N`)")
            + f", {len(off)} rounds, sides rotated\n"
        )
        print(
            "| Side | Process wall time | Job processing_time | Process CPU | "
            "Wall / no webhooks | processing_time / no webhooks | CPU / no webhooks |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for side in SIDES:
            runs = crawls[side]
            cells = [
                f"{spread([r['wall'] for r in runs], 2)} s",
                f"{spread([r['processing'] for r in runs], 3)} s",
                f"{spread([r['cpu'] for r in runs], 2)} s",
            ]
            if side == "off":
                cells += ["–", "–", "–"]
            else:
                cells += [
                    f"**{spread(ratios(crawls, side, key))}**"
                    for key in ("wall", "processing", "cpu")
                ]
            print(f"| {SIDE_NAMES[side]} | {' | '.join(cells)} |")
        extra = [h["wall"] - o["wall"] for h, o in zip(crawls["hang"], off, strict=True)]
        print(
            f"\nReceiver that hangs: the process exits {spread(extra, 2)} s later than "
            "without webhooks (JOBSTATUS_WEBHOOK_WAIT 10 s bounds it); both events left "
            "in the outbox for `scrapy jobnotify`."
        )
    print(f"\nProblems: {len(problems)}")
    for where, problem in problems[:20]:
        print(f"- {where}: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="deliveries per sender round")
    parser.add_argument("--rounds", type=int, default=5, help="sender rounds per store")
    parser.add_argument("--node-events", type=int, default=1000, help="deliveries per node round")
    parser.add_argument("--node-rounds", type=int, default=1, help="node rounds per store")
    parser.add_argument("--crawl-rounds", type=int, default=10, help="rounds of the 3 crawls")
    parser.add_argument("--pages", type=int, default=200, help="URLs of the batch crawl")
    parser.add_argument("--delay", type=float, default=0.05, help="delay of each page (s)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.node_events, args.node_rounds = 40, 2, 40, 1
        args.crawl_rounds, args.pages = 2, 50
    command = (
        f"{COMMAND} --events {args.events} --rounds {args.rounds} --node-events "
        f"{args.node_events} --node-rounds {args.node_rounds} --crawl-rounds "
        f"{args.crawl_rounds} --pages {args.pages} --delay {args.delay:g}"
        + (" --no-postgres" if args.no_postgres else "")
    )
    print(f"{command}\n{machine()}\nstart: {load()}", flush=True)
    began = time.monotonic()

    kinds = ["sqlite"]
    server_context: Any = nullcontext(None)
    if not args.no_postgres:
        from tests.postgres import PostgresNotInstalled, find_binaries, postgres_server

        try:
            find_binaries()
            kinds.append("postgresql")
            server_context = postgres_server()
        except PostgresNotInstalled as e:
            print(f"PostgreSQL skipped: {e}", flush=True)

    senders: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    nodes: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    # The node delivers 4 a second at best, and starts in some seconds.
    node_timeout = args.node_events / 2 + 120
    with server_context as server, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for kind in kinds:
            sender_round(kind, 20, workdir, f"warmup-{kind}", server)
            for round_ in range(args.rounds):
                result = sender_round(kind, args.events, workdir, f"s{round_}-{kind}", server)
                senders[kind].append(result)
                print(
                    f"sender {kind} round {round_ + 1}: {result['events']} in "
                    f"{result['seconds']:.2f} s = {result['rate']:.0f}/s (fill "
                    f"{result['fill']:.2f} s)"
                    + (f", PROBLEMS {result['problems']}" if result["problems"] else ""),
                    flush=True,
                )
        for kind in kinds:
            for round_ in range(args.node_rounds):
                tag = f"n{round_}-{kind}"
                result = node_round(kind, args.node_events, workdir, tag, server, node_timeout)
                nodes[kind].append(result)
                print(
                    f"node {kind} round {round_ + 1}: {result['events']} accepted "
                    f"{result['total']:.1f} s after start, {result['rate']:.2f}/s from the "
                    f"first to the last, in {result['bursts']} bursts of {result['burst_size']:g} "
                    f"(at most {result['burst_max']}) {result['burst_gap']:.3f} s apart (medians)"
                    + (f", PROBLEMS {result['problems']}" if result["problems"] else ""),
                    flush=True,
                )
        crawls = crawl_rounds(args, workdir)
    report(command, senders, nodes, crawls, args)
    print(f"\nThe benchmark took {(time.monotonic() - began) / 60:.1f} minutes.")


if __name__ == "__main__":
    main()
