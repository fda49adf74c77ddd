"""A crawl's memory while its store is unreachable: JOBSTATUS_PENDING_ERRORS.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``python -m tests.benchmarks.bench_pending_errors
[--rounds 1] [--errors 100000] [--concurrency 32]``.

Real parts: the local test site and ``scrapy crawl error_pages`` (tests/spiders/probe.py):
``--errors`` pages answered 404, each one job error, on a SQLite store. Three crawls a
round, in turns:

- ``store up``: the store takes every write (the errors written every interval);
- ``outage``: once the job is recorded, another process holds the store's write lock until
  the crawl closes (every write of the crawl fails meanwhile), with the default
  JOBSTATUS_PENDING_ERRORS (10,000);
- ``outage, no bound``: the same with JOBSTATUS_PENDING_ERRORS above ``--errors``: what the
  crawl would keep without the bound.

Reported for each: the crawl process's peak resident memory (``ru_maxrss`` from
``os.wait4``), its growth over ``store up`` (target for ``outage``: ≤ 10 MiB), the errors
recorded and counted, and the time. The machine's load average is printed beside. Figures are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from scrapy_jobstatus import open_store
from scrapy_jobstatus._model import errors_not_recorded
from scrapy_jobstatus._store import iter_errors
from tests.helpers import (
    ROOT,
    crawl_command,
    local_site,
    sqlite_write_lock_held,
    stored_document,
    wait_for,
)

KINDS = ("store up", "outage", "outage, no bound")


def crawl(workdir: Path, site: str, kind: str, errors: int, concurrency: int) -> dict:
    db, log = workdir / f"{kind}.db".replace(" ", "_"), workdir / f"{kind}.log".replace(" ", "_")
    settings = {
        "JOBSTATUS_INTERVAL": "1",
        # The project's 300 s would stop a long crawl on a loaded machine.
        "JOBSTATUS_TIMEOUT": "1800",
        "RETRY_ENABLED": "False",
        "CONCURRENT_REQUESTS": str(concurrency),
        "CONCURRENT_REQUESTS_PER_DOMAIN": str(concurrency),
        "LOG_LEVEL": "INFO",
        "LOG_FILE": str(log),
    }
    if kind == "outage, no bound":
        settings["JOBSTATUS_PENDING_ERRORS"] = str(errors + 1)
    command = crawl_command(
        "error_pages",
        db,
        args={"site": site, "count": str(errors), "_job": "job1"},
        settings=settings,
    )
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 (this Python)
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if kind != "store up":
        wait_for(
            lambda: stored_document(db, errors_kept=0) is not None,
            timeout=60,
            what="the job to be recorded",
        )
        with sqlite_write_lock_held(db):
            wait_for(
                lambda: log.exists() and "Closing spider" in log.read_text(),
                timeout=3600,
                interval=0.5,
                what="the crawl to close",
            )
    # The crawl process's own peak resident memory.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode:
        raise SystemExit(f"the crawl failed ({process.returncode}): see {log}")
    doc = stored_document(db, errors_kept=0)
    assert doc is not None
    store = open_store(str(db), readonly=True)
    try:
        recorded = sum(1 for _ in iter_errors(store, "job1"))
    finally:
        store.close()
    return {
        "peak_mib": usage.ru_maxrss / 1024,
        "seconds": seconds,
        "counted": doc["error_count"],
        "recorded": recorded,
        "not_recorded": errors_not_recorded(doc["warnings"]),
        "status": doc["status"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--errors", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    results: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    with local_site() as site, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(options.rounds):
            for kind in KINDS:
                workdir = Path(tmp) / f"round{round_}"
                workdir.mkdir(exist_ok=True)
                result = crawl(workdir, site, kind, options.errors, options.concurrency)
                results[kind].append(result)
                print(
                    f"round {round_ + 1} {kind:>17}: peak {result['peak_mib']:.1f} MiB,"
                    f" {result['counted']} errors counted, {result['recorded']} recorded,"
                    f" {result['not_recorded']} not recorded, {result['status']},"
                    f" {result['seconds']:.0f} s; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    base = statistics.median(r["peak_mib"] for r in results["store up"])
    print(f"\nmedians of {options.rounds} round(s), {options.errors:,} errors:")
    for kind in KINDS:
        peak = statistics.median(r["peak_mib"] for r in results[kind])
        print(f"  {kind:>17}: peak RSS {peak:.1f} MiB, growth over store up {peak - base:+.1f} MiB")


if __name__ == "__main__":
    main()
