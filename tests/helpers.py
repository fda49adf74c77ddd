"""Helpers shared by the tests: the local site, crawl processes, waiting."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")

# Settings every test crawl gets: no DNS query leaves the machine, and the
# test spiders are found beside the project's.
TEST_SETTINGS = {
    "TWISTED_DNS_RESOLVER": "tests.resolver.LoopbackResolver",
    "SPIDER_MODULES": "crawler.spiders,tests.spiders",
    "ROBOTSTXT_OBEY": "False",
    "LOG_LEVEL": "INFO",
}


@contextmanager
def local_site(env: dict[str, str] | None = None) -> Iterator[str]:
    """The local test website (``tests/site.py``) running; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.site"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one test at a time on the whole machine (the suite's workers,
    and any other run of it): for what cannot be made per test, such as a
    fixed port."""
    with open(Path(tempfile.gettempdir()) / f"jobstatus-tests-{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Takes a SQLite store's write lock, says so, and holds it until its stdin
# closes.
_SQLITE_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def sqlite_write_lock_held(db: Path | str) -> Iterator[None]:
    """Another process holds the SQLite store's write lock for the block, as
    a writer of another program would."""
    holder = subprocess.Popen(  # noqa: S603 (this Python)
        [sys.executable, "-c", _SQLITE_LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def stored_document(db: Path, job: str = "job1", errors_kept: int = 1000) -> dict | None:
    """The job's status document in a crawl's SQLite store, read only; None
    until the crawl has made the store and recorded the job."""
    from scrapy_jobstatus._store import StoreError, open_store

    if not db.exists():
        return None
    store = open_store(db, readonly=True)
    try:
        return store.document(job, errors_kept=errors_kept)
    except StoreError:
        return None  # the file made, its schema not yet
    finally:
        store.close()


def crawl_command(
    spider: str,
    db: Path,
    *,
    args: dict[str, str] | None = None,
    settings: dict[str, Any] | None = None,
    output: Path | None = None,
) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "crawl", spider]
    for key, value in (args or {}).items():
        command += ["-a", f"{key}={value}"]
    for key, value in {**TEST_SETTINGS, "JOBSTATUS_DB": str(db), **(settings or {})}.items():
        command += ["-s", f"{key}={value}"]
    if output is not None:
        command += ["-O", f"{output}:jsonlines"]
    return command


def start_crawl(spider: str, db: Path, log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """A real ``scrapy crawl`` process in the project, in the background."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            crawl_command(spider, db, **kwargs),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def run_crawl(spider: str, db: Path, log: Path, timeout: float = 120, **kwargs: Any) -> int:
    process = start_crawl(spider, db, log, **kwargs)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def scrapy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A scrapy command run in the project, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for(
    condition: Callable[[], Any], timeout: float = 30, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``condition`` returns something true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def poll_until(
    read: Callable[[], T],
    done: Callable[[T], Any],
    timeout: float = 60,
    interval: float = 0.05,
    what: str = "",
) -> list[T]:
    """Every reading of ``read`` until one satisfies ``done`` (the last one
    returned); an AssertionError naming ``what`` and the last reading if
    ``timeout`` seconds pass first."""
    readings: list[T] = []
    deadline = time.monotonic() + timeout
    while True:
        reading = read()
        readings.append(reading)
        if done(reading):
            return readings
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or done}; "
                f"last reading: {repr(reading)[:1000]}"
            )
        time.sleep(interval)


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def render_answer(resource: Any, request: Any) -> bytes:
    """A Twisted resource's whole answer to ``request`` (a DummyRequest),
    written at once or later (a service rendered in the node's threads)."""
    from scrapy.utils.defer import maybe_deferred_to_future
    from twisted.web.server import NOT_DONE_YET

    body = resource.render(request)
    if body is NOT_DONE_YET:
        if not request.finished:
            await maybe_deferred_to_future(request.notifyFinish())
        body = b"".join(request.written)
    assert isinstance(body, bytes)
    return body
