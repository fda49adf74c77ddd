"""The store's pause and resume requests, and its retries of failed
attempts, on every backend."""

from __future__ import annotations

import os
import time

import pytest

from scrapy_jobstatus._model import JobError, JobState, JobStatus, isoformat, pending_job
from scrapy_jobstatus._store import JobNotFound
from tests.helpers import wait_for

JOBDIR = "/jobdirs/j1"


def queued(job_id: str = "j1", **kwargs) -> JobState:
    """A job waiting in the queue for the first node with a free slot."""
    return pending_job(job_id, project="p", spider="batch", node=None, **kwargs)


def crawl(job_id: str = "j1", jobdir: str | None = JOBDIR, node: str = "n1") -> JobState:
    """What a crawl starting the job writes."""
    now = time.time()
    return JobState(
        job_id=job_id,
        spider="batch",
        project="p",
        status=JobStatus.RUNNING,
        created_at=now,
        started_at=now,
        updated_at=now,
        pid=os.getpid(),
        node=node,
        interval=1.0,
        jobdir=jobdir,
    )


def started(store, job_id: str = "j1", jobdir: str | None = JOBDIR, **pending) -> JobState:
    """A queued job claimed by node n1 and started by its crawl."""
    assert store.add_pending(queued(job_id, **pending))
    assert store.claim_job("n1").job_id == job_id
    state = crawl(job_id, jobdir)
    result = store.start_job(state)
    assert result.started, result.job
    return state


def paused(store, state: JobState) -> None:
    """The crawl takes the pause request and ends paused."""
    assert store.request_pause(state.job_id).after is JobStatus.PAUSING
    assert store.save(state).pause_requested_at is not None
    state.status = JobStatus.PAUSED
    state.requests_in_flight = 0
    assert store.save(state).written


def fail(state: JobState, message: str, retryable: bool = True) -> None:
    """The crawl's own failure (a failure ratio above the threshold when
    ``retryable``), as it saves it."""
    state.status = JobStatus.FAILED
    state.completion_reason = "error"
    state.error_message = message
    state.completed_at = time.time()
    state.retryable = retryable


def steps(store, job_id: str = "j1") -> list[str]:
    return [event.step for event in store.history(job_id)]


def test_a_pending_job_pauses_at_once_and_no_node_claims_it_until_resumed(store):
    store.add_pending(queued())
    result = store.request_pause("j1")
    assert (result.before, result.after) == (JobStatus.PENDING, JobStatus.PAUSED)
    doc = store.document("j1")
    assert doc["status"] == "paused"
    assert doc["is_active"] is False and doc["completion_reason"] is None
    assert doc["completed_at"] is None and doc["retry_at"] is None
    assert steps(store) == ["paused"]
    assert store.claim_job("n1") is None
    assert store.count_queued() == 0
    again = store.request_pause("j1")
    assert (again.before, again.after) == (JobStatus.PAUSED, JobStatus.PAUSED)
    assert steps(store) == ["paused"]

    resumed = store.request_resume("j1")
    assert (resumed.before, resumed.after) == (JobStatus.PAUSED, JobStatus.PENDING)
    assert store.document("j1")["status"] == "pending"
    assert steps(store) == ["paused", "resume requested"]
    claimed = store.claim_job("n1")
    assert claimed is not None and claimed.job_id == "j1" and claimed.node == "n1"
    # Resuming a job that is not paused does nothing.
    assert store.request_resume("j1").after is JobStatus.PENDING
    assert steps(store) == ["paused", "resume requested"]


def test_pause_and_resume_of_an_unknown_job(store):
    with pytest.raises(JobNotFound):
        store.request_pause("nope")
    with pytest.raises(JobNotFound):
        store.request_resume("nope")


def test_a_running_job_with_a_jobdir_is_asked_to_pause_through_its_next_save(store):
    state = started(store)
    assert store.save(state).pause_requested_at is None
    result = store.request_pause("j1")
    assert (result.before, result.after) == (JobStatus.RUNNING, JobStatus.PAUSING)
    # Shown pausing at once, like a cancel request is shown cancelling.
    doc = store.document("j1")
    assert doc["status"] == "pausing" and doc["is_active"] is True
    assert doc["pausable"] is True
    polled = store.save(state)
    assert polled.written and polled.pause_requested_at is not None
    assert polled.cancel_requested_at is None
    # The first request stands.
    assert store.request_pause("j1").after is JobStatus.PAUSING
    assert store.save(state).pause_requested_at == polled.pause_requested_at
    assert store.get("j1").status is JobStatus.RUNNING  # until the crawl pauses


