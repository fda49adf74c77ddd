"""Sixteen crawls on one job store: how long store work blocks a crawl's event loop.

Run by hand, alone on the machine:
``python -m tests.benchmarks.bench_concurrency [--crawls 16] [--seconds 25] [--rounds 2]
[--delay 0] [--before REV]``.

``--before REV`` (a git revision of this repository, e.g. ``main``) runs the
library of that revision (``git archive`` of its ``extensions/`` put first on
the crawls' ``PYTHONPATH``) beside this tree's, batch for batch in every
round, and ends with the store's targets for both: the median over the
rounds and their range.

``--crawls`` ``scrapy crawl`` processes run at once, all writing their jobs to
one SQLite store, each crawling the local test site (a page in eleven links
to a 404) until ``CLOSESPIDER_TIMEOUT`` = ``--seconds``. Three batches are
alternated, ``--rounds`` times: ``JOBSTATUS_INTERVAL`` 1 s, 0.2 s (five times
the writes, to stress the store), and the extension disabled (a baseline for
the loop lag). With ``--delay 0`` every crawl fetches as fast as it can, so
16 crawls on a small machine are CPU-bound and overcommitted; a
``DOWNLOAD_DELAY`` (``--delay 0.1``: some 10 pages a second per crawl) gives
crawls that wait for the network, as real ones mostly do.

In every crawl process the benchmark-only extension ``StoreTiming`` (below)
wraps, with ``time.perf_counter``, the store calls that run on the event
loop: ``StoreWriter.save`` (taking the unsaved errors, the ``deepcopy`` of
the job, the hand-over to the writer thread), the callbacks run when a
write returns (``StoreWriter._succeeded`` and ``_done``,
``StopController.requested``) and the loop part of ``StoreWriter.start_job``
and ``stop`` (the hand-over, ``StoreWriter._call``); for information, the
extension's whole periodic ``_tick`` (refresh, stats, save). A 10 ms timer
measures how late the loop runs it (the loop lag).

Wall time alone does not say what held a call up, so each call also keeps
its thread's CPU time and context switches (``getrusage(RUSAGE_THREAD)``):
a voluntary switch in a few microseconds of Python means the thread waited
for the GIL (or a lock), an involuntary one that the OS preempted it.

In the writer thread: ``SQLiteStore.save`` (waits for the other crawls
included), and, through a proxy of its connection, the wait for the store's
write lock (``BEGIN IMMEDIATE``) and how long the lock is then held until
``COMMIT`` returns, with the thread's CPU time meanwhile: every statement
gives the GIL up and takes it back, and in a busy crawl process taking it
back waits for the event loop thread (``sys.getswitchinterval()``, 5 ms).
A write made by one statement outside a transaction (a running job's write
since the revision after 8de5192) holds the lock inside that statement: its
whole call is counted as the lock held, an upper bound that includes its
wait for the lock and for the GIL once SQLite is done.

And, against the store's targets: the ticks whose save was skipped because
the crawl's last write was still running, and the heartbeat lag (how much
later than the interval each write renewed the job's heartbeat).

Every job must end ``completed`` with the crawl's own figures: pages =
``response_received_count``, documents = ``item_scraped_count``, failed
responses and errors = the responses with a status of 400 and above, and as
many error records in the store.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import call_later

from tests.benchmarks.bench_extension import load, machine, percentile
from tests.helpers import ROOT, crawl_command, local_site

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable
    from typing import Self

    from scrapy.crawler import Crawler

COMMAND = "python -m tests.benchmarks.bench_concurrency"
TIMING = "tests.benchmarks.bench_concurrency.StoreTiming"
PROBE_PERIOD = 0.01
# The loop-side store calls, reported one by one and together; then, for
# information, the extension's whole periodic tick (the job's refresh from
# the crawl's stats, the stats written back, and the save).
LOOP_CALLS = ("save", "_succeeded", "_done", "requested", "start_job", "stop")
TICK = "_tick"
ONE_STATEMENT = "one-statement write"
THREAD_CALLS = (
    "SQLiteStore.save",
    "lock wait",
    "lock held",
    ONE_STATEMENT,
    "SQLiteStore.start_job",
)
# The lock held by a write, however it is made.
HELD = ("lock held", ONE_STATEMENT)
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# The batches: (name, JOBSTATUS_ENABLED, JOBSTATUS_INTERVAL).
BATCHES = (("interval 1 s", True, 1.0), ("interval 0.2 s", True, 0.2), ("disabled", False, 1.0))

# A sample: wall seconds, thread CPU seconds, voluntary and involuntary
# context switches of the thread.
Sample = tuple[float, float, int, int]


def _clock() -> Sample:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return time.perf_counter(), time.thread_time(), usage.ru_nvcsw, usage.ru_nivcsw


def _since(start: Sample) -> Sample:
    end = _clock()
    return end[0] - start[0], end[1] - start[1], end[2] - start[2], end[3] - start[3]


class TimedConnection:
    """The store's SQLite connection, timing its transactions: the wait for
    the write lock (``BEGIN IMMEDIATE``) and the time it is held."""

    def __init__(self, conn: sqlite3.Connection, samples: dict[str, list[Sample]]):
        self._conn = conn
        self._samples = samples
        self._begun: Sample | None = None

    def execute(self, sql: str, *args: Any) -> Any:
        alone = not self._conn.in_transaction and sql.lstrip().upper().startswith(WRITES)
        start = _clock()
        result = self._conn.execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            self._samples["lock wait"].append(_since(start))
            self._begun = _clock()
        elif sql in ("COMMIT", "ROLLBACK") and self._begun is not None:
            self._samples["lock held"].append(_since(self._begun))
            self._begun = None
        elif alone:
            # Its own transaction: the lock taken, held and let go inside.
            self._samples[ONE_STATEMENT].append(_since(start))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class StoreTiming:
    """Benchmark-only extension: times the job extension's store calls in
    this crawl process and probes the loop lag; writes it all, with the
    crawl's stats, to ``BENCH_TIMING_FILE`` once the engine has stopped (the
    job's final write is done by then)."""

    def __init__(self, crawler: Crawler, path: str):
        self.crawler = crawler
        self.path = path
        self.samples: dict[str, list[Sample]] = defaultdict(list)
        self.lag: list[float] = []
        # Wall times of the writes that renewed the job's heartbeat, and
        # the ticks whose save was skipped because a write was under way.
        self.beats: list[float] = []
        self.skipped = 0
        self._due = 0.0
        self._probe: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("BENCH_TIMING_FILE")
        if not path:
            raise NotConfigured
        timing = cls(crawler, path)
        timing._instrument()
        crawler.signals.connect(timing.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(timing.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(timing.engine_stopped, signal=signals.engine_stopped)
        return timing

    def _instrument(self) -> None:
        # The classes are patched in this crawl process only, before the
        # job opens: every later call goes through the wrappers.
        from scrapy_jobstatus._extension import JobStatusExtension
        from scrapy_jobstatus._sqlite import SQLiteStore
        from scrapy_jobstatus._stopper import StopController
        from scrapy_jobstatus._writer import StoreWriter

        for cls, name, label in (
            (StoreWriter, "_succeeded", "_succeeded"),
            (StoreWriter, "_done", "_done"),
            (StopController, "requested", "requested"),
            (JobStatusExtension, "_tick", TICK),
            (SQLiteStore, "save", "SQLiteStore.save"),
            (SQLiteStore, "start_job", "SQLiteStore.start_job"),
        ):
            setattr(cls, name, self._timed(label, getattr(cls, name)))
        timed_save = self._timed("save", StoreWriter.save)

        @functools.wraps(timed_save)
        def save(writer: StoreWriter, *args: Any) -> Any:
            result = timed_save(writer, *args)
            if result is None and writer._in_flight is not None:
                self.skipped += 1
            return result

        StoreWriter.save = save  # type: ignore[method-assign]
        store_save = SQLiteStore.save

        @functools.wraps(store_save)
        def beat(store: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
            result = store_save(store, *args, **kwargs)
            if result.written:
                self.beats.append(time.time())
            return result

        SQLiteStore.save = beat  # type: ignore[method-assign]
        call = StoreWriter._call
        timed_start, timed_stop = self._timed("start_job", call), self._timed("stop", call)

        @functools.wraps(call)
        def handed_over(writer: StoreWriter, function: Callable[..., Any], *args: Any) -> Any:
            # The hand-over of a save is timed within "save"; start_job and
            # stop are coroutines, and this is all they do on the loop but
            # resume.
            if args and args[0] == "start_job":
                return timed_start(writer, function, *args)
            if getattr(function, "__name__", "") == "_close_store":
                return timed_stop(writer, function, *args)
            return call(writer, function, *args)

        StoreWriter._call = handed_over  # type: ignore[method-assign]
        connection = SQLiteStore.conn.fget
        assert connection is not None
        samples = self.samples
        SQLiteStore.conn = property(  # type: ignore[method-assign, assignment]
            lambda store: TimedConnection(connection(store), samples)
        )

    def _timed(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        samples = self.samples[label]

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = _clock()
            try:
                return function(*args, **kwargs)
            finally:
                samples.append(_since(start))

        return timed

    # -- the loop lag probe ----------------------------------------------------------

    def spider_opened(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        self._due = time.perf_counter() + PROBE_PERIOD
        self._probe = call_later(PROBE_PERIOD, self._tick)

    def _tick(self) -> None:
        self.lag.append(max(0.0, time.perf_counter() - self._due))
        self._schedule()

    def spider_closed(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def engine_stopped(self) -> None:
        stats = {
            key: value
            for key, value in self.crawler.stats.get_stats().items()
            if isinstance(value, int | float | str)
        }
        Path(self.path).write_text(
            json.dumps(
                {
                    "samples": self.samples,
                    "lag": self.lag,
                    "stats": stats,
                    "beats": self.beats,
                    "skipped": self.skipped,
                }
            )
        )


# -- a batch of crawls -------------------------------------------------------------------


def run_batch(
    site: str,
    enabled: bool,
    interval: float,
    args: argparse.Namespace,
    workdir: Path,
    tag: str,
    library: Path | None = None,
) -> list[dict[str, Any]]:
    """``args.crawls`` crawls at once on one store, with this tree's library
    or the one in ``library``; each one's timings and stats, and its job as
    the store has it."""
    path = str(ROOT) if library is None else f"{library}{os.pathsep}{ROOT}"
    db = workdir / f"{tag}.db"
    processes = []
    for number in range(args.crawls):
        job = f"{tag}-{number:02d}"
        command = crawl_command(
            "follow",
            db,
            args={"url": f"{site}/pages/0?links=10&broken=1", "_job": job},
            settings={
                "JOBSTATUS_ENABLED": str(enabled),
                "JOBSTATUS_INTERVAL": str(interval),
                "CLOSESPIDER_TIMEOUT": str(args.seconds),
                "CONCURRENT_REQUESTS": "8",
                "DOWNLOAD_DELAY": str(args.delay),
                "RETRY_ENABLED": "False",
                "LOG_LEVEL": "WARNING",
                "LOG_FILE": str(workdir / f"{job}.log"),
                "LOGSTATS_INTERVAL": "0",
                "TELNETCONSOLE_ENABLED": "False",
                "EXTENSIONS": json.dumps({TIMING: 0}),
                "BENCH_TIMING_FILE": str(workdir / f"{job}.json"),
            },
            output=workdir / f"{job}.jl",
        )
        # Standard error to a file: a pipe nobody reads yet could fill and
        # stall the crawl.
        with open(workdir / f"{job}.err", "wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "PYTHONPATH": path},
            )
        processes.append((job, process))
    crawls = []
    for job, process in processes:
        process.wait(timeout=args.seconds + 300)
        timing = workdir / f"{job}.json"
        if process.returncode != 0 or not timing.exists():
            log = workdir / f"{job}.log"
            stderr = (workdir / f"{job}.err").read_text()[-3000:]
            stderr += log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"crawl {job} failed ({process.returncode}): {stderr}")
        crawl = json.loads(timing.read_text())
        crawl["job_id"] = job
        crawl["interval"] = interval
        log = (workdir / f"{job}.log").read_text()
        crawl["log_errors"] = [line for line in log.splitlines() if "] ERROR:" in line]
        crawls.append(crawl)
    if enabled:
        check_jobs(db, crawls)
    for path in workdir.iterdir():
        path.unlink()
    return crawls


def check_jobs(db: Path, crawls: list[dict[str, Any]]) -> None:
    """Each crawl's job as the store has it, against the crawl's stats;
    what differs goes to ``crawl["problems"]``."""
    from scrapy_jobstatus._store import iter_errors, open_store

    # Not read-only: a store an older revision's crawls wrote is upgraded to
    # this tree's schema first.
    store = open_store(db)
    try:
        for crawl in crawls:
            stats = crawl["stats"]
            failed = sum(
                count
                for key, count in stats.items()
                if key.startswith("downloader/response_status_count/")
                and int(key.rsplit("/", 1)[1]) >= 400
            ) + stats.get("downloader/exception_count", 0)
            document = store.document(crawl["job_id"]) or {}
            expected = {
                "status": "completed",
                "total_pages_crawled": stats["response_received_count"],
                "total_documents_found": stats.get("item_scraped_count", 0),
                "responses_failed": failed,
                "error_count": failed,
            }
            problems = [
                f"{key} {document.get(key)!r}, expected {value!r}"
                for key, value in expected.items()
                if document.get(key) != value
            ]
            records = sum(1 for _ in iter_errors(store, crawl["job_id"]))
            if records != failed:
                problems.append(f"{records} error records, expected {failed}")
            crawl["problems"] = problems
            crawl["document"] = {key: document.get(key) for key in expected}
            crawl["completion_reason"] = document.get("completion_reason")
    finally:
        store.close()


# -- report ----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def pooled(crawls: list[dict[str, Any]], labels: tuple[str, ...]) -> list[Sample]:
    return [
        tuple(sample)  # type: ignore[misc]
        for crawl in crawls
        for label in labels
        for sample in crawl["samples"].get(label, [])
    ]


def row(name: str, samples: list[Sample], switches: bool = True) -> str:
    wall = [s[0] for s in samples]
    cells = [name, f"{len(samples):,}"]
    cells += [ms(percentile(wall, q)) for q in (50, 99)] + [ms(max(wall, default=float("nan")))]
    cells += [ms(percentile([s[1] for s in samples], 99))]
    if switches:
        slow = [s for s in samples if s[0] > 0.001]
        waited = sum(1 for s in slow if s[2])
        preempted = sum(1 for s in slow if s[3] and not s[2])
        cells += [f"{len(slow):,}", f"{waited:,}", f"{preempted:,}"]
    else:
        # In the writer thread, a voluntary switch is a wait: for the GIL,
        # the store's lock, the disk.
        cells += [f"{percentile([s[2] for s in samples], q):g}" for q in (50, 99)]
    return "| " + " | ".join(cells) + " |"


def heartbeat_lags(crawls: list[dict[str, Any]]) -> list[float]:
    """Per write, how much later than the crawl's interval it followed the
    one before (0 when on time)."""
    return [
        max(0.0, later - earlier - crawl["interval"])
        for crawl in crawls
        for earlier, later in zip(crawl["beats"], crawl["beats"][1:], strict=False)
    ] or [0.0]


def report(results: dict[str, list[dict[str, Any]]], batches: list[Batch]) -> None:
    enabled = [b.name for b in batches if b.enabled]
    print(
        "\nEvent loop blocked per store call, all crawls pooled (ms). CPU p99: the thread's "
        "CPU time, the work itself. Of the calls over 1 ms: how many waited (a voluntary "
        "switch: the GIL, a lock), how many were only preempted.\n"
    )
    print("| Batch | Call | Calls | p50 | p99 | max | CPU p99 | > 1 ms | waited | preempted |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in enabled:
        crawls = results[name]
        for label in (*LOOP_CALLS, "all loop-side calls", TICK):
            labels = LOOP_CALLS if label.startswith("all") else (label,)
            shown = f"**{label}**" if label.startswith("all") else f"`{label}`"
            shown += " (whole tick, for information)" if label == TICK else ""
            print(row(f"{name} | {shown}", pooled(crawls, labels)))
    print(
        "\nIn the writer thread (ms): the whole save, waits for the other crawls included; "
        "the wait for the store's write lock; the time the lock is held, and the thread's "
        "CPU time meanwhile; the thread's voluntary switches (waits) per call:\n"
    )
    print("| Batch | Call | Calls | p50 | p99 | max | CPU p99 | waits p50 | waits p99 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in enabled:
        for label in THREAD_CALLS:
            samples = pooled(results[name], (label,))
            print(row(f"{name} | {label}", samples, switches=False))
    print(
        "\nThe targets: the store's write lock held (ms; a one-statement write's whole "
        "call), ticks whose save was skipped "
        "because the crawl's last write was still running, and heartbeat lag: how much "
        "later than the interval each write renewed the job's heartbeat (s):\n"
    )
    print(
        "| Batch | lock held p50 | p99 | max | lock wait p99 | ticks skipped | "
        "heartbeat lag p50 | p99 | max |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in enabled:
        crawls = results[name]
        held = [s[0] for s in pooled(crawls, HELD)]
        wait = [s[0] for s in pooled(crawls, ("lock wait",))]
        ticks = len(pooled(crawls, ("save",)))
        skipped = sum(c["skipped"] for c in crawls)
        lags = heartbeat_lags(crawls)
        cells = [ms(percentile(held, q)) for q in (50, 99)] + [ms(max(held))]
        cells += [ms(percentile(wait, 99)), f"{skipped:,} of {ticks:,}"]
        cells += [f"{percentile(lags, q):.2f}" for q in (50, 99)] + [f"{max(lags):.2f}"]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\nEvent loop lag: lateness of a 10 ms timer in every crawl (ms):\n")
    print("| Batch | Samples | p50 | p99 | max | Pages/s per crawl, median |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in (b.name for b in batches):
        crawls = results[name]
        lag = [value for crawl in crawls for value in crawl["lag"]]
        rates = [
            c["stats"]["response_received_count"] / c["stats"]["elapsed_time_seconds"]
            for c in crawls
        ]
        cells = [f"{len(lag):,}", *(ms(percentile(lag, q)) for q in (50, 99)), ms(max(lag))]
        print(f"| {name} | {' | '.join(cells)} | {statistics.median(rates):.0f} |")
    print("\nJobs in the store:\n")
    for name in enabled:
        crawls = results[name]
        bad = [c for c in crawls if c["problems"]]
        pages = sum(c["document"]["total_pages_crawled"] or 0 for c in crawls)
        errors = sum(c["document"]["error_count"] or 0 for c in crawls)
        saves = len(pooled(crawls, ("save",)))
        writes = len(pooled(crawls, ("SQLiteStore.save",)))
        reasons = sorted({str(c["completion_reason"]) for c in crawls})
        print(
            f"- {name}: {len(crawls) - len(bad)} of {len(crawls)} jobs `completed` (completion "
            f"reason {', '.join(reasons)}) with the crawl's counts ({pages:,} pages, {errors:,} "
            f"errors recorded in all); {writes:,} writes for {saves:,} saves asked (the others "
            "found a write under way)"
        )
        for crawl in bad:
            print(f"  - {crawl['job_id']}: {'; '.join(crawl['problems'])}")
    log_errors = [line for crawls in results.values() for c in crawls for line in c["log_errors"]]
    print(f"- ERROR lines in the crawl logs: {len(log_errors)}")
    for line in log_errors[:10]:
        print(f"  - {line}")


def targets(crawls: list[dict[str, Any]]) -> dict[str, float]:
    """The store's targets in one batch of crawls: the lock held by a
    transaction, a one-statement write's whole call (an upper bound of the
    lock it holds) and its CPU time (SQLite's work under the lock), the
    transactions' wait for the lock, the ticks skipped, the heartbeat lag."""
    held = [s[0] for s in pooled(crawls, ("lock held",))]
    alone = pooled(crawls, (ONE_STATEMENT,))
    wait = [s[0] for s in pooled(crawls, ("lock wait",))]
    ticks = len(pooled(crawls, ("save",)))
    lags = heartbeat_lags(crawls)
    return {
        "transaction held p50": percentile(held, 50) * 1000,
        "p99": percentile(held, 99) * 1000,
        "one statement p50": percentile([s[0] for s in alone], 50) * 1000,
        "p99 ": percentile([s[0] for s in alone], 99) * 1000,
        "its CPU p99": percentile([s[1] for s in alone], 99) * 1000,
        "transaction wait p99": percentile(wait, 99) * 1000,
        "skipped %": 100 * sum(c["skipped"] for c in crawls) / max(ticks, 1),
        "lag p99": percentile(lags, 99),
        "lag max": max(lags),
        "writes in one statement %": 100 * len(alone) / max(len(alone) + len(held), 1),
    }


def compare(results: dict[str, list[dict[str, Any]]], batches: list[Batch]) -> None:
    """The targets of each batch: the median over the rounds, and their
    range (each round's figures pooled over its crawls)."""
    print(
        "\nThe targets, round by round: median of the rounds (range). Lock held (ms) by a "
        "transaction, BEGIN IMMEDIATE to COMMIT; a one-statement write's whole call (ms), "
        "its wait for the lock and for the GIL included, and its CPU time (ms); the "
        "transactions' wait for the lock (ms); ticks skipped because the last write was "
        "still running (%); heartbeat lag (s); the writes made by one statement (%):\n"
    )
    names = list(targets(results[batches[0].name]))
    print("| Batch | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for batch in (b for b in batches if b.enabled):
        crawls = results[batch.name]
        rounds = sorted({c["round"] for c in crawls})
        figures = [targets([c for c in crawls if c["round"] == r]) for r in rounds]
        cells = []
        for name in names:
            values = [f[name] for f in figures if f[name] == f[name]]  # not NaN
            if not values:
                cells.append("–")
                continue
            digits = 2 if name.startswith("lag") else 1
            cells.append(
                f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}–{max(values):.{digits}f})"
            )
        print(f"| {batch.name} | " + " | ".join(cells) + " |")


@dataclass(frozen=True)
class Batch:
    name: str
    enabled: bool
    interval: float
    # The library's source root, None for this tree's.
    library: Path | None = None


def batches_of(before: Path | None) -> list[Batch]:
    if before is None:
        return [Batch(name, enabled, interval) for name, enabled, interval in BATCHES]
    return [
        *(
            Batch(f"{side}, {name}", True, interval, library)
            for name, _, interval in BATCHES[:2]
            for side, library in (("before", before), ("after", None))
        ),
        Batch("disabled", False, 1.0),
    ]


def extract(revision: str, into: Path) -> Path:
    """The library of a git revision of this repository, in ``into``."""
    archive = subprocess.run(
        ["git", "archive", revision, "extensions"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "extensions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crawls", type=int, default=16, help="crawl processes at once")
    parser.add_argument("--seconds", type=int, default=25, help="CLOSESPIDER_TIMEOUT")
    parser.add_argument("--rounds", type=int, default=2, help="times each batch runs")
    parser.add_argument("--delay", type=float, default=0.0, help="DOWNLOAD_DELAY of each crawl")
    parser.add_argument(
        "--before", metavar="REV", help="also run the library of this git revision, alternated"
    )
    args = parser.parse_args()
    command = (
        f"{COMMAND} --crawls {args.crawls} --seconds {args.seconds} --rounds {args.rounds}"
        f" --delay {args.delay:g}" + (f" --before {args.before}" if args.before else "")
    )
    print(
        f"{command}\n{machine()}, switch interval {sys.getswitchinterval() * 1000:g} ms\n"
        f"start: {load()}",
        flush=True,
    )
    loads: list[float] = []
    with (
        local_site() as site,
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory() as library,
    ):
        before = extract(args.before, Path(library)) if args.before else None
        batches = batches_of(before)
        results: dict[str, list[dict[str, Any]]] = {b.name: [] for b in batches}
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            # Every other round in the reverse order: a drift of the
            # machine's load weighs on every batch alike.
            for batch in batches if round_ % 2 == 0 else batches[::-1]:
                tag = f"r{round_}-{batch.name.replace(' ', '').replace('.', '').replace(',', '')}"
                started = time.perf_counter()
                crawls = run_batch(
                    site, batch.enabled, batch.interval, args, workdir, tag, batch.library
                )
                for crawl in crawls:
                    crawl["round"] = round_
                results[batch.name] += crawls
                saves = len(pooled(crawls, ("save",)))
                loads.append(os.getloadavg()[0])
                print(
                    f"round {round_ + 1} {batch.name}: {len(crawls)} crawls in "
                    f"{time.perf_counter() - started:.0f} s, {saves} saves, {load()}",
                    flush=True,
                )
    print(
        f"\nMachine: {machine()}; load average (1 min) at the end of each batch "
        f"{min(loads):.1f} to {max(loads):.1f}.\n`{command}`"
    )
    report(results, batches)
    compare(results, batches)


if __name__ == "__main__":
    main()
