"""Retention: what a prune costs the crawls writing meanwhile, and what
keep_days keeps of a week.

Run by hand, alone on the machine:
``python -m tests.benchmarks.bench_retention lock [--jobs 1000000] [--keep 100000]
[--crawls 16] [--seconds 25] [--rounds 2]`` and
``python -m tests.benchmarks.bench_retention week [--per-day 10000] [--days 7]
[--keep-days 2] [--db postgres]``.

``lock``: a SQLite store holding ``--jobs`` ended jobs (each a copy of one
real job: its record, history events, series points, webhook deliveries
and their attempts), made with one ``INSERT ... SELECT`` per table from a
recursive CTE. Rounds alternate: ``--crawls`` crawls of the local test site
write to a copy of that store (bench_concurrency's crawls and its
``TimedConnection``, which times each ``BEGIN IMMEDIATE`` of the crawls'
writers), with and without a prune to ``--keep`` jobs running in a
thread of the benchmark's process, as a node's pruner does. Reported: the
crawls' write-lock wait p99 in each round, the median ratio (with / without)
and its spread, the prune's transactions and the jobs it pruned.

``week``: ``--days`` days of ``--per-day`` jobs a day, written an hour's worth
at a time on a simulated clock (created and ended within that hour), pruned
after each hour with ``keep_days`` as a node would; and the same week
without pruning. Reported: the store's size at the end of each day (the
SQLite file; PostgreSQL's ``pg_total_relation_size`` of its tables), and
whether the pruned week's end stays under the unpruned store's size after
``keep_days + 1`` days. On PostgreSQL a plain ``VACUUM`` runs every 6
simulated hours, as autovacuum would over a real week's hours (the space of
deleted rows is reused after it; files never shrink).
"""

# ruff: noqa: S608 (SQL of the benchmark's own names and numbers)

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from scrapy_jobstatus import _retention as retention
from scrapy_jobstatus._model import HistoryEvent, JobError, JobState, JobStatus
from scrapy_jobstatus._retention import DAY, Retention, prune
from scrapy_jobstatus._store import Attempt, open_store
from tests.benchmarks.bench_concurrency import TimedConnection, pooled
from tests.benchmarks.bench_extension import load, machine, percentile
from tests.helpers import ROOT, crawl_command, local_site

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

    from scrapy.crawler import Crawler

COMMAND = "python -m tests.benchmarks.bench_retention"
TIMING = "tests.benchmarks.bench_retention.LockTiming"
TEMPLATE = "template"
# A job's rows besides its record: copied from the template for each job.
CHILDREN = ("errors", "events", "series", "deliveries")
# Simulated hours between two plain VACUUMs of PostgreSQL's tables.
VACUUM_EVERY = 6
TIMESTAMPS = {
    "created_at",
    "updated_at",
    "completed_at",
    "timestamp",
    "t",
    "next_attempt_at",
    "attempted_at",
}


class LockTiming:
    """Benchmark-only extension: in a crawl process, each transaction of the
    store's writer timed as bench_concurrency's ``TimedConnection`` does
    (the wait for ``BEGIN IMMEDIATE``, the lock held to ``COMMIT``); written
    to ``BENCH_TIMING_FILE`` once the engine has stopped."""

    def __init__(self, path: str):
        self.path = path
        self.samples: dict[str, list[Any]] = defaultdict(list)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("BENCH_TIMING_FILE")
        if not path:
            raise NotConfigured
        timing = cls(path)
        from scrapy_jobstatus._sqlite import SQLiteStore

        connection = SQLiteStore.conn.fget
        assert connection is not None
        samples = timing.samples
        SQLiteStore.conn = property(  # type: ignore[method-assign, assignment]
            lambda store: TimedConnection(connection(store), samples)
        )
        crawler.signals.connect(timing.engine_stopped, signal=signals.engine_stopped)
        return timing

    def engine_stopped(self) -> None:
        Path(self.path).write_text(json.dumps({"samples": self.samples}))


# -- a store of many jobs, made fast -------------------------------------------------


