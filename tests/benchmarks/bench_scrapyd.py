"""What the Scrapyd job services cost on a node whose store holds many jobs.

Run by hand: ``python -m tests.benchmarks.bench_scrapyd [--jobs 100000] [--errors 100000]
[--rounds 10]``. Measurement runs take the lock that the other benchmarks take, so that two
never run at once: ``flock /tmp/jobstatus-bench.lock python -m tests.benchmarks.bench_scrapyd``.

The store of a real ``scrapyd`` (shipped scrapyd.conf, deployed egg) is filled before
scrapyd starts with ``--jobs`` finished jobs as crawls leave them (projects p1..p3, spiders
batch/documents/listings, mostly completed, some failed or cancelled, six or seven history
events each, no errors) and with one more job holding ``--errors`` errors. Then:

1. store size: bytes per job, measured before the errors job is added (the file after
   ``PRAGMA wal_checkpoint(TRUNCATE)``), and bytes per error, what that job adds;
2. latency (median, p99) of ``jobs.json`` pages of 50 (filters, a deep offset, a deep page
   reached through ``next`` cursors, and two filters on two columns) beside ``jobstatus.json``
   and Scrapyd's ``status.json`` and ``listjobs.json``: one client on a kept-alive
   connection, the endpoints interleaved, every answer's code and each page's content checked;
3. ``joberrors.json`` of the errors job, JSON and CSV: download time, the answer checked
   (it parses, it holds every error), and the growth of scrapyd's peak RSS (``VmHWM``, reset
   through ``/proc/PID/clear_refs`` before each download, scrapyd restarted before each
   format); and the same for a client that stalls after the first 64 KiB, as a slow network
   or a busy browser does;
4. ``jobstatus.json`` latency while another client process loads the node (a ``jobs.json``
   loop; ``joberrors.json`` streamed over and over, JSON or CSV): idle and loaded phases
   alternate, each loaded phase compared with the idle phases around it;
5. cancel latency of a running job, graceful and forced.

The machine is shared and small: timings are reported, never asserted, as medians and p99
over many repetitions. Answers are checked: a benchmark of a broken answer is worthless.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import multiprocessing as mp
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from scrapy_jobstatus import open_store
from scrapy_jobstatus._model import HistoryEvent, JobError, JobState, JobStatus
from scrapy_jobstatus._rows import row_values
from scrapy_jobstatus._sqlstore import INSERT
from scrapy_jobstatus._store import JobStore
from scrapy_jobstatus.scrapyd.webservice import ERROR_FIELDS
from tests.helpers import local_site, wait_for
from tests.scrapyd_node import ScrapydNode, slow_urls, unique

PROJECTS = ("p1", "p2", "p3")
SPIDERS = ("batch", "documents", "listings")
# Mostly completed, as on a production node.
STATUSES = (JobStatus.COMPLETED,) * 8 + (JobStatus.FAILED, JobStatus.CANCELLED)
ERRORS_JOB = "bench-errors"
SPACING = 20.0  # seconds between the creation of two jobs
PAGE = 50
CURSOR_PAGES = 1000  # how deep the cursor walk goes
STALL = 3.0  # seconds the stalling client waits after its first 64 KiB
SLOW = 2.0  # seconds each page of a gracefully cancelled job takes
FORCED_SLOW = 10.0  # ... of a job cancelled with force=1: it must not wait for them

Call = tuple[str, dict[str, str]]


class BenchmarkError(AssertionError):
    """An answer is not what the benchmark measures: its figures would mean nothing."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise BenchmarkError(message)


# -- the store -------------------------------------------------------------------------------


