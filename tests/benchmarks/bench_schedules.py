"""Periodic schedules: the firing lag, from a tick to its job queued.

Run by hand, under the lock that the other benchmarks take, so that two never run at once:
``python -m tests.benchmarks.bench_schedules [--seconds 60]
[--parts 1,2]``.

Real parts: ``scrapyd`` processes with the shipped scrapyd.conf, the project deployed with
scrapyd-deploy, a schedule ``every=1`` made with ``addschedule.json``, its jobs real crawls
(the ``batch`` spider on one page of the local test site) run by the real queue.

1. One node on SQLite.
2. Three nodes sharing a throwaway PostgreSQL server (``tests/postgres.py``).

For ``--seconds`` seconds, then the schedule disabled. The lag of each tick is its claim's
time less the tick, both by the store's clock, as the schedule's history records them (the
job is queued in the same transaction). Checked: one job per tick, none left out, none
missed. Reported: the median, the 90th percentile and the largest lag, their spread
(standard deviation), and which nodes claimed the ticks. Figures are reported, never
asserted; a ``BenchmarkError`` stops the run. Every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, closing
from pathlib import Path

from scrapy_jobstatus._store import open_store
from tests.helpers import local_site, wait_for
from tests.postgres import PostgresServer, temporary_database
from tests.scrapyd_node import PROJECT, ScrapydNode


class BenchmarkError(AssertionError):
    pass


def run(nodes: list[ScrapydNode], db: str, site: str, seconds: float, label: str) -> None:
    name = f"bench-{int(time.time())}"
    answer = nodes[0].post(
        "addschedule.json",
        {
            "project": PROJECT,
            "name": name,
            "spider": "batch",
            "every": "1",
            "urls": f"{site}/sample/",
        },
    )
    if answer.code != 200:
        raise BenchmarkError(answer.body)
    started = time.time()
    wait_for(lambda: time.time() - started >= seconds, timeout=seconds + 10, interval=0.5)
    nodes[-1].post("addschedule.json", {"project": PROJECT, "name": name, "enabled": "0"})
    with closing(open_store(db)) as store:
        [info] = store.schedules(PROJECT, name, history=100_000)
    fired = sorted((r for r in info.history if str(r.outcome) == "fired"), key=lambda r: r.tick)
    ticks = [r.tick for r in fired]
    if ticks != [ticks[0] + i for i in range(len(ticks))] or info.missed or info.skipped:
        raise BenchmarkError(f"ticks left out: {len(ticks)} fired, {info.missed} missed")
    lags = sorted(r.lag * 1000 for r in fired)
    deciles = statistics.quantiles(lags, n=10)
    print(
        f"{label}: {len(lags)} ticks, lag median {statistics.median(lags):.1f} ms,"
        f" p90 {deciles[-1]:.1f} ms, max {lags[-1]:.1f} ms, stdev {statistics.stdev(lags):.1f} ms;"
        f" claimed by {dict(Counter(r.node for r in fired))}"
    )


def one_node(root: Path, site: str, seconds: float) -> None:
    node = ScrapydNode(root / "one", options={"poll_interval": "1"})
    try:
        node.start()
        node.deploy()
        run([node], str(node.db), site, seconds, "1 node, SQLite")
    finally:
        node.stop()


def three_nodes(root: Path, site: str, seconds: float) -> None:
    with ExitStack() as stack:
        server = PostgresServer()
        stack.callback(server.stop)
        url = stack.enter_context(temporary_database(server.start().url()))
        nodes = [
            ScrapydNode(
                root / f"node{i}",
                options={"node_name": f"node{i}", "poll_interval": "1"},
                jobstatus={"db": url},
            )
            for i in (1, 2, 3)
        ]
        for node in nodes:
            stack.callback(node.stop)
            node.start()
        nodes[0].deploy()
        run(nodes, url, site, seconds, "3 nodes, PostgreSQL")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--parts", default="1,2")
    options = parser.parse_args()
    parts = {int(p) for p in options.parts.split(",")}
    with tempfile.TemporaryDirectory() as tmp, local_site() as site:
        if 1 in parts:
            one_node(Path(tmp), site, options.seconds)
        if 2 in parts:
            three_nodes(Path(tmp), site, options.seconds)


if __name__ == "__main__":
    main()
