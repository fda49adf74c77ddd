"""Retention of the job store, on both backends: which jobs a prune takes
(ended ones, the oldest first, whole), and how (small transactions)."""

# ruff: noqa: S608 (SQL of the test's own names and numbers)

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest

from scrapy_jobstatus._jobdir import JobDir
from scrapy_jobstatus._model import HistoryEvent, JobError, JobStatus
from scrapy_jobstatus._retention import DAY, ROWS_PER_BATCH, Retention, prune
from scrapy_jobstatus._store import Attempt, JobFilter
from tests.helpers import run_crawl, scrapy
from tests.test_store import execute, pending, running

TABLES = ("jobs", "errors", "events", "series", "deliveries", "delivery_attempts")
RECEIVER = "http://127.0.0.1:9/hook"


def count(location: str, table: str, where: str = "TRUE") -> int:
    sql = f"SELECT COUNT(*) FROM {table} WHERE {where}"
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return conn.execute(sql).fetchone()[0]
    with contextlib.closing(sqlite3.connect(location)) as conn:
        return conn.execute(sql).fetchone()[0]


def rows_of(location: str, job_id: str) -> dict[str, int]:
    """The rows of one job in each table."""
    job = f"(SELECT id FROM jobs WHERE job_id = '{job_id}')"
    return {
        "jobs": count(location, "jobs", f"job_id = '{job_id}'"),
        "errors": count(location, "errors", f"job = {job}"),
        "events": count(location, "events", f"job = {job}"),
        "series": count(location, "series", f"job = {job}"),
        "deliveries": count(location, "deliveries", f"job = {job}"),
        "delivery_attempts": count(
            location,
            "delivery_attempts",
            f"delivery IN (SELECT id FROM deliveries WHERE job = {job})",
        ),
    }


def ended_job(store, location, job_id: str, ended_at: float, errors: int = 2, **kwargs) -> None:
    """A job that ran, with errors, events, series points and a webhook
    delivery attempted once; it ended at ``ended_at``."""
    state = running(job_id, webhooks=[RECEIVER], **kwargs)
    store.start_job(state)
    error = JobError(error_type="other", error_message="x", timestamp=time.time())
    state.error_count += errors
    event = HistoryEvent(step="page", timestamp=time.time(), status="running")
    store.save(state, [error] * errors, [event])
    state.status = JobStatus.COMPLETED
    state.completed_at = time.time()
    store.save(state)
    for delivery in store.claim_deliveries(time.time(), 60, 10, job_id=job_id):
        store.record_attempt(delivery, Attempt(time.time(), 200, None, 5, True, None))
    execute(location, f"UPDATE jobs SET completed_at = {ended_at} WHERE job_id = '{job_id}'")


def test_a_pruned_job_goes_whole_and_active_or_paused_ones_stay(store, location):
    now = time.time()
    for i in range(6):
        ended_job(store, location, f"ended{i}", now - 600 + i)
    store.add_pending(pending("queued"))
    store.start_job(running("running"))
    paused = pending("paused")
    store.add_pending(paused)
    store.request_pause("paused")
    assert store.get("paused").status is JobStatus.PAUSED
    execute(location, "UPDATE jobs SET completed_at = 1 WHERE job_id IN ('queued', 'running')")
    before = rows_of(location, "ended0")
    assert all(before.values()), before  # a row in every table

    report = prune(store, Retention(keep_finished=3, keep_days=0), pause=lambda _: None)

    assert report.jobs == 3
    kept = {job.job_id for job in store.list_jobs(JobFilter()).jobs}
    assert kept == {"ended3", "ended4", "ended5", "queued", "running", "paused"}
    for gone in ("ended0", "ended1", "ended2"):
        assert set(rows_of(location, gone).values()) == {0}
    assert all(rows_of(location, "ended5").values())
    assert store.errors("ended5") and store.series("ended5") and store.webhook_log("ended5")


def test_keep_days_prunes_the_jobs_ended_before(store, location):
    now = time.time()
    ended_job(store, location, "old", now - 3 * DAY)
    ended_job(store, location, "older", now - 5 * DAY)
    ended_job(store, location, "recent", now - DAY / 2)
    report = prune(store, Retention(keep_finished=0, keep_days=2), pause=lambda _: None)
    assert report.jobs == 2
    assert [job.job_id for job in store.list_jobs(JobFilter()).jobs] == ["recent"]
    # 0 and 0: no limit, nothing goes.
    assert prune(store, Retention(0, 0)).jobs == 0
    assert store.get("recent") is not None


def test_a_prune_of_more_than_a_batch_takes_several_transactions(store, location):
    now = time.time()
    for i in range(5):
        # 600 errors each: more than a batch's rows.
        ended_job(store, location, f"big{i}", now - 100 + i, errors=600)
    ended_job(store, location, "newest", now)
    writes = store.writes
    pauses = []
    report = prune(store, Retention(keep_finished=1, keep_days=0), pause=pauses.append)
    assert report.jobs == 5
    # 3000 errors and their jobs, ROWS_PER_BATCH rows at most each.
    assert report.batches >= 3000 // ROWS_PER_BATCH
    assert store.writes - writes == report.batches
    # A pause between two batches of jobs; none after the last, nor after
    # the one batch that finds no schedule's tick records to prune.
    assert len(pauses) == report.batches - 2
    assert count(location, "errors") == 2  # the newest job's
    assert store.get("newest") is not None


