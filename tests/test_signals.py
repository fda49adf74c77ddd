"""The process's one handler of SIGINT and SIGTERM, shared by its crawls:
installed once, given back after the last crawl, every crawl told. Its
real crawls are tests/test_reactor_modes.py's and tests/test_faults.py's."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from scrapy_jobstatus._signals import SHUTDOWN_SIGNALS, ShutdownSignals


class Crawl:
    def __init__(self) -> None:
        self.heard: list[tuple[str, int]] = []

    def shutdown_signal(self, name: str, count: int, received_at: float) -> None:
        self.heard.append((name, count))


def python_default(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def handlers() -> Iterator[dict[int, object]]:
    """Known handlers, set when the test runs (the test process's reactor
    installs its own as it starts); those of the test process put back after
    it whatever happens."""
    before = {signum: signal.getsignal(signum) for signum in SHUTDOWN_SIGNALS}
    known: dict[int, object] = {}
    yield known
    for signum, handler in before.items():
        signal.signal(signum, handler)


def set_known(handlers: dict[int, object]) -> None:
    for signum in SHUTDOWN_SIGNALS:
        signal.signal(signum, python_default)
        handlers[signum] = python_default


def test_one_handler_serves_every_crawl_and_is_given_back_after_the_last(handlers):
    set_known(handlers)
    shutdown = ShutdownSignals()
    first, second = Crawl(), Crawl()
    shutdown.register(first)
    shutdown.register(second)
    for signum in SHUTDOWN_SIGNALS:
        assert signal.getsignal(signum) == shutdown._handle
    shutdown.unregister(first)
    assert signal.getsignal(signal.SIGTERM) == shutdown._handle
    shutdown.unregister(second)
    assert {signum: signal.getsignal(signum) for signum in SHUTDOWN_SIGNALS} == handlers


def test_every_crawl_hears_the_first_and_second_signal_and_a_later_one_at_once(handlers):
    set_known(handlers)
    shutdown = ShutdownSignals()
    first, second = Crawl(), Crawl()
    shutdown.register(first)
    shutdown.register(second)
    shutdown._dispatch(signal.SIGTERM, 1)
    shutdown._dispatch(signal.SIGINT, 2)
    assert first.heard == second.heard == [("SIGTERM", 1), ("SIGINT", 2)]
    # A crawl made once the process is shutting down is stopped as it opens.
    late = Crawl()
    shutdown.register(late)
    assert late.heard == [("SIGTERM", 1)]
    for crawl in (first, second, late):
        shutdown.unregister(crawl)


def test_a_handler_that_is_not_ours_any_more_is_left_alone(handlers):
    set_known(handlers)
    shutdown = ShutdownSignals()
    crawl = Crawl()
    shutdown.register(crawl)

    def users_own(signum, frame):
        pass

    signal.signal(signal.SIGTERM, users_own)
    shutdown.unregister(crawl)
    assert signal.getsignal(signal.SIGTERM) is users_own
    assert signal.getsignal(signal.SIGINT) == handlers[signal.SIGINT]
