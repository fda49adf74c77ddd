"""The job tracker's decisions and arithmetic, with a fake clock: no crawl,
no Scrapy, no Twisted."""

from __future__ import annotations

import pytest

from scrapy_jobstatus._model import JobError, JobState, JobStatus
from scrapy_jobstatus._tracker import FORCED_STOP_WARNING, JobTracker


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock | None = None, timeout: float | None = None, ratio: float = 0.5):
    clock = clock or Clock()
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock(), timeout=timeout)
    return JobTracker(state, failure_ratio=ratio, clock=clock)


def http_error(url: str = "http://x/") -> JobError:
    return JobError(error_type="http_error", error_message="HTTP 500", page_url=url)


def test_the_frontier_estimate_never_goes_backwards_nor_reaches_100_while_active():
    t = tracker()
    t.state.responses_finished = 10
    t.refresh(requests_pending=10, requests_in_flight=0)
    assert t.state.progress == 50.0
    t.state.responses_finished = 12
    t.refresh(requests_pending=40, requests_in_flight=0)  # the frontier grew
    assert t.state.progress == 50.0
    t.state.responses_finished = 100
    t.refresh(requests_pending=0, requests_in_flight=0)
    assert t.state.progress == 99.0


def test_nothing_known_means_no_progress_and_no_progress_stat():
    t = tracker()
    t.refresh(0, 0)
    assert t.state.progress is None and t.state.estimated_completion is None
    assert "jobstatus/progress" not in t.stats()


def test_an_expected_total_makes_progress_exact():
    t = tracker()
    t.report("expected_total", 8)
    for _ in range(3):
        t.item_scraped()
    t.refresh(5, 2)
    assert t.state.progress == 37.5
    assert (t.state.requests_pending, t.state.requests_in_flight) == (5, 2)


def test_estimated_completion_follows_the_recent_rate_capped_by_the_deadline():
    clock = Clock()
    t = tracker(clock, timeout=1000)
    t.report("expected_total", 100)
    t.refresh(0, 0)
    clock.now += 10
    for _ in range(20):  # 20 done in 10 s: 80 left at 2/s
        t.item_scraped()
    t.refresh(0, 0)
    assert t.state.estimated_completion == pytest.approx(clock.now + 40)
    t.state.timeout = 5
    t.refresh(0, 0)
    assert t.state.estimated_completion == pytest.approx(t.state.started_at + 5)


def test_stages_are_recorded_in_order_with_timed_events():
    clock = Clock()
    t = tracker(clock)
    t.report("stage", "discovery")
    clock.now += 1.5
    t.report("stage", "download")
    t.report("current_page", 3)
    t.report("pagination_complete", False)
    assert t.state.stage == "download" and t.state.stages_completed == ["discovery"]
    assert [(e.step, e.duration_ms) for e in t.history] == [
        ("stage discovery", 0),
        ("stage download", 1500),
    ]
    assert (t.state.current_page, t.state.pagination_complete) == (3, False)


def test_errors_are_counted_stamped_and_handed_to_one_write_only():
    clock = Clock()
    t = tracker(clock)
    t.set_stage("fetch")
    t.response_received("http://x/a", None)
    t.response_received("http://x/b", http_error("http://x/b"))
    assert t.state.error_count == 1 and t.state.responses_failed == 1
    errors, events = t.take_unsaved()
    assert [(e.stage, e.timestamp) for e in errors] == [("fetch", clock.now)]
    assert [e.step for e in events] == ["stage fetch", "first response"]
    assert t.take_unsaved() == ([], [])
    # A failed write hands them to the next one, in order.
    t.put_back_unsaved(errors, events)
    t.download_failed(http_error("http://x/c"))
    again, events_again = t.take_unsaved()
    assert [e.page_url for e in again] == ["http://x/b", "http://x/c"]
    assert [e.step for e in events_again] == ["stage fetch", "first response"]
    assert t.stats()["jobstatus/errors/http_error"] == 2


def test_a_cancel_stops_the_crawl_once():
    t = tracker()
    assert t.cancel(requested_at=5.0, source="store")
    assert t.state.status is JobStatus.CANCELLING and t.state.cancel_requested_at == 5.0
    assert not t.cancel(requested_at=6.0, source="signal")
    assert not t.timeout_reached()
    assert t.closed("cancelled") is JobStatus.CANCELLED
    t.finish()
    assert (t.state.status, t.state.completion_reason) == (JobStatus.CANCELLED, "cancelled")


def test_a_timeout_keeps_partial_results_as_completed():
    t = tracker(timeout=10)
    assert t.timeout_reached()
    assert t.closed("jobstatus_timeout") is JobStatus.COMPLETED
    t.finish()
    assert (t.state.status, t.state.completion_reason) == (JobStatus.COMPLETED, "timeout")
    assert "timeout" in t.state.message


def test_mostly_failed_responses_end_the_job_failed_saying_why():
    t = tracker(ratio=0.5)
    for i in range(3):
        t.response_received(f"http://x/{i}", http_error())
    t.response_received("http://x/ok", None)
    assert t.closed("finished") is JobStatus.FAILED
    t.finish()
    assert t.state.status is JobStatus.FAILED
    assert "3 of 4 responses failed" in t.state.error_message


