"""Running the crawler's jobs in tests: a real ``scrapy crawl`` process, its
items and its job's status document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapy_jobstatus import open_store
from tests.helpers import read_lines, run_crawl

FAST = {"JOBSTATUS_INTERVAL": "0.2", "RETRY_ENABLED": "False"}


@dataclass
class FinishedJob:
    returncode: int
    doc: dict[str, Any]
    items: list[dict[str, Any]]
    log: str


def run_job(
    tmp_path: Path,
    spider: str,
    args: dict[str, str],
    settings: dict[str, str] | None = None,
    job_id: str = "job1",
    timeout: float = 90,
) -> FinishedJob:
    db = tmp_path / "jobs.db"
    log = tmp_path / f"{job_id}.log"
    feed = tmp_path / f"{job_id}.jl"
    returncode = run_crawl(
        spider,
        db,
        log,
        timeout=timeout,
        args={**args, "_job": job_id},
        settings={**FAST, **(settings or {})},
        output=feed,
    )
    store = open_store(db, readonly=True)
    try:
        doc = store.document(job_id, errors_kept=1000)
    finally:
        store.close()
    assert doc is not None, log.read_text()[-3000:]
    return FinishedJob(returncode, doc, read_lines(feed), log.read_text())