def template_job(location: str) -> int:
    """One real job, written through the store as a crawl writes it: the
    rows every job of the benchmark copies. Its key."""
    store = open_store(location)
    try:
        now = time.time()
        state = JobState(
            job_id=TEMPLATE,
            project="bench",
            spider="follow",
            status=JobStatus.RUNNING,
            created_at=now - 30,
            started_at=now - 30,
            updated_at=now - 30,
            pid=os.getpid(),
            webhooks=["http://127.0.0.1:9/hook"],
        )
        store.start_job(state)
        for second in range(3):
            state.updated_at = now - 20 + second
            state.total_pages_crawled += 10
            event = HistoryEvent(
                step=f"stage {second}", timestamp=state.updated_at, status="running"
            )
            error = JobError(error_type="http_error", error_message="404", timestamp=now)
            state.error_count += 1
            store.save(state, [error], [event])
        state.status = JobStatus.COMPLETED
        state.completed_at = state.updated_at = now
        store.save(state)
        for delivery in store.claim_deliveries(now + 1, 60, 10):
            store.record_attempt(delivery, Attempt(now, 200, None, 5, True, None))
    finally:
        store.close()
    with connect(location) as conn:
        return one(conn, "SELECT id FROM jobs WHERE job_id = 'template'")


@contextlib.contextmanager
def connect(location: str) -> Iterator[Any]:
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            yield conn
    else:
        conn = sqlite3.connect(location, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()


def one(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def columns(conn: Any, table: str) -> list[str]:
    if isinstance(conn, sqlite3.Connection):
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
        " ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def fill(
    location: str, template: int, count: int, first_end: float, spacing: float, start: int = 0
) -> None:
    """``count`` copies of the template job, numbered from ``start``, the
    n-th ending ``first_end + n * spacing`` (and made, written and delivered
    as long before as the template was): one statement per table."""
    postgres = location.startswith("postgresql://")
    seq = (
        f"generate_series({start + 1}, {start + count}) AS seq(n)"
        if postgres
        else f"(WITH RECURSIVE s(n) AS (SELECT {start + 1} UNION ALL SELECT n + 1 FROM s"
        f" WHERE n < {start + count}) SELECT n FROM s) AS seq"
    )
    mark = "%s" if postgres else "?"
    with connect(location) as conn:
        if not postgres:
            conn.execute("BEGIN")
        end = one(conn, "SELECT completed_at FROM jobs WHERE id = " + mark, (template,))
        base = {
            table: one(conn, f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            for table in ("jobs", *CHILDREN, "delivery_attempts")
        }
        spans = {}
        for table in CHILDREN:
            low, high = conn.execute(
                f"SELECT MIN(id), MAX(id) FROM {table} WHERE job = {mark}",
                (template,),
            ).fetchone()
            spans[table] = (low or 0, (high or 0) - (low or 0) + 1)

        def shifted(column: str) -> str:
            return f"src.{column} - {end!r} + {first_end!r} + (seq.n - {start + 1}) * {spacing!r}"

        def copy(table: str, where: str, special: dict[str, str]) -> None:
            names = columns(conn, table)
            values = [
                special.get(c) or (shifted(c) if c in TIMESTAMPS else f"src.{c}") for c in names
            ]
            quoted = ", ".join(f'"{c}"' for c in names)
            conn.execute(
                f"INSERT INTO {table} ({quoted}) SELECT {', '.join(values)}"
                f" FROM {seq} CROSS JOIN {table} src WHERE {where}"
            )

        job_key = f"{base['jobs']} + seq.n - {start}"
        copy("jobs", f"src.id = {template}", {"id": job_key, "job_id": "'old-' || seq.n"})
        for table in CHILDREN:
            low, span = spans[table]
            key = f"{base[table]} + (seq.n - {start + 1}) * {span} + src.id - {low} + 1"
            copy(table, f"src.job = {template}", {"id": key, "job": job_key})
        low, span = spans["deliveries"]
        delivery = (
            f"{base['deliveries']} + (seq.n - {start + 1}) * {span} + src.delivery - {low} + 1"
        )
        attempts = one(
            conn,
            "SELECT COUNT(*) FROM delivery_attempts WHERE delivery IN"
            f" (SELECT id FROM deliveries WHERE job = {template})",
        )
        attempt_key = f"{base['delivery_attempts']} + (seq.n - {start + 1}) * {attempts} + 1 + ("
        attempt_key += "SELECT COUNT(*) FROM delivery_attempts o WHERE o.delivery IN (SELECT id"
        attempt_key += f" FROM deliveries WHERE job = {template}) AND o.id < src.id)"
        copy(
            "delivery_attempts",
            f"src.delivery IN (SELECT id FROM deliveries WHERE job = {template})",
            {"id": attempt_key, "delivery": delivery},
        )
        if postgres:
            for table in ("jobs", *CHILDREN, "delivery_attempts"):
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT MAX(id) FROM {table}))"
                )
        else:
            conn.execute("COMMIT")


