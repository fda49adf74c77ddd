"""A crawl whose store is unreachable keeps at most JOBSTATUS_PENDING_ERRORS
errors in memory for it: beyond, it counts them, says so once, and its job's
error report says how many were not recorded. A real crawl of the local site
whose SQLite store's write lock another process holds."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from scrapy.settings import BaseSettings

from scrapy_jobstatus import open_store
from scrapy_jobstatus._model import InvalidSetting, errors_not_recorded
from scrapy_jobstatus._settings import JobSettings
from scrapy_jobstatus._store import iter_errors
from tests.helpers import scrapy, sqlite_write_lock_held, start_crawl, stored_document, wait_for
from tests.scrapyd_node import ScrapydNode

ERRORS = 300
LIMIT = 50


def test_errors_beyond_the_limit_while_the_store_is_locked_are_counted_not_kept(
    tmp_path: Path, site: str
) -> None:
    db, log = tmp_path / "jobs.db", tmp_path / "crawl.log"
    urls = tmp_path / "urls.txt"
    # A slow first page: the lock is taken before the first error.
    lines = [f"{site}/slow?delay=3"] + [f"{site}/status/404?n={i}" for i in range(ERRORS)]
    urls.write_text("\n".join(lines) + "\n")
    process = start_crawl(
        "batch",
        db,
        log,
        args={"urls_file": str(urls), "_job": "job1"},
        settings={
            "JOBSTATUS_INTERVAL": "0.2",
            "JOBSTATUS_PENDING_ERRORS": str(LIMIT),
            "RETRY_ENABLED": "False",
            "CONCURRENT_REQUESTS": "1",
        },
    )
    try:
        wait_for(
            lambda: stored_document(db, errors_kept=0) is not None,
            timeout=60,
            what="the job to be recorded",
        )
        with sqlite_write_lock_held(db):
            # Every page fetched while the store cannot be written.
            wait_for(
                lambda: "Closing spider" in log.read_text(), timeout=120, what="the crawl to close"
            )
            assert process.poll() is None, "the crawl exited without waiting for the store"
    finally:
        if process.poll() is None:
            process.wait(90)
    assert process.returncode == 0, log.read_text()[-2000:]

    document = stored_document(db, errors_kept=0)
    assert document is not None and document["status"] in ("completed", "failed")
    # The true count, whatever was kept.
    assert document["error_count"] == ERRORS
    store = open_store(str(db), readonly=True)
    try:
        recorded = sum(1 for _ in iter_errors(store, "job1"))
    finally:
        store.close()
    not_recorded = errors_not_recorded(document["warnings"])
    assert not_recorded > 0 and recorded + not_recorded == ERRORS
    assert recorded <= 2 * LIMIT
    (warning,) = [w for w in document["warnings"] if "not recorded" in w]
    assert warning.startswith(f"{not_recorded} errors not recorded") and str(LIMIT) in warning
    text = log.read_text()
    assert text.count("JOBSTATUS_PENDING_ERRORS") == 1, text[-3000:]

    # The error report says it, on a node and from the command line.
    node = ScrapydNode(tmp_path / "node", jobstatus={"db": str(db)})
    node.start()
    try:
        report = node.get("joberrors.json", {"job": "job1"}).json()
        assert report["errors_not_recorded"] == not_recorded
        assert report["error_count"] == recorded and report["job"]["error_count"] == ERRORS
        table = node.get("joberrors.json", {"job": "job1", "format": "csv"})
        assert table.headers["Errors-Not-Recorded"] == str(not_recorded)
        assert len(list(csv.reader(io.StringIO(table.body.decode())))) == recorded + 1
    finally:
        node.stop()
    shown = scrapy("jobstatus", "job1", "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f"errors:      {ERRORS} ({not_recorded} not recorded)" in shown.stdout


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "many"])
def test_a_pending_errors_limit_that_is_not_a_whole_number_above_0_is_refused(value: str) -> None:
    with pytest.raises(InvalidSetting, match="JOBSTATUS_PENDING_ERRORS"):
        JobSettings.from_settings(BaseSettings({"JOBSTATUS_PENDING_ERRORS": value}))
