"""What the job extension costs a crawl: throughput and peak memory.

Run by hand, alone on the machine (the figures are ratios of noisy timings):
``python -m tests.benchmarks.bench_extension [--pages 3000] [--rounds 15] [--errors 100000]``.

Throughput: the same crawl of the local test site (a tree of ``--pages``
pages, one item each, 16 concurrent requests, a JSON lines feed) runs with
the extension enabled and disabled, alternated, for ``--rounds`` rounds; the
order flips every round so that a drift of the machine does not favour one
side. A crawl's rate is its own ``response_received_count`` over its
``elapsed_time_seconds``. The result is the median of the per-round ratios
enabled / disabled, with their IQR and range. Beside it, the crawl
process's CPU time (all its threads, from the spider's opening to the
engine's stop, so the job's first and final writes included) per page: on a
machine shared with other work, wall-clock rates swing by tens of percent
from one run to the next, CPU time much less.

Memory: the crawl process's peak resident set (``VmHWM`` of
``/proc/self/status``, read at exit by a launcher around ``scrapy crawl``).
Not Scrapy's ``memusage/max``, which samples once a minute, nor
``ru_maxrss``, which also counts the image of the parent that forked the
crawl. Then the same comparison for a crawl of which ``--errors`` responses
are 404 errors: the extension writes each error to the store with the next
write and must not keep it in memory any longer, which the benchmark checks
by counting the errors each write takes (their maximum is what the
extension ever holds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured

from tests.helpers import ROOT, crawl_command, local_site

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

COMMAND = "python -m tests.benchmarks.bench_extension"
PROBE = "tests.benchmarks.bench_extension.BenchProbe"
# Links per page of the test site's tree, and 404 links per page in the
# errors crawl.
LINKS = 10
BROKEN = 10

# Runs ``scrapy`` with the arguments it is given and, at exit, writes the
# process's peak resident set (kB) to $BENCH_PEAK_FILE. VmHWM belongs to the
# process's memory map since exec: what was forked from the benchmark is
# not counted.
LAUNCHER = """\
import atexit, os, sys

def _peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(peak)