def store_size(location: str) -> int:
    """Bytes: the SQLite file with its WAL, or PostgreSQL's tables with
    their indexes and TOAST."""
    if location.startswith("postgresql://"):
        with connect(location) as conn:
            return int(
                one(
                    conn,
                    "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind = 'r'",
                )
            )
    wal = Path(f"{location}-wal")
    return Path(location).stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# -- lock: a prune under 16 crawls ---------------------------------------------------


def make_base(workdir: Path, jobs: int) -> tuple[Path, float]:
    base = workdir / "base.db"
    template = template_job(str(base))
    started = time.perf_counter()
    # Ended over the last 100 days, the oldest first.
    fill(str(base), template, jobs, time.time() - 100 * DAY, 100 * DAY / jobs)
    made = time.perf_counter() - started
    with connect(str(base)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return base, made


def run_round(
    site: str, base: Path, workdir: Path, tag: str, args: argparse.Namespace, pruning: bool
) -> dict[str, Any]:
    db = workdir / f"{tag}.db"
    shutil.copyfile(base, db)
    processes = []
    for number in range(args.crawls):
        job = f"{tag}-{number:02d}"
        command = crawl_command(
            "follow",
            db,
            args={"url": f"{site}/pages/0?links=10&broken=1", "_job": job},
            settings={
                "JOBSTATUS_INTERVAL": "1.0",
                # The crawls leave pruning to the benchmark.
                "JOBSTATUS_KEEP_FINISHED": "0",
                "JOBSTATUS_KEEP_DAYS": "0",
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
        )
        with open(workdir / f"{job}.err", "wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        processes.append((job, process))
    pruner = Pruner(db, Retention(args.keep, 0)) if pruning else None
    if pruner is not None:
        time.sleep(3)  # the crawls have opened their jobs
        pruner.start()
    crawls = []
    for job, process in processes:
        process.wait(timeout=args.seconds + 300)
        timing = workdir / f"{job}.json"
        if process.returncode != 0 or not timing.exists():
            stderr = (workdir / f"{job}.err").read_text()[-3000:]
            log = (workdir / f"{job}.log").read_text()[-3000:]
            raise RuntimeError(f"crawl {job} failed ({process.returncode}): {stderr}{log}")
        crawls.append(json.loads(timing.read_text()))
    result: dict[str, Any] = {}
    if pruner is not None:
        result["prune"] = pruner.stop()
    wait = [s[0] for s in pooled(crawls, ("lock wait",))]
    held = [s[0] for s in pooled(crawls, ("lock held",))]
    result.update(
        wait_p99=percentile(wait, 99),
        wait_p50=percentile(wait, 50),
        held_p99=percentile(held, 99),
        writes=len(wait),
    )
    for path in workdir.iterdir():
        if path != base:
            path.unlink()
    return result


class Pruner:
    """A node's pruner: a thread of its own with a store of its own, its
    transactions timed."""

    def __init__(self, db: Path, retention: Retention):
        self.db = db
        self.retention = retention
        self.batches: list[float] = []
        # The prune's own transactions: its wait for the lock, the lock held.
        self.lock: dict[str, list[Any]] = defaultdict(list)
        self.jobs = 0
        self.done = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run)
        self._started = 0.0
        self._ended = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        store = open_store(self.db)
        store._conn = TimedConnection(store.conn, self.lock)  # type: ignore[attr-defined]
        original = store.prune_jobs

        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args)
            finally:
                self.batches.append(time.perf_counter() - started)

        store.prune_jobs = timed  # type: ignore[method-assign]
        try:
            report = prune(store, self.retention, stopping=lambda: self._stopping)
            self.jobs = report.jobs
            self.done = not self._stopping
        finally:
            self._ended = time.perf_counter()
            store.close()

    def stop(self) -> dict[str, Any]:
        self._stopping = True
        self._thread.join()
        return {
            "jobs": self.jobs,
            "done": self.done,
            "seconds": self._ended - self._started,
            "batches": len(self.batches),
            "batch_p50": percentile(self.batches, 50),
            "batch_p99": percentile(self.batches, 99),
            "batch_max": max(self.batches, default=float("nan")),
            "held_p99": percentile([s[0] for s in self.lock["lock held"]], 99),
            "held_max": max((s[0] for s in self.lock["lock held"]), default=float("nan")),
        }


def lock_benchmark(args: argparse.Namespace) -> None:
    command = (
        f"{COMMAND} lock --jobs {args.jobs} --keep {args.keep} --crawls {args.crawls}"
        f" --seconds {args.seconds} --rounds {args.rounds} --rows {args.rows}"
    )
    print(f"{command}\n{machine()}\nstart: {load()}", flush=True)
    with local_site() as site, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base, made = make_base(workdir, args.jobs)
        print(
            f"store of {args.jobs:,} ended jobs made in {made:.1f} s:"
            f" {store_size(str(base)) / 2**20:,.0f} MiB",
            flush=True,
        )
        rounds: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for number in range(args.rounds):
            # Alternated, the order swapped every round.
            for pruning in (False, True) if number % 2 == 0 else (True, False):
                tag = f"r{number}{'p' if pruning else 'q'}"
                result = run_round(site, base, workdir, tag, args, pruning)
                rounds[pruning].append(result)
                print(f"round {number + 1} {'with' if pruning else 'without'} prune: {result}")
                print(f"  {load()}", flush=True)
    print(f"\nMachine: {machine()}.\n`{command}`\n")
    print(
        "| Round | lock wait p99 without (ms) | with the prune (ms) | ratio | pruned |"
        " its lock held p99 / max (ms) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for number, (without, with_) in enumerate(zip(rounds[False], rounds[True], strict=True)):
        ratio = with_["wait_p99"] / without["wait_p99"]
        ratios.append(ratio)
        prune_ = with_["prune"]
        finished = "all" if prune_["done"] else "stopped with the crawls"
        print(
            f"| {number + 1} | {without['wait_p99'] * 1000:.2f} | {with_['wait_p99'] * 1000:.2f}"
            f" | {ratio:.2f} | {prune_['jobs']:,} in {prune_['seconds']:.0f} s ({finished}),"
            f" {prune_['batches']:,} batches | {prune_['held_p99'] * 1000:.1f} /"
            f" {prune_['held_max'] * 1000:.1f} |"
        )
    spread = (min(ratios), max(ratios))
    print(
        f"\nMedian ratio of the write-lock wait p99 (with / without the prune):"
        f" {statistics.median(ratios):.2f} (spread {spread[0]:.2f} to {spread[1]:.2f})"
    )


# -- week: keep_days over a simulated week --------------------------------------------


def week(location: str, args: argparse.Namespace, pruning: bool) -> list[int]:
    """The store's size at the end of each simulated day."""
    template = template_job(location)
    hourly = args.per_day // 24
    t0 = time.time() - args.days * DAY  # the week ends now
    retention = Retention(0, args.keep_days)
    sizes = []
    postgres = location.startswith("postgresql://")
    store = open_store(location)
    try:
        for hour in range(args.days * 24):
            start = t0 + hour * 3600
            fill(location, template, hourly, start, 3600 / hourly, start=hour * hourly)
            if pruning:
                prune(store, retention, now=start + 3600, pause=lambda _: None)
                if postgres and hour % VACUUM_EVERY == VACUUM_EVERY - 1:
                    # What autovacuum does over hours of a real week, which
                    # a week simulated in minutes leaves it no time for.
                    with connect(location) as conn:
                        conn.execute(
                            f"VACUUM {', '.join(('jobs', *CHILDREN, 'delivery_attempts'))}"
                        )
            if hour % 24 == 23:
                if not postgres:
                    with connect(location) as conn:
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                sizes.append(store_size(location))
    finally:
        store.close()
    return sizes


def week_benchmark(args: argparse.Namespace) -> None:
    command = (
        f"{COMMAND} week --per-day {args.per_day} --days {args.days}"
        f" --keep-days {args.keep_days:g} --db {args.db}"
    )
    print(f"{command}\n{machine()}\nstart: {load()}", flush=True)
    sizes = {}
    for pruning in (False, True):
        with store_location(args.db) as location:
            started = time.perf_counter()
            sizes[pruning] = week(location, args, pruning)
            took = time.perf_counter() - started
            print(f"{'pruned' if pruning else 'unpruned'} week in {took:.0f} s", flush=True)
    print(f"\nMachine: {machine()}.\n`{command}`\n")
    print(f"| Day | store, unpruned (MiB) | store, keep_days {args.keep_days:g} (MiB) |")
    print("|---:|---:|---:|")
    for day, (unpruned, pruned) in enumerate(zip(sizes[False], sizes[True], strict=True)):
        print(f"| {day + 1} | {unpruned / 2**20:.1f} | {pruned / 2**20:.1f} |")
    worth = int(args.keep_days) + 1
    limit = sizes[False][worth - 1]
    print(
        f"\nThe pruned store at the week's end: {sizes[True][-1] / 2**20:.1f} MiB;"
        f" {worth} days' worth (the unpruned store after day {worth}): {limit / 2**20:.1f} MiB:"
        f" {'under' if sizes[True][-1] < limit else 'NOT under'} it."
    )


@contextlib.contextmanager
def store_location(kind: str) -> Iterator[str]:
    if kind == "postgres":
        from tests.postgres import PostgresServer, temporary_database

        server = PostgresServer()
        try:
            with temporary_database(server.start().url()) as url:
                yield url
        finally:
            server.stop()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield str(Path(tmp) / "week.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="benchmark", required=True)
    lock = commands.add_parser("lock", help="a prune under crawls: their write-lock wait")
    lock.add_argument("--jobs", type=int, default=1_000_000, help="ended jobs in the store")
    lock.add_argument("--keep", type=int, default=100_000, help="keep_finished of the prune")
    lock.add_argument("--crawls", type=int, default=16, help="crawl processes at once")
    lock.add_argument("--seconds", type=int, default=25, help="CLOSESPIDER_TIMEOUT")
    lock.add_argument("--rounds", type=int, default=2, help="rounds with and without")
    lock.add_argument(
        "--rows", type=int, default=retention.ROWS_PER_BATCH, help="rows a transaction at most"
    )
    lock.add_argument("--delay", type=float, default=0.1, help="DOWNLOAD_DELAY of each crawl")
    days = commands.add_parser("week", help="keep_days over a simulated week")
    days.add_argument("--per-day", type=int, default=10_000, help="jobs a day")
    days.add_argument("--days", type=int, default=7, help="days simulated")
    days.add_argument("--keep-days", type=float, default=2, help="keep_days")
    days.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if args.benchmark == "lock":
        retention.ROWS_PER_BATCH = args.rows
        retention.JOBS_PER_BATCH = max(1, args.rows // 10)  # as the defaults
        lock_benchmark(args)
    else:
        week_benchmark(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
