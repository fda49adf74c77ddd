from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """The local test website's base URL (no trailing slash)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.site"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    process.terminate()
    process.wait(10)
    process.stdout.close()