def test_delivered_webhooks_go_after_their_age(store, location):
    now = time.time()
    ended_job(store, location, "a", now)
    execute(location, f"UPDATE deliveries SET created_at = {now - 3 * DAY}")
    ended_job(store, location, "b", now)  # delivered just now
    undelivered = running("c", webhooks=[RECEIVER])
    store.start_job(undelivered)  # job.started, still pending
    execute(
        location,
        f"UPDATE deliveries SET created_at = {now - 3 * DAY} WHERE status = 'pending'",
    )
    report = prune(store, Retention(0, 0, deliveries_for=2 * DAY), pause=lambda _: None)
    assert report.deliveries == 2  # a's started and completed
    assert store.webhook_log("a") == []
    assert len(store.webhook_log("b")) == 2
    assert len(store.webhook_log("c")) == 1  # pending: never pruned
    assert store.get("a") is not None


def test_a_busy_prune_elsewhere_makes_another_leave_it(store, location):
    if not location.startswith("postgresql://"):
        pytest.skip("SQLite's writes are one at a time already")
    import psycopg

    from scrapy_jobstatus._postgres import PRUNE_LOCK

    with psycopg.connect(location) as other:
        ended_job(store, location, "a", 1.0)
        ended_job(store, location, "b", time.time())
        other.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))  # held to its commit
        report = prune(store, Retention(1, 0))
        assert (report.busy, report.jobs) == (True, 0)
        other.commit()
        assert prune(store, Retention(1, 0)).jobs == 1


def test_jobdirs_of_pruned_plain_crawls_go_when_marked_as_theirs(store, location, tmp_path):
    from scrapy_jobstatus._jobdir import remove_pruned_jobdirs

    marked, foreign = tmp_path / "marked", tmp_path / "foreign"
    JobDir(marked).mark("a", resumable=False)
    JobDir(foreign).mark("someone-else", resumable=False)
    ended_job(store, location, "a", 1.0, jobdir=str(marked))
    ended_job(store, location, "b", 2.0, jobdir=str(foreign))
    ended_job(store, location, "c", time.time())
    assert prune(store, Retention(1, 0), pruned=remove_pruned_jobdirs).jobs == 2
    assert not marked.exists()
    assert foreign.exists()


def test_events_before_the_oldest_kept_are_told_apart(store, location):
    ended_job(store, location, "old", 1.0)
    ended_job(store, location, "new", time.time())
    assert store.first_event_id() == 1
    prune(store, Retention(1, 0))
    oldest = store.first_event_id()
    assert oldest > 1
    kept = store.events_after(oldest - 1)
    assert {job for _, job, _ in kept} == {"new"}


def test_scrapy_jobs_prune_applies_the_projects_retention(store, location):
    now = time.time()
    for i in range(4):
        ended_job(store, location, f"e{i}", now - 100 + i)
    ended_job(store, location, "ancient", now - 10 * DAY)
    store.start_job(running("active"))
    bad = scrapy("jobs", "--db", location, "--prune", "-s", "JOBSTATUS_KEEP_FINISHED=-1")
    assert bad.returncode == 2
    assert (
        bad.stderr == "error: JOBSTATUS_KEEP_FINISHED must be a whole number, 0 or more, got -1\n"
    )
    assert store.get("e0") is not None  # nothing lost

    by_days = scrapy("jobs", "--db", location, "--prune", "-s", "JOBSTATUS_KEEP_DAYS=5")
    assert by_days.returncode == 0 and "pruned 1 finished jobs" in by_days.stdout
    assert store.get("ancient") is None
    pruned = scrapy(
        "jobs", "--db", location, "--prune", "-s", "JOBSTATUS_KEEP_FINISHED=2", "--json"
    )
    assert pruned.returncode == 0 and pruned.stdout.startswith("pruned 2 finished jobs")
    assert [job.job_id for job in store.list_jobs(JobFilter()).jobs] == ["active", "e3", "e2"]


def test_a_plain_crawl_prunes_a_batch_at_its_end(store, location, tmp_path, site):
    now = time.time()
    for i in range(4):
        ended_job(store, location, f"e{i}", now - 100 + i)
    store.start_job(running("active"))
    log = tmp_path / "crawl.log"
    code = run_crawl(
        "batch",
        location,
        log,
        args={"urls": f"{site}/sample/apple", "_job": "crawl"},
        settings={"JOBSTATUS_KEEP_FINISHED": "2", "JOBSTATUS_KEEP_DAYS": "0"},
    )
    assert code == 0, log.read_text()
    assert store.get("crawl").status is JobStatus.COMPLETED
    kept = [job.job_id for job in store.list_jobs(JobFilter()).jobs]
    assert sorted(kept) == ["active", "crawl", "e3"]
    assert "Pruned 3 ended jobs from the job store" in log.read_text()
