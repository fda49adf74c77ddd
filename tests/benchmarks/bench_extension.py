"""What the job extension costs a crawl.

Run by hand: ``python -m tests.benchmarks.bench_extension [--pages 3000] [--rounds 3]``.

The same crawl of the local test site (a tree of pages, every page a
response, one item per page) runs with the extension enabled and disabled,
alternated, for several rounds. It reports the throughput ratio
(enabled / disabled, median of the rounds), the peak memory of both, and the
number of store writes. Then it checks that memory does not grow with the
number of pages or of errors, by crawling 3x the pages and a crawl where half
the pages answer 404.
"""

from __future__ import annotations

import argparse
import ast
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import ROOT, crawl_command, local_site

STATS = re.compile(r"Dumping Scrapy stats:\n(\{.*?\})\n", re.S)


def crawl(site: str, pages: int, enabled: bool, workdir: Path, tag: str, broken: int = 0) -> dict:
    log = workdir / f"{tag}.log"
    command = crawl_command(
        "follow",
        workdir / f"{tag}.db",
        args={"url": f"{site}/pages/0?links=10&max={pages}&broken={broken}"},
        settings={
            "JOBSTATUS_ENABLED": str(enabled),
            "LOG_LEVEL": "INFO",
            "LOG_FILE": str(log),
            "CONCURRENT_REQUESTS": "16",
            "RETRY_ENABLED": "False",
            "JOBSTATUS_FAILURE_RATIO": "1",
            "LOGSTATS_INTERVAL": "0",
        },
    )
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    # The stats dump is a Python literal but for datetime values.
    text = re.sub(r"datetime\.datetime\([^)]*\)", "None", STATS.search(log.read_text()).group(1))
    stats = ast.literal_eval(text)
    return {
        "pages": stats["response_received_count"],
        "seconds": stats["elapsed_time_seconds"],
        "rate": stats["response_received_count"] / stats["elapsed_time_seconds"],
        "peak_mib": stats["memusage/max"] / 2**20,
        "writes": stats.get("jobstatus/store_writes"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with local_site() as site:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            crawl(site, 200, True, workdir, "warmup")
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for round_ in range(args.rounds):
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for enabled in order:
                    result = crawl(site, args.pages, enabled, workdir, f"r{round_}-{enabled}")
                    runs[enabled].append(result)
                    print(f"round {round_ + 1} {'enabled ' if enabled else 'disabled'}: "
                          f"{result['pages']} pages in {result['seconds']:.2f} s = {result['rate']:.0f} pages/s, "
                          f"peak {result['peak_mib']:.1f} MiB, store writes {result['writes']}")
            ratio = statistics.median(r["rate"] for r in runs[True]) / statistics.median(
                r["rate"] for r in runs[False]
            )
            print(f"\nthroughput ratio enabled/disabled (median of {args.rounds}): {ratio:.3f}")
            print(f"peak memory: enabled {max(r['peak_mib'] for r in runs[True]):.1f} MiB, "
                  f"disabled {max(r['peak_mib'] for r in runs[False]):.1f} MiB")
            for r in runs[True]:
                print(f"store writes: {r['writes']} for {r['pages']} pages in {r['seconds']:.1f} s "
                      f"({r['writes'] / r['seconds']:.2f} per second, interval 1 s)")

            big = crawl(site, args.pages * 3, True, workdir, "big")
            errors = crawl(site, args.pages // 2, True, workdir, "errors", broken=1)
            print(f"\n{big['pages']} pages: peak {big['peak_mib']:.1f} MiB, {big['writes']} store writes")
            print(f"{errors['pages']} pages, about half of them 404: peak {errors['peak_mib']:.1f} MiB, "
                  f"{errors['writes']} store writes")


if __name__ == "__main__":
    main()
