"""One benchmark on two versions of the library, alternated: a git revision's and this tree's.

Run by hand, alone on the machine:
``python -m tests.benchmarks.bench_trees --before REV [--rounds 2] -- MODULE [ARGS...]``,
e.g. ``python -m tests.benchmarks.bench_trees --before fa30006 --
tests.benchmarks.bench_extension --pages 3000 --rounds 5 --errors 0``.

Every round runs ``python -m MODULE ARGS`` once with each library, in turn
first. The revision's library (``git archive`` of its ``extensions/``) is
named in ``BENCH_LIBRARY``, which the benchmarks put first on the
``PYTHONPATH`` of the crawls they start (``bench_extension.python_path``); the benchmark
itself, and this tree's library, run from this tree. Then every figure of
the benchmark's tables (the first number in each cell of each row) is
compared: before and after, each the median of the rounds, and the median
of the per-round ratios after / before with their range.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tests.benchmarks.bench_extension import load, machine
from tests.helpers import ROOT

COMMAND = "python -m tests.benchmarks.bench_trees"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract(revision: str, into: Path) -> Path:
    """The library of a git revision of this repository, in ``into``."""
    archive = subprocess.run(
        ["git", "archive", revision, "extensions"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "extensions"


def figures(output: str) -> dict[tuple[str, int], float]:
    """The first number of every cell of the output's table rows, by the
    row's first cell (and its occurrence) and the cell's column."""
    found: dict[tuple[str, int], float] = {}
    seen: dict[str, int] = {}
    for line in output.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        label = cells[0]
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        for column, cell in enumerate(cells[1:], 1):
            match = NUMBER.search(cell)
            if match:
                found[(label, column)] = float(match.group().replace(",", ""))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REV", required=True, help="the git revision")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each library")
    parser.add_argument("benchmark", nargs=argparse.REMAINDER, help="MODULE [ARGS...]")
    args = parser.parse_args()
    benchmark = [a for a in args.benchmark if a != "--"]
    command = f"{COMMAND} --before {args.before} --rounds {args.rounds} -- {' '.join(benchmark)}"
    print(f"{command}\n{machine()}\nstart: {load()}", flush=True)
    runs: dict[str, list[dict[tuple[str, int], float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        library = str(extract(args.before, Path(tmp)))
        for round_ in range(args.rounds):
            sides = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for side in sides:
                env = {**os.environ, "BENCH_LIBRARY": library if side == "before" else ""}
                process = subprocess.run(
                    [sys.executable, "-m", *benchmark],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                print(f"\n## round {round_ + 1}, {side}\n\n{process.stdout}", flush=True)
                if process.returncode != 0:
                    sys.exit(f"the benchmark failed ({process.returncode}):\n{process.stderr}")
                runs[side].append(figures(process.stdout))
    print(f"\nend: {load()}\n\n`{command}`: before / after, medians of {args.rounds} rounds\n")
    print("| row | column | before | after | after / before, median (range) |")
    print("|---|---:|---:|---:|---:|")
    for key in runs["before"][0]:
        before = [run[key] for run in runs["before"] if key in run]
        after = [run[key] for run in runs["after"] if key in run]
        ratios = [a / b for a, b in zip(after, before, strict=False) if b]
        if not ratios:
            continue
        print(
            f"| {key[0]} | {key[1]} | {statistics.median(before):g} | {statistics.median(after):g}"
            f" | {statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) |"
        )


if __name__ == "__main__":
    main()
