from __future__ import annotations

import importlib.util
import signal
from collections.abc import Iterator

import pytest
import scrapy

from scrapy_jobstatus._store import open_store
from tests.helpers import local_site
from tests.postgres import temporary_database


def pytest_configure(config: pytest.Config) -> None:
    # The crawls and programs the tests interrupt get Ctrl-C as a terminal
    # gives it. A shell's background job (scripts/test.sh runs the lowest
    # Scrapy's tests in one, as CI may run the suite) ignores SIGINT, its
    # children inherit that, and Python and Scrapy leave SIGINT ignored.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> Iterator[str]:
    """A new store's location on each backend: a SQLite path, or the URL of
    a new PostgreSQL database (dropped after the test)."""
    if request.param == "sqlite":
        yield str(tmp_path / "sub" / "jobs.db")
    else:
        with temporary_database(request.getfixturevalue("postgres_url")) as url:
            yield url


@pytest.fixture
def store(location):
    store = open_store(location)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """For what only a SQLite store has: its file."""
    store = open_store(tmp_path / "sub" / "jobs.db")
    yield store
    store.close()


# Scrapy runs a crawl on a Twisted reactor (asyncio's, by default) or, from
# Scrapy 2.15, without one (TWISTED_REACTOR_ENABLED = False).
REACTOR_MODES = {
    "asyncio": {},
    "reactorless": {"TWISTED_REACTOR_ENABLED": "False"},
}


@pytest.fixture(params=list(REACTOR_MODES))
def reactor_mode(request) -> dict[str, str]:
    """The same crawl test in both of Scrapy's modes: the settings that
    select the mode, to add to a crawl's."""
    if request.param == "reactorless" and not scrapy_has_reactorless():
        pytest.skip(f"Scrapy {scrapy.__version__} has no reactorless mode (2.15+)")
    return dict(REACTOR_MODES[request.param])


def scrapy_has_reactorless() -> bool:
    return importlib.util.find_spec("scrapy.utils.reactorless") is not None