atexit.register(_peak)
from scrapy.cmdline import execute
execute(["scrapy", *sys.argv[1:]])
"""


class BenchProbe:
    """Benchmark-only extension, enabled in every run (so both sides carry
    it): writes the crawl's stats to ``BENCH_PROBE_FILE`` once the engine has
    stopped (after the job's final write), with the process's CPU time since
    the spider opened and, for each store write, when it took the unsaved
    errors from the job tracker and how many (patched in this process only)."""

    def __init__(self, crawler: Crawler, path: str):
        self.crawler = crawler
        self.path = path
        self.errors_taken: list[tuple[float, int]] = []
        self.cpu_started = 0.0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("BENCH_PROBE_FILE")
        if not path:
            raise NotConfigured
        probe = cls(crawler, path)
        from scrapy_jobstatus._tracker import JobTracker

        take_unsaved = JobTracker.take_unsaved

        def counted(tracker: JobTracker) -> Any:
            errors, events = taken = take_unsaved(tracker)
            probe.errors_taken.append((time.monotonic(), len(errors)))
            return taken

        JobTracker.take_unsaved = counted  # type: ignore[method-assign]
        # Connected before the job extension's handler (EXTENSIONS order 0):
        # the job's start is counted.
        crawler.signals.connect(probe.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(probe.engine_stopped, signal=signals.engine_stopped)
        return probe

    def spider_opened(self) -> None:
        self.cpu_started = time.process_time()

    def engine_stopped(self) -> None:
        cpu = time.process_time() - self.cpu_started
        stats = {
            key: value
            for key, value in self.crawler.stats.get_stats().items()
            if isinstance(value, int | float | str)
        }
        probe = {"stats": stats, "errors_taken": self.errors_taken, "cpu": cpu}
        Path(self.path).write_text(json.dumps(probe))


# -- figures ---------------------------------------------------------------------------


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def python_path() -> str:
    """The ``PYTHONPATH`` of a benchmark's crawls: the library named in
    ``BENCH_LIBRARY`` (by ``bench_trees``), if any, before this tree."""
    library = os.environ.get("BENCH_LIBRARY")
    return os.pathsep.join([library, str(ROOT)] if library else [str(ROOT)])


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


# -- crawls ----------------------------------------------------------------------------


def crawl(
    site: str, pages: int, enabled: bool, workdir: Path, tag: str, broken: int = 0
) -> dict[str, Any]:
    """One crawl process of the tree of ``pages`` pages (each with ``broken``
    404 links); its rate, peak memory and what the probe saw."""
    log, peak_file, probe_file = (workdir / f"{tag}.{ext}" for ext in ("log", "peak", "json"))
    command = crawl_command(
        "follow",
        # One store for all the crawls, as on a node: the store's creation
        # (some 40 ms, with its fsyncs) is paid by the warm-up, not by each job.
        workdir / "jobs.db",
        args={"url": f"{site}/pages/0?links={LINKS}&max={pages - 1}&broken={broken}"},
        settings={
            "JOBSTATUS_ENABLED": str(enabled),
            # Warnings only: the crawl's own logging would dilute what the
            # extension costs; the stats come from the probe.
            "LOG_LEVEL": "WARNING",
            "LOG_FILE": str(log),
            # The project's settings allow 8 requests per domain: the
            # local site is the only domain.
            "CONCURRENT_REQUESTS": "16",
            "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
            "RETRY_ENABLED": "False",
            "JOBSTATUS_FAILURE_RATIO": "1",
            "LOGSTATS_INTERVAL": "0",
            "TELNETCONSOLE_ENABLED": "False",
            "EXTENSIONS": json.dumps({PROBE: 0}),
            "BENCH_PROBE_FILE": str(probe_file),
        },
        output=workdir / f"{tag}.jl",
    )
    assert command[1:3] == ["-m", "scrapy"], command
    command[1:3] = ["-c", LAUNCHER]
    started = time.perf_counter()
    process = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHONPATH": python_path(), "BENCH_PEAK_FILE": str(peak_file)},
    )
    wall = time.perf_counter() - started
    if process.returncode != 0 or not probe_file.exists():
        raise RuntimeError(f"crawl {tag} failed ({process.returncode}): {process.stderr[-3000:]}")
    probe = json.loads(probe_file.read_text())
    stats = probe["stats"]
    problems = [line for line in log.read_text().splitlines() if "] ERROR:" in line]
    for path in (log, workdir / f"{tag}.jl"):
        path.unlink(missing_ok=True)
    responses = stats["response_received_count"]
    return {
        "pages": responses,
        "seconds": stats["elapsed_time_seconds"],
        "wall": wall,
        "rate": responses / stats["elapsed_time_seconds"],
        "cpu_ms_per_page": probe["cpu"] * 1000 / responses,
        "peak_mib": int(peak_file.read_text()) / 1024,
        "writes": stats.get("jobstatus/store_writes"),
        "errors": stats.get("jobstatus/responses_failed"),
        "status_404": stats.get("downloader/response_status_count/404", 0),
        "errors_taken": probe["errors_taken"],
        "log_errors": problems,
    }


def describe(tag: str, result: dict[str, Any]) -> str:
    return (
        f"{tag}: {result['pages']} responses in {result['seconds']:.2f} s = "
        f"{result['rate']:.0f}/s, CPU {result['cpu_ms_per_page']:.3f} ms/page, "
        f"peak RSS {result['peak_mib']:.1f} MiB, "
        f"store writes {result['writes']}"
        + (f", {len(result['log_errors'])} ERROR lines" if result["log_errors"] else "")
    )


def alternated(
    rounds: int, run: Any, label: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``rounds`` pairs of runs, enabled first in even rounds, disabled first
    in odd ones."""
    enabled: list[dict[str, Any]] = []
    disabled: list[dict[str, Any]] = []
    for round_ in range(rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        for on in order:
            result = run(on, f"{label}{round_}-{'on' if on else 'off'}")
            (enabled if on else disabled).append(result)
            side = "enabled " if on else "disabled"
            print(describe(f"{label} round {round_ + 1:2d} {side}", result), flush=True)
        ratio = enabled[-1]["rate"] / disabled[-1]["rate"]
        cpu = enabled[-1]["cpu_ms_per_page"] / disabled[-1]["cpu_ms_per_page"]
        print(
            f"{label} round {round_ + 1:2d} enabled/disabled: rate {ratio:.3f}, "
            f"CPU per page {cpu:.3f}",
            flush=True,
        )
    return enabled, disabled


def ratio_cell(ratios: list[float], bold: bool = False) -> str:
    q1, median, q3 = quartiles(ratios)
    shown = f"**{median:.3f}**" if bold else f"{median:.3f}"
    if len(ratios) == 1:
        return shown
    return f"{shown} (IQR {q1:.3f}–{q3:.3f}, range {min(ratios):.3f}–{max(ratios):.3f})"


def paired(enabled: list[dict[str, Any]], disabled: list[dict[str, Any]], key: str) -> list[float]:
    return [on[key] / off[key] for on, off in zip(enabled, disabled, strict=True)]


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def held_errors(runs: list[dict[str, Any]]) -> tuple[int, float]:
    """The most errors one write took, and the longest time between two
    writes while the crawl ran: what the job ever held in memory, and for
    how long at most."""
    most = max((n for run in runs for _, n in run["errors_taken"]), default=0)
    gaps = [
        later - earlier
        for run in runs
        for (earlier, _), (later, _) in itertools.pairwise(run["errors_taken"])
    ]
    return most, max(gaps, default=0.0)


def report(
    args: argparse.Namespace,
    command: str,
    runs: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    error_runs: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    enabled, disabled = runs
    err_on, err_off = error_runs
    ratios = paired(enabled, disabled, "rate")
    cpu_ratios = paired(enabled, disabled, "cpu_ms_per_page")
    log_errors = sum(len(r["log_errors"]) for r in [*enabled, *disabled, *err_on, *err_off])
    print(
        f"\nPer-round rate ratios: {', '.join(f'{r:.3f}' for r in ratios)}\n"
        f"Per-round CPU per page ratios: {', '.join(f'{r:.3f}' for r in cpu_ratios)}\n"
        f"ERROR lines in the crawl logs: {log_errors}"
    )
    if err_on:
        recorded = [(r["errors"], r["status_404"]) for r in err_on]
        print(f"Errors recorded by the job / 404 responses, errors crawl: {recorded}")
    print(f"\nMachine: {machine()}.\n`{command}`\n")
    print("| Crawl | Extension enabled | Extension disabled | Enabled / disabled |")
    print("|---|---:|---:|---:|")
    print(
        f"| {enabled[0]['pages']:,} pages, 16 concurrent requests, feed: throughput, median "
        f"of {args.rounds} alternated rounds | {median(enabled, 'rate'):.0f} pages/s | "
        f"{median(disabled, 'rate'):.0f} pages/s | {ratio_cell(ratios, bold=True)} |"
    )
    print(
        f"| same crawl: CPU time per page (crawl process, all threads), median | "
        f"{median(enabled, 'cpu_ms_per_page'):.3f} ms | "
        f"{median(disabled, 'cpu_ms_per_page'):.3f} ms | {ratio_cell(cpu_ratios)} |"
    )
    peak_on, peak_off = median(enabled, "peak_mib"), median(disabled, "peak_mib")
    print(
        f"| same crawl: peak RSS, median | {peak_on:.1f} MiB | {peak_off:.1f} MiB | "
        f"{peak_on / peak_off:.3f} ({peak_on - peak_off:+.1f} MiB) |"
    )
    print(
        f"| same crawl: store writes, median | {median(enabled, 'writes'):.0f} in "
        f"{median(enabled, 'seconds'):.1f} s (start, one a second, final) | – | – |"
    )
    if not err_on:
        return
    of = ", median" if len(err_on) > 1 else ""
    responses, errors = err_on[0]["pages"], err_on[0]["status_404"]
    epeak_on, epeak_off = median(err_on, "peak_mib"), median(err_off, "peak_mib")
    print(
        f"| {responses:,} responses, {errors:,} of them 404 errors: peak RSS{of} | "
        f"{epeak_on:.1f} MiB | {epeak_off:.1f} MiB | "
        f"**{epeak_on / epeak_off:.3f}** ({epeak_on - epeak_off:+.1f} MiB) |"
    )
    most, gap = held_errors(err_on)
    print(
        f"| same crawl: errors held in memory until a write takes them | {most:,} at most; "
        f"{gap:.2f} s at most between two writes (interval 1 s) | – | – |"
    )
    print(
        f"| same crawl: throughput{of} | {median(err_on, 'rate'):.0f} responses/s | "
        f"{median(err_off, 'rate'):.0f} responses/s | "
        f"{ratio_cell(paired(err_on, err_off, 'rate'))} |"
    )
    print(
        f"| same crawl: CPU time per response{of} | {median(err_on, 'cpu_ms_per_page'):.3f} ms | "
        f"{median(err_off, 'cpu_ms_per_page'):.3f} ms | "
        f"{ratio_cell(paired(err_on, err_off, 'cpu_ms_per_page'))} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3000, help="pages of the throughput crawl")
    parser.add_argument("--rounds", type=int, default=15, help="enabled + disabled pairs")
    parser.add_argument(
        "--errors", type=int, default=100000, help="404s of the errors crawl (0: no errors crawl)"
    )
    parser.add_argument("--error-rounds", type=int, default=1, help="pairs of errors crawls")
    args = parser.parse_args()
    command = f"{COMMAND} --pages {args.pages} --rounds {args.rounds} --errors {args.errors}"
    if args.error_rounds != 1:
        command += f" --error-rounds {args.error_rounds}"
    print(f"{command}\n{machine()}\nstart: {load()}", flush=True)

    with local_site() as site, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for on in (True, False):  # warm-up: imports, disk caches, the site, the store
            crawl(site, 300, on, workdir, f"warmup-{on}")
        runs = alternated(
            args.rounds, lambda on, tag: crawl(site, args.pages, on, workdir, tag), "pages"
        )
        error_runs: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        if args.errors:
            pages = max(1, args.errors // BROKEN)
            error_runs = alternated(
                args.error_rounds,
                lambda on, tag: crawl(site, pages, on, workdir, tag, broken=BROKEN),
                "errors",
            )
    print(f"end: {load()}")
    report(args, command, runs, error_runs)


if __name__ == "__main__":
    main()
