from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import local_site


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """The local test website's base URL (no trailing slash)."""
    with local_site() as url:
        yield url
