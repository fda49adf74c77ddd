"""The dashboard's scripts without a browser: the pages-per-minute chart's
arithmetic and the page's poll loop, unit-tested in tests/js/ with Node.js's
own test runner (``node --test``), run here so the suite's one command runs
them too."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.helpers import ROOT

NODE = shutil.which("node")
TESTS = sorted((ROOT / "tests" / "js").glob("*.test.mjs"))


def test_the_script_tests_pass_under_node() -> None:
    assert NODE, "Node.js is missing: apt-get install nodejs (scripts/test.sh installs it)"
    assert TESTS, "no tests in tests/js/"
    # Each file named: node 20 and later read a folder argument differently.
    run = subprocess.run(  # noqa: S603 (a fixed command)
        [NODE, "--test", *map(str, TESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # Every file ran tests, and none was skipped or left to do.
    counts = dict(re.findall(r"^# (pass|fail|skipped|todo) (\d+)$", run.stdout, re.MULTILINE))
    assert int(counts["pass"]) >= len(TESTS), output
    assert counts["fail"] == counts["skipped"] == counts["todo"] == "0", output
