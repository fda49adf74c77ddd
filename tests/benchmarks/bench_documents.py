"""The documents job on a real documentation site, with and without the job
extension.

Run by hand: ``python tests/benchmarks/bench_documents.py [--rounds 5]
[--corpus DIR] [--start PATH]``.

The local test site serves the corpus (by default the Debian Policy Manual
of the debian-policy package; ``--corpus`` serves another directory of
HTML, e.g. python3.11-doc's ``/usr/share/doc/python3.11/html``) and the
documents spider crawls all of it from ``--start`` (by default the corpus's
directory listing), with the extension enabled and disabled, alternated.
It reports pages per second (responses over Scrapy's elapsed time) and peak
resident memory (the crawl process's ``ru_maxrss``) of each run, and the medians.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: the project's root is where the tests package is.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixture_site import CORPUS  # noqa: E402
from tests.helpers import ROOT, crawl_command, local_site  # noqa: E402

STATS = re.compile(r"Dumping Scrapy stats:\n(\{.*?\})\n", re.S)


def crawl(url: str, enabled: bool, workdir: Path, tag: str) -> dict:
    log = workdir / f"{tag}.log"
    command = crawl_command(
        "documents",
        workdir / f"{tag}.db",
        args={"url": url},
        settings={
            "JOBSTATUS_ENABLED": str(enabled),
            "LOG_LEVEL": "INFO",
            "LOG_FILE": str(log),
            "LOGSTATS_INTERVAL": "0",
            "RETRY_ENABLED": "False",
        },
        output=workdir / f"{tag}.jl",
    )
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    # The crawl process's own peak resident memory (Scrapy's memusage/max is
    # sampled once a minute only).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"the crawl failed ({process.returncode}): see {log}")
    # The stats dump is a Python literal but for datetime values.
    text = re.sub(r"datetime\.datetime\([^)]*\)", "None", STATS.search(log.read_text()).group(1))
    stats = ast.literal_eval(text)
    return {
        "pages": stats["response_received_count"],
        "documents": stats.get("item_scraped_count", 0),
        "seconds": stats["elapsed_time_seconds"],
        "rate": stats["response_received_count"] / stats["elapsed_time_seconds"],
        "peak_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--start", default="", help="the start page, relative to the corpus")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"{args.corpus} is not a directory (apt-get install debian-policy)")
    with local_site({"JOBSTATUS_TEST_CORPUS": str(args.corpus)}) as site:
        url = f"{site}/corpus/{args.start}"
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            crawl(url, True, workdir, "warmup")
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for round_ in range(args.rounds):
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for enabled in order:
                    result = crawl(url, enabled, workdir, f"r{round_}-{enabled}")
                    runs[enabled].append(result)
                    print(f"round {round_ + 1} {'enabled ' if enabled else 'disabled'}: "
                          f"{result['pages']} pages, {result['documents']} documents in "
                          f"{result['seconds']:.2f} s = {result['rate']:.0f} pages/s, "
                          f"peak {result['peak_mib']:.1f} MiB")  # fmt: skip
            print(f"\ncorpus {args.corpus}, start /{args.start}, median of {args.rounds} rounds:")
            for enabled in (True, False):
                rate = statistics.median(r["rate"] for r in runs[enabled])
                peak = statistics.median(r["peak_mib"] for r in runs[enabled])
                state = "enabled " if enabled else "disabled"
                print(f"  extension {state}: {rate:.0f} pages/s, peak {peak:.1f} MiB")


if __name__ == "__main__":
    main()
