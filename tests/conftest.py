from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import local_site


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """The local test website's base URL (no trailing slash)."""
    with local_site() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session: the URL of its
    superuser on its maintenance database. Make a database per test with
    ``tests.postgres.temporary_database``. Fails (no skip) without PostgreSQL:
    scripts/test.sh installs it."""
    from tests.postgres import PostgresNotInstalled, PostgresServer

    try:
        server = PostgresServer()
    except PostgresNotInstalled as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server.start().url()
    finally:
        server.stop()