def finished_job(rng: random.Random, created: float, node: str) -> tuple[JobState, list[Any]]:
    """A finished job and its history, as a crawl scheduled on Scrapyd leaves them."""
    status = rng.choice(STATUSES)
    started = created + rng.uniform(0.2, 3)
    ended = started + rng.uniform(5, 900)
    pages = rng.randint(1, 3000)
    failed = rng.randint(0, pages // 20)
    site = f"https://site{rng.randint(1, 500)}.example.com/docs/"
    pid = rng.randint(1000, 4_000_000)
    state = JobState(
        job_id=f"{rng.getrandbits(128):032x}",  # Scrapyd's ids: uuid1 hex, no order
        project=rng.choice(PROJECTS),
        spider=rng.choice(SPIDERS),
        node=node,
        status=status,
        created_at=created,
        started_at=started,
        completed_at=ended,
        updated_at=ended,
        timeout=1800.0,
        stages_completed=["fetch", "finalizing"],
        total_pages_crawled=pages,
        total_documents_found=pages - failed,
        responses_failed=failed,
        responses_finished=pages,
        args={"url": site},
        pid=pid,
        interval=1.0,
    )
    history = [
        HistoryEvent("opened", started, "running", 0, f"pid {pid}"),
        HistoryEvent("stage fetch", started + 0.01, "running", 2),
        HistoryEvent("first response", started + 0.4, "running", 9, site),
    ]
    if status is JobStatus.COMPLETED:
        state.message, state.completion_reason, state.close_reason = (
            "The job completed.",
            "done",
            "finished",
        )
        state.progress = 100.0
    elif status is JobStatus.FAILED:
        state.error_message = f"failure ratio {failed / pages:.2f} above the limit"
        state.message = f"The job failed: {state.error_message}"
        state.completion_reason, state.close_reason = "error", "failure_ratio"
        state.progress = round(rng.uniform(0, 100), 1)
    else:
        state.message, state.completion_reason, state.close_reason = (
            "The job was cancelled.",
            "cancelled",
            "cancelled",
        )
        state.cancel_requested_at = ended - 2
        state.progress = round(rng.uniform(0, 100), 1)
        history.append(
            HistoryEvent("cancel requested", ended - 2, "cancelling", 0, "by jobcancel.json")
        )
    history += [
        HistoryEvent("closing", ended - 0.5, "running", 3, f"close reason {state.close_reason}"),
        HistoryEvent("stage finalizing", ended - 0.4, "running", 0),
        HistoryEvent("finished", ended, str(status), 0, state.message),
    ]
    return state, history


@dataclass
class Filled:
    ids: list[str] = field(default_factory=list)
    # (project, spider, status) -> jobs: what jobs.json's totals must be
    counts: Counter[tuple[str | None, str | None, str]] = field(default_factory=Counter)
    base: float = 0.0

    def total(
        self, project: str | None = None, spider: str | None = None, status: str | None = None
    ) -> int:
        return sum(
            n
            for (p, s, st), n in self.counts.items()
            if project in (None, p) and spider in (None, s) and status in (None, st)
        )


def fill_jobs(store: JobStore, count: int, seed: int = 1) -> Filled:
    """``count`` finished jobs in one transaction: seconds, where a save each takes minutes."""
    rng = random.Random(seed)  # noqa: S311 (reproducible data, not secrets)
    filled = Filled(base=time.time() - count * SPACING - 3600)
    conn = store.conn  # type: ignore[attr-defined]
    conn.execute("BEGIN")
    try:
        for i in range(count):
            created = filled.base + i * SPACING + rng.uniform(0, SPACING / 2)
            state, history = finished_job(rng, created, store.node)
            key = conn.execute(INSERT, row_values(state)).fetchone()["id"]
            store._add_events(conn, key, store._event_rows(history))  # type: ignore[attr-defined]
            filled.ids.append(state.job_id)
            filled.counts[(state.project, state.spider, str(state.status))] += 1
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return filled


def fill_errors(store: JobStore, filled: Filled, count: int) -> None:
    """The job with ``count`` errors, written through the store's own API, among the others."""
    created = filled.base + len(filled.ids) // 2 * SPACING + SPACING * 0.75
    state = JobState(
        job_id=ERRORS_JOB,
        project="p1",
        spider="documents",
        node=store.node,
        status=JobStatus.RUNNING,
        created_at=created,
        started_at=created + 1,
        updated_at=created + 1,
        args={"url": "https://site7.example.com/docs/"},
        pid=4242,
        interval=1.0,
    )
    check(store.start_job(state).started, "the errors job did not start")
    kinds = [
        ("http_error", "HTTP 503 Service Unavailable", 503, True),
        ("http_error", "HTTP 404 Not Found", 404, False),
        ("timeout", "Getting the page took longer than 180.0 seconds.", None, True),
        ("connection_error", "Connection was refused by other side: 111.", None, True),
    ]
    errors = [
        JobError(
            error_type=kind,
            error_message=message,
            stage="fetch",
            page_url=f"https://site7.example.com/docs/page-{i}.html",
            http_status=code,
            timestamp=created + 2 + i * 0.01,
            is_recoverable=recoverable,
        )
        for i, (kind, message, code, recoverable) in ((i, kinds[i % 4]) for i in range(count))
    ]
    state.status = JobStatus.FAILED
    state.completed_at = state.updated_at = created + 3 + count * 0.01
    state.message, state.error_message = "The job failed: too many errors", "too many errors"
    state.completion_reason, state.close_reason = "error", "failure_ratio"
    state.total_pages_crawled = state.responses_finished = count + 100
    state.responses_failed = count
    state.error_count = count  # the store keeps the total on the row
    events = [
        HistoryEvent("opened", created + 1, "running", 0, "pid 4242"),
        HistoryEvent("finished", state.completed_at, "failed", 0, state.message),
    ]
    check(store.save(state, errors, events).written, "the errors job was not written")
    filled.counts[("p1", "documents", "failed")] += 1


def checkpointed_size(path: Path) -> int:
    """The store file's size with the WAL folded into it and emptied."""
    conn = sqlite3.connect(path)
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    check(busy == 0 and (not wal.exists() or wal.stat().st_size == 0), "checkpoint incomplete")
    return path.stat().st_size


def size_by_object(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        return dict(rows.fetchall())
    except sqlite3.OperationalError:  # SQLite built without dbstat
        return {}
    finally:
        conn.close()


def row_sizes(path: Path, where: str = "1", params: tuple[Any, ...] = ()) -> tuple[float, float]:
    """Mean length of the state JSON, and mean events, of the jobs matching ``where``."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        events = "(SELECT COUNT(*) FROM events WHERE job = jobs.id)"
        query = f"SELECT AVG(LENGTH(state)), AVG({events}) FROM jobs WHERE {where}"  # noqa: S608
        row = conn.execute(query, params).fetchone()
    finally:
        conn.close()
    return row[0] or 0.0, row[1] or 0.0


# -- HTTP ------------------------------------------------------------------------------------


def url(path: str, params: dict[str, str] | None = None) -> str:
    return "/" + path + ("?" + urlencode(params) if params else "")


class Client:
    """One kept-alive HTTP connection to the node."""

    def __init__(self, port: int, timeout: float = 120):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        self.conn.request("GET", url(path, params))
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        code, body = self.get(path, params)
        check(code == 200, f"{url(path, params)}: HTTP {code}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


def timed(client: Client, call: Call) -> float:
    start = time.perf_counter()
    code, body = client.get(*call)
    elapsed = time.perf_counter() - start
    check(code == 200, f"{url(*call)}: HTTP {code}: {body[:300]!r}")
    return elapsed


def ms(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) in milliseconds."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- 2. jobs.json and the other endpoints ----------------------------------------------------


def walk_cursor(client: Client, pages: int) -> tuple[str, list[float]]:
    """Follow ``next`` ``pages`` pages in: the cursor of the page after, and each page's time."""
    cursor, times = None, []
    for _ in range(pages):
        start = time.perf_counter()
        page = client.json("jobs.json", {"cursor": cursor} if cursor else None)
        times.append(time.perf_counter() - start)
        check(len(page["jobs"]) == PAGE and page["next"], "the cursor walk ended early")
        cursor = page["next"]
    assert cursor is not None
    return cursor, times


def check_listing(client: Client, filled: Filled, params: dict[str, str]) -> None:
    """The page holds what the store does: the total, a full page, the filter, newest first."""
    page = client.json("jobs.json", params)
    where = {k: params.get(k) for k in ("project", "spider", "status")}
    total = filled.total(**where)
    offset = int(params.get("offset", 0))
    check(page["total"] == total, f"jobs.json {params}: total {page['total']}, not {total}")
    expected = PAGE if "cursor" in params else min(PAGE, total - offset)
    check(len(page["jobs"]) == expected, f"jobs.json {params}: {len(page['jobs'])} jobs")
    for job in page["jobs"]:
        for key, value in where.items():
            check(value in (None, job[key]), f"jobs.json {params}: {job['job_id']} {key}")
    created = [job["created_at"] for job in page["jobs"]]
    check(created == sorted(created, reverse=True), f"jobs.json {params}: not newest first")


def listings(jobs_total: int, cursor: str, depth: int) -> dict[str, dict[str, str]]:
    """The pages the targets name; the listing load asks for these."""
    return {
        "no filter": {},
        "`spider=documents`": {"spider": "documents"},
        "`project=p2&spider=listings&status=failed`": {
            "project": "p2",
            "spider": "listings",
            "status": "failed",
        },
        "`status=cancelled`": {"status": "cancelled"},
        f"`offset={max(0, jobs_total - 100)}`": {"offset": str(max(0, jobs_total - 100))},
        f"`cursor`, page {depth + 1:,} (job {depth * PAGE:,})": {"cursor": cursor},
    }


# Filters on two columns whose total no single-column index counts: the store counts them
# through one index and a table lookup for each job it holds.
EXTRA_LISTINGS = {
    "`project=p2&spider=listings`": {"project": "p2", "spider": "listings"},
    "`project=p2&spider=listings&status=completed`": {
        "project": "p2",
        "spider": "listings",
        "status": "completed",
    },
}


def latency(
    client: Client, calls: dict[str, Callable[[], Call]], requests: int, rng: random.Random
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for _ in range(requests):
        rng.shuffle(names)  # the endpoints interleaved: the noise spread over all
        for name in names:
            samples[name].append(timed(client, calls[name]()))
    return samples


# -- 3. joberrors.json -----------------------------------------------------------------------


def proc_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise BenchmarkError(f"no {name} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+, our own process)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def download(port: int, fmt: str, stall: float = 0.0) -> tuple[float, bytes]:
    """The whole error report; ``stall``: wait that long after the first 64 KiB."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        start = time.perf_counter()
        conn.request("GET", url("joberrors.json", {"job": ERRORS_JOB, "format": fmt}))
        response = conn.getresponse()
        check(response.status == 200, f"joberrors.json {fmt}: HTTP {response.status}")
        body = b""
        if stall:
            body = response.read(65536)
            time.sleep(stall)
        body += response.read()
        return time.perf_counter() - start, body
    finally:
        conn.close()


def check_report(fmt: str, body: bytes, errors: int) -> None:
    if fmt == "json":
        answer = json.loads(body)
        got = len(answer["errors"])
        check(answer["status"] == "ok", f"joberrors.json: status {answer['status']}")
        check(got == errors == answer["error_count"], f"joberrors.json: {got} errors")
        check(answer["job"]["error_count"] == errors, "joberrors.json: the job's error_count")
        ids = [e["error_id"] for e in answer["errors"]]
        check(ids == sorted(set(ids)), "joberrors.json: errors repeated or out of order")
    else:
        lines = body.count(b"\r\n")
        rows = list(csv.reader(io.StringIO(body.decode())))
        check(rows[0] == list(ERROR_FIELDS), f"joberrors.json csv: header {rows[0]}")
        check(lines == len(rows) == errors + 1, f"joberrors.json csv: {lines} lines")


@dataclass
class Download:
    fmt: str
    seconds: float
    mib: float
    growth_mib: float


def measure_download(pid: int, port: int, fmt: str, errors: int, stall: float = 0.0) -> Download:
    rss = proc_kib(pid, "VmRSS")
    peak = rss if reset_peak(pid) else proc_kib(pid, "VmHWM")
    seconds, body = download(port, fmt, stall)
    growth = proc_kib(pid, "VmHWM") - peak
    check_report(fmt, body, errors)
    return Download(fmt, seconds, len(body) / 2**20, growth / 1024)


# -- 4. jobstatus.json under load ------------------------------------------------------------

LOADS = {
    "listing": "a `jobs.json` loop (the table's queries)",
    "json": "`joberrors.json` streamed (JSON)",
    "csv": "`joberrors.json` streamed (CSV)",
}


def run_load(
    port: int,
    kind: str,
    queries: list[Call],
    go: Any,
    stop: Any,
    busy: Any,
    progress: Any,
    completed: Any,
) -> None:
    """Another client, in its own process: loads the node while ``go`` is set.

    A stream is cut as soon as ``go`` is cleared, so that an idle phase is idle; ``busy`` is
    set before ``go`` is read and cleared once nothing is asked of the node any more."""
    rng = random.Random(os.getpid())  # noqa: S311
    conn: http.client.HTTPConnection | None = None
    while not stop.is_set():
        busy.value = 1
        if not go.is_set():
            busy.value = 0
            go.wait(0.05)
            continue
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            if kind == "listing":
                conn.request("GET", url(*rng.choice(queries)))
                response = conn.getresponse()
                response.read()
                progress.value += 1
                completed.value += response.status == 200
                continue
            conn.request("GET", url("joberrors.json", {"job": ERRORS_JOB, "format": kind}))
            response = conn.getresponse()
            while True:
                chunk = response.read(65536)
                if not chunk:
                    completed.value += 1
                    break
                progress.value += len(chunk)
                if not go.is_set():
                    conn.close()  # the node stops the stream when the client goes
                    conn = None
                    break
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            conn = None
    busy.value = 0


class Load:
    """A loading client process, started once, switched on and off between phases."""

    def __init__(self, ctx: Any, port: int, kind: str, queries: list[Call]):
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.busy, self.progress, self.completed = (ctx.Value("q", 0) for _ in range(3))
        self.process = ctx.Process(
            target=run_load,
            args=(port, kind, queries, self.go, self.stop, self.busy, self.progress),
            kwargs={"completed": self.completed},
            daemon=True,
        )
        self.process.start()
        self.seconds = 0.0
        self.served = 0

    @contextmanager
    def on(self) -> Iterator[None]:
        before = self.progress.value
        self.go.set()
        # Measured only once the node serves the load: a request answered, or bytes streamed.
        wait_for(lambda: self.progress.value > before, timeout=60, what="the load to start")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.go.clear()
            wait_for(lambda: not self.busy.value, timeout=60, what="the load to stop")
            self.served += self.progress.value - before

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


@dataclass
class Phase:
    load: str | None
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def loaded_rounds(
    client: Client,
    ids: list[str],
    loads: dict[str, Load],
    rounds: int,
    samples: int,
    rng: random.Random,
) -> list[Phase]:
    """Idle and loaded phases alternated: idle, load, idle, load, ..., idle."""

    def measure(load: str | None) -> Phase:
        calls = [("jobstatus.json", {"job": rng.choice(ids)}) for _ in range(samples)]
        return Phase(load, [timed(client, call) for call in calls])

    phases = [measure(None)]
    for _ in range(rounds):
        kinds = list(loads)
        rng.shuffle(kinds)
        for kind in kinds:
            with loads[kind].on():
                phases.append(measure(kind))
            phases.append(measure(None))
    return phases


def ratios(phases: list[Phase], kind: str) -> list[float]:
    """Each loaded phase's median over the mean of the idle medians just before and after."""
    return [
        phase.median / statistics.mean([phases[i - 1].median, phases[i + 1].median])
        for i, phase in enumerate(phases)
        if phase.load == kind
    ]


# -- 5. cancel -------------------------------------------------------------------------------


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
    check(answer.code == 202, f"jobcancel.json: HTTP {answer.code}: {answer.body[:300]!r}")
    visible = None
    while True:
        document = node.status(job)
        now = time.perf_counter()
        if visible is None and document["status"] in ("cancelling", "cancelled"):
            visible = now - requested
        if not document["is_active"]:
            break
        time.sleep(0.01)
    check(document["status"] == "cancelled", f"cancelled job {job} is {document['status']}")
    taken_up = [e["timestamp"] for e in document["history"] if e["step"] == "cancel requested"]
    node.wait_idle()
    return {
        "visible": visible or 0.0,
        "taken_up": parse(taken_up[0]) - requested_wall if taken_up else float("nan"),
        "terminal": now - requested,
    }


# -- the run ---------------------------------------------------------------------------------

Row = list[str]


@dataclass
class Bench:
    """What the sections share: the node, what its store holds, the summary they add to."""

    args: argparse.Namespace
    node: ScrapydNode
    filled: Filled
    ids: list[str]
    rng: random.Random
    summary: list[Row]
    queries: dict[str, dict[str, str]] = field(default_factory=dict)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; load average {load}"
    )


def table(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    return "yes" if value <= target else "**no**"


def median_max(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):.2f}{unit} (max {max(values):.2f}{unit})"


def store_section(node: ScrapydNode, args: argparse.Namespace) -> tuple[Filled, list[Row]]:
    clock = time.perf_counter()
    store = open_store(node.db)  # the node's own store, before scrapyd starts
    filled = fill_jobs(store, args.jobs)
    store.close()
    # Sized before the errors job exists: a store of finished jobs without errors.
    jobs_size = checkpointed_size(node.db)
    objects = size_by_object(node.db)
    state_bytes, events_per_job = row_sizes(node.db)
    store = open_store(node.db)
    fill_errors(store, filled, args.errors)
    store.close()
    full_size = checkpointed_size(node.db)
    per_job = jobs_size / args.jobs
    per_error = (full_size - jobs_size) / args.errors
    print(
        f"Store filled in {time.perf_counter() - clock:.1f} s: {args.jobs:,} jobs"
        f" ({jobs_size / 2**20:.1f} MiB), then one job with {args.errors:,} errors"
        f" ({full_size / 2**20:.1f} MiB)\n"
    )
    rows = [[f"per finished job, no errors ({args.jobs:,} jobs)", f"{per_job:,.0f}"]]
    rows += [[f"… of which `{k}`", f"{v / args.jobs:,.0f}"] for k, v in objects.items() if v]
    rows.append([f"per error (one job with {args.errors:,})", f"{per_error:,.0f}"])
    print(table(["store file, after `wal_checkpoint(TRUNCATE)`", "bytes"], rows))
    print(f"\nA synthetic job: state JSON {state_bytes:.0f} B, {events_per_job:.1f} events.")
    return filled, [
        [
            "store: bytes per finished job without errors",
            f"{per_job:,.0f} B",
            "≤ 1,500 B",
            verdict(per_job, 1500),
        ],
        ["store: bytes per error", f"{per_error:,.0f} B", "", ""],
    ]


def real_crawls(node: ScrapydNode, site: str, filled: Filled) -> list[str]:
    """A few real crawls: the node works, and the synthetic jobs are compared with theirs."""
    real = [unique("real") for _ in range(3)]
    for job in real:
        answer = node.schedule(job=job, urls=f"{site}/sample/")
        check(answer.code == 200 and answer.json()["status"] == "ok", f"schedule.json: {answer}")
    for job in real:
        node.wait_status(job, "completed")
    node.wait_idle()
    marks = ", ".join("?" * len(real))
    state_bytes, events = row_sizes(node.db, f"job_id IN ({marks})", tuple(real))
    print(f"A real crawl's: state JSON {state_bytes:.0f} B, {events:.1f} events.")
    filled.counts[("crawler", "batch", "completed")] += len(real)
    return real


def latency_section(bench: Bench) -> None:
    args, rng, ids = bench.args, bench.rng, bench.ids
    client = Client(bench.node.port)
    depth = min(CURSOR_PAGES, len(ids) // PAGE - 2)
    cursor, walk = walk_cursor(client, depth)
    by_cursor = client.json("jobs.json", {"cursor": cursor})["jobs"]
    by_offset = client.json("jobs.json", {"offset": str(depth * PAGE)})["jobs"]
    check(
        [j["job_id"] for j in by_cursor] == [j["job_id"] for j in by_offset],
        "the cursor's page is not the offset's",
    )
    bench.queries = listings(len(ids), cursor, depth)
    queries = bench.queries | EXTRA_LISTINGS
    for params in queries.values():
        check_listing(client, bench.filled, params)
    calls: dict[str, Callable[[], Call]] = {
        f"`jobs.json` {name}": (lambda p=params: ("jobs.json", p))
        for name, params in queries.items()
    }
    calls |= {
        "`jobstatus.json` (a random job)": lambda: ("jobstatus.json", {"job": rng.choice(ids)}),
        f"`jobstatus.json` (the job with {args.errors:,} errors)": lambda: (
            "jobstatus.json",
            {"job": ERRORS_JOB},
        ),
        "`status.json` (Scrapyd's, a random job)": lambda: (
            "status.json",
            {"job": rng.choice(ids)},
        ),
        "`listjobs.json` (Scrapyd's)": lambda: ("listjobs.json", {}),
    }
    latency(client, calls, 3, rng)  # warm-up
    samples = latency(client, calls, args.requests, rng)
    client.close()
    samples[f"`jobs.json` `cursor` walk, pages 1 to {depth:,} (1 call each)"] = walk
    rows = [
        [name, f"{ms(v, 0.5):.2f}", f"{ms(v, 0.99):.2f}", f"{len(v) / sum(v):.0f}"]
        for name, v in samples.items()
    ]
    print(
        f"\nLatency, one client on a kept-alive connection, {args.requests} calls each,"
        f" interleaved; {len(ids):,} jobs in the store, pages of {PAGE}:\n"
    )
    print(table(["endpoint", "median ms", "p99 ms", "req/s"], rows))
    for name in queries:
        values = samples[f"`jobs.json` {name}"]
        bench.summary.append(
            [
                f"`jobs.json` page of {PAGE}, {name}: median (p99)",
                f"{ms(values, 0.5):.1f} ms ({ms(values, 0.99):.1f})",
                "≤ 20 ms median",
                verdict(ms(values, 0.5), 20),
            ]
        )


def restart(node: ScrapydNode, ids: list[str]) -> int:
    """A freshly started scrapyd, warmed up by a few ordinary calls: a download's peak is
    measured on a heap that no earlier download has grown. Returns its pid."""
    node.stop()
    node.start()
    client = Client(node.port)
    for job in ids[:50]:
        client.json("jobstatus.json", {"job": job})
    client.json("jobs.json")
    client.close()
    assert node.process is not None
    return node.process.pid


def memory_section(bench: Bench) -> None:
    args, node = bench.args, bench.node
    variants = [
        ("JSON", "json", 0.0, args.downloads),
        ("CSV", "csv", 0.0, args.downloads),
        (f"JSON, the client stalls {STALL:g} s after 64 KiB", "json", STALL, 1),
    ]
    rows, resettable = [], True
    for name, fmt, stall, count in variants:
        pid = restart(node, bench.ids)
        resettable = reset_peak(pid) and resettable
        done = [measure_download(pid, node.port, fmt, args.errors, stall) for _ in range(count)]
        growth = [d.growth_mib for d in done]
        rows.append(
            [
                name,
                f"{done[0].mib:.1f}",
                median_max([d.seconds for d in done]),
                ", ".join(f"{g:.1f}" for g in growth),
                f"{proc_kib(pid, 'VmRSS') / 1024:.0f}",
            ]
        )
        bench.summary.append(
            [
                f"`joberrors.json` {name}, {args.errors:,} errors: download;"
                " scrapyd's peak RSS growth (worst)",
                f"{statistics.median([d.seconds for d in done]):.2f} s; {max(growth):.1f} MiB",
                "≤ 10 MiB",
                verdict(max(growth), 10),
            ]
        )
    peak = "reset before each" if resettable else "NOT resettable: growth above the earlier peak"
    print(
        f"\n`joberrors.json` of the job with {args.errors:,} errors, answers checked (every"
        f" error, in order); scrapyd restarted before each format; peak RSS growth from VmHWM,"
        f" {peak}, the first download first:\n"
    )
    header = ["format", "MiB", "download s", "peak RSS growth MiB", "RSS after, MiB"]
    print(table(header, rows))


def load_section(bench: Bench) -> None:
    args = bench.args
    ctx = mp.get_context("spawn")  # the loading clients share nothing with this process
    listing_calls = [("jobs.json", params) for params in bench.queries.values()]
    client = Client(bench.node.port)
    loads: dict[str, Load] = {}
    try:
        loads = {kind: Load(ctx, bench.node.port, kind, listing_calls) for kind in LOADS}
        phases = loaded_rounds(client, bench.ids, loads, args.rounds, args.samples, bench.rng)
    finally:
        for load in loads.values():
            load.close()
        client.close()
    idle = [s for p in phases if p.load is None for s in p.samples]
    rows = [["idle", f"{ms(idle, 0.5):.2f}", f"{ms(idle, 0.99):.2f}", "1", ""]]
    bench.summary.append(
        [
            "`jobstatus.json` idle: median (p99)",
            f"{ms(idle, 0.5):.1f} ms ({ms(idle, 0.99):.1f})",
            "",
            "",
        ]
    )
    for kind, name in LOADS.items():
        loaded = [s for p in phases if p.load == kind for s in p.samples]
        r = ratios(phases, kind)
        load = loads[kind]
        rate = load.served / load.seconds
        served = f"{rate:.0f} req/s" if kind == "listing" else f"{rate / 2**20:.1f} MiB/s"
        done = "requests" if kind == "listing" else "whole downloads"
        ratio = f"{statistics.median(r):.1f}× ({min(r):.1f}–{max(r):.1f})"
        rows.append(
            [
                f"while {name}",
                f"{ms(loaded, 0.5):.2f}",
                f"{ms(loaded, 0.99):.2f}",
                ratio,
                f"{served}, {load.completed.value} {done}",
            ]
        )
        bench.summary.append(
            [
                f"`jobstatus.json` while {name}: median (p99); ratio to idle (range)",
                f"{ms(loaded, 0.5):.1f} ms ({ms(loaded, 0.99):.1f}); {ratio}",
                "≤ 2× idle",
                verdict(statistics.median(r), 2),
            ]
        )
    print(
        f"\n`jobstatus.json` (a random job), one client, {args.samples} calls a phase;"
        f" {args.rounds} rounds of idle and loaded phases alternated, the load from another"
        " client process; a ratio is a loaded phase's median over the idle phases' around it,"
        " median of the rounds (range):\n"
    )
    header = ["jobstatus.json", "median ms", "p99 ms", "ratio to idle", "load served"]
    print(table(header, rows))


def cancel_section(bench: Bench, site: str) -> None:
    print(
        f"\nCancel of a running job (2 requests in flight, pages answered after {SLOW:g} s,"
        f" or {FORCED_SLOW:g} s for force=1; JOBSTATUS_INTERVAL 1 s),"
        f" {bench.args.cancel_rounds} rounds:\n"
    )
    rows = []
    for force in (False, True):
        name = "forced (`force=1`)" if force else "graceful"
        done = [cancel_round(bench.node, site, force) for _ in range(bench.args.cancel_rounds)]
        cells = [median_max([r[key] for r in done], " s") for key in ("visible", "taken_up")]
        terminal = median_max([r["terminal"] for r in done], " s")
        rows.append([name, *cells, terminal])
        bench.summary.append([f"cancel, {name}: request → terminal", terminal, "", ""])
    header = [
        "cancel",
        "request → cancelling visible",
        "request → taken up by the crawl",
        "request → terminal",
    ]
    print(table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="finished jobs in the store")
    parser.add_argument("--errors", type=int, default=100_000, help="errors of the one big job")
    parser.add_argument("--rounds", type=int, default=10, help="idle/loaded rounds")
    parser.add_argument("--samples", type=int, default=150, help="jobstatus.json calls a phase")
    parser.add_argument("--requests", type=int, default=300, help="calls per endpoint")
    parser.add_argument("--downloads", type=int, default=3, help="error reports per format")
    parser.add_argument("--cancel-rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the node's directory")
    args = parser.parse_args()
    check(args.jobs >= 4 * PAGE and args.errors >= 1, "--jobs: at least 200; --errors: 1")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    command = shlex.join(["python", "-m", "tests.benchmarks.bench_scrapyd", *sys.argv[1:]])
    started = time.perf_counter()
    print(f"# `{command}`\n\nMachine: {machine()}\n")

    workdir = Path(tempfile.mkdtemp(prefix="bench-scrapyd-"))
    node = ScrapydNode(workdir, options={"max_proc": "2", "poll_interval": "0.2"})
    try:
        filled, summary = store_section(node, args)
        with local_site() as site:
            node.start()
            node.deploy()
            real = real_crawls(node, site, filled)
            ids = [*filled.ids, ERRORS_JOB, *real]
            bench = Bench(args, node, filled, ids, random.Random(7), summary)  # noqa: S311
            latency_section(bench)
            memory_section(bench)
            load_section(bench)
            cancel_section(bench, site)
    finally:
        node.stop()
        if args.keep:
            print(f"\nThe node's directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n## Summary\n\n`{command}` ({time.perf_counter() - started:.0f} s)\n")
    print(f"Machine: {machine()}\n")
    print(table(["measure", "result", "target", "holds"], bench.summary))


if __name__ == "__main__":
    main()
