"""The state machine of a job's row, without a database: what a start,
a pause, a resume, a crawl's end and a retry do to a stored job."""

from __future__ import annotations

import json

from scrapy_jobstatus._model import HistoryEvent, JobState, JobStatus
from scrapy_jobstatus._store import UNMONITORED_WARNING
from scrapy_jobstatus._transitions import (
    STARTED_OVER_WARNING,
    end_for_crawl,
    keeps_pause_request,
    pause,
    resume,
    settle_end,
    startable,
    take_over_pending,
    webhook_body,
    webhook_targets,
    webhook_types,
)

NOW = 1_000.0


def stored(cancel: float | None = None, requeue: int = 0) -> dict[str, object]:
    return {"cancel_requested_at": cancel, "pause_requeue": requeue}


def test_a_pending_job_is_startable_and_a_paused_one_only_when_resumed() -> None:
    assert startable(JobState("j", status=JobStatus.PENDING), resume=False)
    assert not startable(JobState("j", status=JobStatus.PAUSED), resume=False)
    assert startable(JobState("j", status=JobStatus.PAUSED), resume=True)
    for status in (JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.CANCELLED):
        assert not startable(JobState("j", status=status), resume=True)


def test_a_crawl_takes_over_what_scheduling_recorded() -> None:
    pending = JobState(
        "j", project="p", priority=3, retries=2, error_count=4, webhooks=["http://a"]
    )
    pending.job_webhooks = ["http://b"]
    pending.job_webhook_secret = "k"  # noqa: S105 (a test key)
    state = JobState("j", started_at=NOW, webhooks=["http://c"])
    take_over_pending(state, pending)
    assert (state.project, state.priority, state.retries, state.error_count) == ("p", 3, 2, 4)
    assert state.attempt_started_at == NOW
    assert state.webhooks == ["http://a", "http://c"]
    assert webhook_targets(state) == [("http://a", None), ("http://c", None), ("http://b", "k")]


def test_a_resumed_crawl_carries_its_counters_and_one_started_over_is_warned() -> None:
    pending = JobState("j", total_pages_crawled=7, ran_for=12.0)
    resumed = JobState("j")
    take_over_pending(resumed, pending, resume=True)
    assert resumed.total_pages_crawled == 7
    assert STARTED_OVER_WARNING not in resumed.warnings
    started_over = JobState("j")
    take_over_pending(started_over, pending, resume=False)
    assert started_over.total_pages_crawled == 0
    assert STARTED_OVER_WARNING in started_over.warnings


def test_a_pending_job_pauses_at_once_and_a_running_one_with_a_jobdir_is_pausing() -> None:
    pending = JobState("j", status=JobStatus.PENDING, node="n1")
    after, events = pause(pending, NOW)
    assert (after, pending.status, pending.node) == (JobStatus.PAUSED, JobStatus.PAUSED, None)
    assert [e.step for e in events] == ["paused"]
    running = JobState("j", status=JobStatus.RUNNING, jobdir="/jobs/j")
    assert pause(running, NOW) == (JobStatus.PAUSING, [])
    assert running.status is JobStatus.RUNNING
    assert pause(JobState("j", status=JobStatus.RUNNING), NOW) == (JobStatus.RUNNING, [])


def test_a_paused_job_resumes_to_the_queue_and_a_pause_not_taken_up_is_withdrawn() -> None:
    paused = JobState("j", status=JobStatus.PAUSED)
    after, events = resume(paused, NOW)
    assert (after, paused.status) == (JobStatus.PENDING, JobStatus.PENDING)
    assert [e.step for e in events] == ["resume requested"]
    pausing = JobState("j", status=JobStatus.RUNNING, pause_requested_at=NOW - 1)
    after, events = resume(pausing, NOW)
    assert (after, [e.step for e in events]) == (JobStatus.RUNNING, ["pause withdrawn"])
    done = JobState("j", status=JobStatus.COMPLETED)
    assert resume(done, NOW) == (JobStatus.COMPLETED, [])


def test_a_pause_request_lasts_only_while_the_job_runs() -> None:
    assert keeps_pause_request(JobStatus.RUNNING)
    assert keeps_pause_request(JobStatus.PAUSING)
    assert not keeps_pause_request(JobStatus.PAUSED)
    assert not keeps_pause_request(JobStatus.COMPLETED)


def test_a_job_paused_after_a_cancel_request_is_cancelled() -> None:
    state = JobState("j", status=JobStatus.PAUSED)
    events = settle_end(state, stored(cancel=NOW - 5), NOW)
    assert state.status is JobStatus.CANCELLED
    assert [e.step for e in events] == ["cancelled"]


def test_a_job_paused_by_its_nodes_shutdown_is_queued_again() -> None:
    state = JobState("j", status=JobStatus.PAUSED, node="n1")
    events = settle_end(state, stored(requeue=1), NOW)
    assert (state.status, state.node) == (JobStatus.PENDING, None)
    assert [e.step for e in events] == ["queued again"]


def test_a_failed_attempt_with_a_retry_left_is_queued_unless_asked_to_cancel() -> None:
    state = JobState("j", status=JobStatus.FAILED, retries=1, retryable=True)
    events = settle_end(state, stored(), NOW)
    assert state.status is JobStatus.PENDING
    assert state.attempt == 2
    assert [e.step for e in events] == ["retry"]
    cancelled = JobState("j", status=JobStatus.FAILED, retries=1, retryable=True)
    assert settle_end(cancelled, stored(cancel=NOW), NOW) == []
    assert cancelled.status is JobStatus.FAILED
    spent = JobState("j", status=JobStatus.FAILED, retries=0, retryable=True)
    assert settle_end(spent, stored(), NOW) == []


def test_a_job_its_crawl_cannot_end_is_ended_for_it() -> None:
    died = JobState("j", status=JobStatus.RUNNING)
    events = end_for_crawl(died, JobStatus.FAILED, "the crawl died", NOW, unstarted=False)
    assert (died.status, died.error_message, died.completed_at) == (
        JobStatus.FAILED,
        "the crawl died",
        NOW,
    )
    assert [e.step for e in events] == ["failed"]
    unmonitored = JobState("j", status=JobStatus.PENDING)
    events = end_for_crawl(unmonitored, JobStatus.COMPLETED, "done", NOW, unstarted=True)
    assert UNMONITORED_WARNING in unmonitored.warnings
    assert [e.step for e in events] == ["finished unmonitored"]


def test_a_write_calls_the_webhooks_of_its_status_and_of_a_stall() -> None:
    assert webhook_types(JobStatus.COMPLETED) == ["job.completed"]
    assert webhook_types(JobStatus.PAUSED) == ["job.paused"]
    assert webhook_types(JobStatus.RUNNING) == []
    stalled = [HistoryEvent(step="stalled", timestamp=NOW, status="pending")]
    assert webhook_types(None, stalled) == ["job.stalled"]


def test_a_webhook_body_hides_the_other_receivers() -> None:
    body = json.loads(webhook_body("job.completed", 0.0, {"job_id": "j", "webhooks": ["x"]}))
    assert body == {
        "type": "job.completed",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "data": {"job_id": "j"},
    }