def test_a_running_job_without_a_jobdir_cannot_be_paused(store):
    state = started(store, jobdir=None)
    result = store.request_pause("j1")
    assert (result.before, result.after) == (JobStatus.RUNNING, JobStatus.RUNNING)
    assert store.save(state).pause_requested_at is None
    doc = store.document("j1")
    assert doc["status"] == "running" and doc["pausable"] is False


def test_a_pause_not_yet_taken_up_is_withdrawn_by_a_resume(store):
    state = started(store)
    store.request_pause("j1")
    result = store.request_resume("j1")
    assert (result.before, result.after) == (JobStatus.PAUSING, JobStatus.RUNNING)
    assert store.save(state).pause_requested_at is None
    assert store.document("j1")["status"] == "running"
    assert "pause withdrawn" in steps(store)


def test_a_paused_crawl_is_stored_paused_with_its_figures(store):
    state = started(store)
    state.total_pages_crawled, state.total_documents_found = 7, 14
    paused(store, state)
    doc = store.document("j1")
    assert doc["status"] == "paused" and doc["is_active"] is False
    assert doc["completion_reason"] is None and doc["completed_at"] is None
    assert (doc["total_pages_crawled"], doc["total_documents_found"]) == (7, 14)
    assert store.claim_job("n2") is None  # a paused job is not queued
    # A cancel ends a paused job at once.
    cancelled = store.request_cancel("j1")
    assert (cancelled.before, cancelled.after) == (JobStatus.PAUSED, JobStatus.CANCELLED)
    assert store.document("j1")["status"] == "cancelled"


def test_a_pause_with_requeue_puts_the_paused_job_back_in_the_queue(store):
    state = started(store)
    assert store.request_pause("j1", requeue=True).after is JobStatus.PAUSING
    state.status = JobStatus.PAUSED
    assert store.save(state).written
    stored = store.get("j1")
    assert stored.status is JobStatus.PENDING and stored.node is None
    doc = store.document("j1")
    assert doc["status"] == "pending" and doc["node"] is None
    assert doc["history"][-1]["step"] == "queued again"
    claimed = store.claim_job("n2")
    assert claimed is not None and claimed.job_id == "j1" and claimed.node == "n2"


def test_a_crawl_that_pauses_after_a_cancel_request_ends_cancelled(store):
    state = started(store)
    store.request_pause("j1")
    store.request_cancel("j1")
    assert store.document("j1")["status"] == "cancelling"
    state.status = JobStatus.PAUSED
    assert store.save(state).written
    doc = store.document("j1")
    assert (doc["status"], doc["completion_reason"]) == ("cancelled", "cancelled")
    assert doc["completed_at"] is not None
    assert store.claim_job("n2") is None


def test_a_failed_attempt_with_a_retry_left_is_queued_again_after_its_delay(store):
    state = started(store, retries=1, retry_delay=2.0)
    fail(state, "3 of 4 responses failed")
    failed_at = time.time()
    assert store.save(state).written
    stored = store.get("j1")
    assert stored.status is JobStatus.PENDING and stored.node is None
    assert stored.attempt == 2
    # Equal jitter: between half the delay and the delay.
    assert failed_at + 1.0 <= stored.run_after <= time.time() + 2.0
    doc = store.document("j1")
    assert doc["status"] == "pending" and doc["is_active"] is True
    assert doc["attempt"] == 2 and doc["retries"] == 1
    assert doc["retry_at"] is not None
    assert doc["completion_reason"] is None and doc["error_message"] is None
    first, current = doc["attempts"]
    assert (first["attempt"], first["status"]) == (1, "failed")
    assert first["error_message"] == "3 of 4 responses failed"
    assert first["node"] == "n1" and first["ended_at"] is not None
    assert (current["attempt"], current["status"]) == (2, "pending")
    history = store.history("j1")
    assert history[-1].step == "retry"
    assert history[-1].details.startswith("attempt 2 in ")
    assert history[-1].details.endswith("s; attempt 1: 3 of 4 responses failed")

    # No node takes it before its delay has passed, any node after.
    if time.time() < stored.run_after:
        assert store.claim_job("n2") is None
    claimed = wait_for(lambda: store.claim_job("n2"), timeout=10, interval=0.05, what="the retry")
    assert time.time() >= stored.run_after
    assert claimed.job_id == "j1" and claimed.attempt == 2
    second = crawl()
    assert store.start_job(second).started
    doc = store.document("j1")
    assert doc["status"] == "running" and doc["retry_at"] is None
    assert [a["status"] for a in doc["attempts"]] == ["failed", "running"]


