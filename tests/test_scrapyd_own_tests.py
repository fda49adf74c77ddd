"""End to end: Scrapyd's own integration tests pass against a node with our
shipped scrapyd.conf (our queue, poller, job and egg storage, launcher and web
root), on SQLite and on PostgreSQL.

The tests come from the sdist of the installed Scrapyd, downloaded with pip
(PyPI access needed: without it this test fails, it never skips), and run
unchanged in a ``python -m pytest`` subprocess, except for the node's address.
They cover every Scrapyd service's OPTIONS, basic auth (401 without or with
wrong credentials), project names with ``../`` refused, the answers of every
service on an empty node, and the web root, jobs and logs pages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import scrapyd

from tests.postgres import temporary_database
from tests.scrapyd_node import ScrapydNode

# The credentials Scrapyd's integration tests send.
AUTH = ("hello12345", "67890world")


@pytest.fixture(scope="module")
def integration_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scrapyd's sdist unpacked: its integration_tests/ and their fixtures."""
    download = tmp_path_factory.mktemp("scrapyd-sdist")
    pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    result = subprocess.run(
        [*pip, f"scrapyd=={scrapyd.__version__}", "-d", str(download)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    (sdist,) = download.glob("scrapyd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(download, filter="data")
    return download / f"scrapyd-{scrapyd.__version__}"


@pytest.fixture(params=["sqlite", "postgres"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScrapydNode]:
    """An empty node with Scrapyd's test credentials."""
    with ExitStack() as stack:
        jobstatus = {}
        if request.param == "postgres":
            url = request.getfixturevalue("postgres_url")
            jobstatus["db"] = stack.enter_context(temporary_database(url))
        node = ScrapydNode(tmp_path / "node", auth=AUTH, jobstatus=jobstatus)
        # The logs page serves logs_dir, which Scrapyd makes at the first crawl.
        (node.workdir / "logs").mkdir()
        stack.callback(node.stop)
        yield node.start()


def test_scrapyd_integration_tests_pass(
    integration_tests: Path, node: ScrapydNode, tmp_path: Path
) -> None:
    sdist = shutil.copytree(integration_tests, tmp_path / "scrapyd")
    # They target http://127.0.0.1:6800, hard-coded: point them at the node.
    for path in (sdist / "integration_tests").glob("*.py"):
        path.write_text(path.read_text().replace("127.0.0.1:6800", f"127.0.0.1:{node.port}"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", "integration_tests"],
        cwd=sdist,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\nscrapyd.log:\n" + node.log.read_text()[-5000:]
    )