@pytest.mark.parametrize(
    ("close_reason", "status", "reason"),
    [
        ("finished", JobStatus.COMPLETED, "done"),
        ("closespider_itemcount", JobStatus.COMPLETED, "done"),
        ("closespider_timeout", JobStatus.COMPLETED, "timeout"),
        ("shutdown", JobStatus.CANCELLED, "cancelled"),
        ("memusage_exceeded", JobStatus.FAILED, "error"),
    ],
)
def test_the_close_reason_decides_the_end(close_reason, status, reason):
    t = tracker()
    assert t.closed(close_reason) is status
    # From the close on, the stats say how the job ends: not "finalizing".
    assert t.state.status is JobStatus.FINALIZING
    assert t.stats()["jobstatus/status"] == str(status)
    assert t.stats()["jobstatus/completion_reason"] == reason


def test_a_completed_job_is_at_100_percent_and_its_last_stage_is_done():
    clock = Clock()
    t = tracker(clock)
    t.set_stage("fetch")
    t.state.responses_finished = 1
    t.refresh(5, 0)
    t.closed("finished")
    clock.now += 2
    t.finish()
    state = t.state
    assert state.progress == 100.0 and state.stage is None
    assert state.stages_completed == ["fetch", "finalizing"]
    assert state.completed_at == clock.now and state.estimated_completion is None
    assert [e.step for e in t.history][-3:] == ["closing", "stage finalizing", "finished"]


def test_a_forced_stop_is_a_warning_in_the_status():
    t = tracker()
    t.cancel(1.0, "store", force=True)
    t.forced_stop(dropped=2)
    assert t.forced and t.state.warnings == [FORCED_STOP_WARNING]
    assert t.history[-1].details == "2 in-flight requests dropped"


def test_a_pause_ends_the_run_paused_with_no_completion_and_counts_its_running_time():
    clock = Clock()
    t = tracker(clock)
    t.state.ran_for = 30.0  # runs before this one
    clock.now += 20
    assert t.pause(clock(), "store")
    assert t.state.status is JobStatus.PAUSING
    assert not t.cancel(clock(), "store")  # closing already
    assert t.closed("paused") is JobStatus.PAUSED
    t.finish()
    state = t.state
    assert state.status is JobStatus.PAUSED
    assert (state.completion_reason, state.completed_at) == (None, None)
    assert state.ran_for == 50.0
    assert [e.step for e in t.history][-1] == "paused"
    stats = t.stats()
    assert stats["jobstatus/status"] == "paused"
    assert "jobstatus/completion_reason" not in stats


def test_the_estimate_is_capped_by_the_timeout_left_after_the_runs_before():
    clock = Clock()
    t = tracker(clock, timeout=100)
    t.state.ran_for = 90.0
    for done in (10, 11):
        t.state.responses_finished = done
        t.refresh(requests_pending=1000, requests_in_flight=0)
        clock.now += 1
    assert t.state.estimated_completion == t.run_started_at + 10


def test_only_a_failure_ratio_above_the_threshold_is_a_retryable_failure():
    t = tracker(ratio=0.5)
    t.download_failed(http_error())
    t.closed("finished")
    t.finish()
    assert t.state.status is JobStatus.FAILED and t.state.retryable
    bad = tracker()
    bad.fail("urls: 'x' is not a URL")
    bad.closed("jobstatus_start_error")
    bad.finish()
    assert bad.state.status is JobStatus.FAILED and not bad.state.retryable


def test_errors_beyond_the_pending_limit_are_counted_not_kept():
    clock = Clock()
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock())
    t = JobTracker(state, pending_errors=3, clock=clock)
    for i in range(5):
        t.record_error(http_error(f"http://x/{i}"))
    assert t.state.error_count == 5 and t.errors_not_recorded == 2
    errors, events = t.take_unsaved()
    assert [e.page_url for e in errors] == ["http://x/0", "http://x/1", "http://x/2"]
    # The write failed while two more came: the oldest three wait, the
    # others are counted.
    t.record_error(http_error("http://x/5"))
    t.record_error(http_error("http://x/6"))
    t.put_back_unsaved(errors, events)
    kept, _ = t.take_unsaved()
    assert [e.page_url for e in kept] == ["http://x/0", "http://x/1", "http://x/2"]
    assert t.state.error_count == 7 and t.errors_not_recorded == 4
    (warning,) = t.state.warnings
    assert warning.startswith("4 errors not recorded: more than 3 (JOBSTATUS_PENDING_ERRORS)")


def test_a_resumed_job_counts_on_from_its_warning():
    clock = Clock()
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock())
    first = JobTracker(state, pending_errors=1, clock=clock)
    first.record_error(http_error())
    first.record_error(http_error())
    again = JobTracker(state, pending_errors=1, clock=clock)
    assert again.errors_not_recorded == 1 and not again.dropped_errors
    again.record_error(http_error())
    again.record_error(http_error())
    assert again.errors_not_recorded == 2 and len(state.warnings) == 1