def test_a_failure_that_cannot_be_retried_ends_the_job(store):
    state = started(store, retries=3, retry_delay=0)
    fail(state, "urls: no URL given", retryable=False)
    store.save(state)
    doc = store.document("j1")
    assert (doc["status"], doc["attempt"]) == ("failed", 1)
    assert doc["error_message"] == "urls: no URL given"
    assert "retry" not in steps(store)


def test_a_dead_crawl_is_retried_until_no_retry_is_left(store):
    started(store, retries=1, retry_delay=0)
    assert store.end_job("j1", JobStatus.FAILED, "killed by SIGKILL", unstarted=False)
    doc = store.document("j1")
    assert (doc["status"], doc["attempt"]) == ("pending", 2)
    assert steps(store)[-2:] == ["failed", "retry"]

    claimed = wait_for(lambda: store.claim_job("n2"), timeout=10, what="the retry")
    assert claimed.job_id == "j1"
    assert store.start_job(crawl(node="n2")).started
    assert store.end_job("j1", JobStatus.FAILED, "killed again", unstarted=False)
    doc = store.document("j1")
    assert (doc["status"], doc["completion_reason"]) == ("failed", "error")
    assert doc["attempt"] == 2 and doc["is_active"] is False and doc["retry_at"] is None
    assert doc["error_message"] == "killed again"
    assert [
        (a["attempt"], a["status"], a["error_message"], a["node"]) for a in doc["attempts"]
    ] == [(1, "failed", "killed by SIGKILL", "n1"), (2, "failed", "killed again", "n2")]
    assert all(a["ended_at"] is not None for a in doc["attempts"])
    assert steps(store).count("retry") == 1
    assert store.claim_job("n3") is None


def test_a_job_asked_to_cancel_is_never_retried_when_its_crawl_dies(store):
    started(store, retries=2, retry_delay=0)
    assert store.request_cancel("j1", force=True).after is JobStatus.CANCELLING
    assert store.end_job("j1", JobStatus.FAILED, "killed by SIGKILL", unstarted=False)
    doc = store.document("j1")
    assert doc["status"] == "failed" and doc["attempt"] == 1
    assert "retry" not in steps(store)
    assert store.claim_job("n2") is None


def test_a_job_asked_to_cancel_is_never_retried_when_its_crawl_fails(store):
    # The cancel came while the crawl was finalizing: it could no longer
    # stop it, but the job must not run again.
    state = started(store, retries=2, retry_delay=0)
    state.status = JobStatus.FINALIZING
    assert store.save(state).written
    assert store.request_cancel("j1").after is JobStatus.CANCELLING
    fail(state, "3 of 4 responses failed")
    store.save(state)
    doc = store.document("j1")
    assert doc["status"] != "pending" and doc["attempt"] == 1, doc["history"]
    assert "retry" not in steps(store)
    assert store.claim_job("n2") is None


def test_a_paused_job_starts_again_only_from_its_crawl_state(store):
    store.add_pending(queued())
    store.request_pause("j1")
    # A crawl claimed before the pause (its JOBDIR new): it does not start.
    for crawler in (crawl(jobdir=None), crawl()):
        refused = store.start_job(crawler)
        assert not refused.started and refused.job.status is JobStatus.PAUSED
    assert store.get("j1").status is JobStatus.PAUSED
    # `scrapy crawl` run again with the JOBDIR of the paused crawl.
    allowed = store.start_job(crawl(), resume=True)
    assert allowed.started
    assert store.document("j1")["status"] == "running"


def test_a_crawl_whose_attempt_was_retried_or_that_paused_writes_no_more(store):
    paused_one = started(store, "j1")
    paused(store, paused_one)
    paused_one.status = JobStatus.RUNNING
    assert not store.save(paused_one).written
    assert store.get("j1").status is JobStatus.PAUSED

    # A crawl the store took for dead (its node stopped reporting) while it
    # ran on: its attempt is retried, and its writes are refused.
    state = started(store, "j2", retries=1, retry_delay=0)
    assert store.end_job("j2", JobStatus.FAILED, "its node died", unstarted=False)
    assert store.get("j2").status is JobStatus.PENDING
    state.total_pages_crawled = 99
    assert not store.save(state).written
    stored = store.get("j2")
    assert (stored.status, stored.attempt, stored.total_pages_crawled) == (JobStatus.PENDING, 2, 0)


def save_errors(store, state: JobState, count: int) -> None:
    state.error_count += count
    errors = [
        JobError(error_type="http_error", error_message=f"HTTP 500 #{i}", timestamp=time.time())
        for i in range(count)
    ]
    assert store.save(state, errors).written


CARRIED = {
    "total_pages_crawled": 10,
    "total_documents_found": 20,
    "responses_failed": 2,
    "responses_finished": 12,
    "progress": 40.0,
    "stages_completed": ["discovery"],
}


def test_a_resumed_crawl_carries_the_counters_of_the_runs_before(store):
    state = started(store)
    for name, value in CARRIED.items():
        setattr(state, name, value)
    save_errors(store, state, 2)
    paused(store, state)

    store.request_resume("j1")
    store.claim_job("n2")
    again = crawl(node="n2")
    assert store.start_job(again, resume=True).started
    doc = store.document("j1", errors_kept=100)
    assert doc["status"] == "running"
    stored = store.get("j1")
    for name, value in CARRIED.items():
        assert getattr(stored, name) == value, name
    assert (doc["total_pages_crawled"], doc["total_documents_found"]) == (10, 20)
    assert doc["failure_ratio"] == round(2 / 12, 4) and doc["progress"] == 40.0
    assert doc["error_count"] == 2 and len(doc["errors"]) == 2
    assert doc["attempt"] == 1 and len(doc["attempts"]) == 1
    # One attempt, begun by the first run.
    assert doc["started_at"] == isoformat(state.started_at)
    assert doc["attempts"][0]["started_at"] == isoformat(state.started_at)


def test_a_crawl_starting_over_resets_the_counters_but_keeps_errors_and_attempts(store):
    state = started(store, retries=1, retry_delay=0)
    for name, value in CARRIED.items():
        setattr(state, name, value)
    save_errors(store, state, 3)
    assert store.end_job("j1", JobStatus.FAILED, "the process died", unstarted=False)
    wait_for(lambda: store.claim_job("n2"), timeout=10, what="the retry")
    again = crawl(node="n2")
    assert store.start_job(again, resume=False).started
    assert again.attempt == 2
    doc = store.document("j1", errors_kept=100)
    assert doc["status"] == "running" and doc["attempt"] == 2
    for name in ("total_pages_crawled", "total_documents_found", "responses_failed"):
        assert doc[name] == 0, name
    assert doc["progress"] is None and doc["stages_completed"] == []
    assert doc["error_count"] == 3 and len(doc["errors"]) == 3
    assert [(a["attempt"], a["status"]) for a in doc["attempts"]] == [
        (1, "failed"),
        (2, "running"),
    ]
    # The new attempt's start is its own; the job's start stays the first.
    first, current = doc["attempts"]
    assert current["started_at"] is not None and current["started_at"] >= first["ended_at"]


def test_a_paused_job_resumed_by_a_crawl_without_its_state_says_it_started_over(store):
    # A node of a cluster whose jobdirs is not shared with the node that
    # paused the job: its crawl finds no state to go on from.
    state = started(store)
    state.total_pages_crawled = 7
    state.ran_for = 12.5  # what the pause records: the time the job ran
    paused(store, state)
    store.request_resume("j1")
    store.claim_job("n2")
    again = crawl(node="n2")
    assert store.start_job(again, resume=False).started
    doc = store.document("j1")
    assert doc["total_pages_crawled"] == 0
    assert any(w.startswith("started over:") for w in doc["warnings"]), doc["warnings"]


def test_a_paused_job_resumed_from_its_state_has_no_such_warning(store):
    state = started(store)
    state.ran_for = 12.5
    paused(store, state)
    store.request_resume("j1")
    store.claim_job("n2")
    assert store.start_job(crawl(node="n2"), resume=True).started
    assert not any(w.startswith("started over:") for w in store.document("j1")["warnings"])
