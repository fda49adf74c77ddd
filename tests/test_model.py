from __future__ import annotations

import pytest

from scrapy_jobstatus._model import (
    TERMINAL_STATUSES,
    CompletionReason,
    HistoryEvent,
    InvalidJobId,
    JobError,
    JobState,
    JobStatus,
    can_transition,
    new_job_id,
    reason_for_close,
    status_for_reason,
    validate_job_id,
)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_a_terminal_job_never_moves_again(terminal):
    assert not any(can_transition(terminal, status) for status in JobStatus)


@pytest.mark.parametrize("status", [JobStatus.CANCELLING, JobStatus.FINALIZING])
def test_a_job_being_cancelled_or_finalized_never_goes_back_to_running(status):
    assert not can_transition(status, JobStatus.RUNNING)
    assert not can_transition(status, JobStatus.PAUSED)


def test_a_job_being_cancelled_is_never_queued_again():
    assert not can_transition(JobStatus.CANCELLING, JobStatus.PENDING)
    # A failed attempt is retried from where the crawl writes its end.
    assert can_transition(JobStatus.FINALIZING, JobStatus.PENDING)


def test_the_pause_path_and_the_resume_path_are_allowed():
    pause = [JobStatus.RUNNING, JobStatus.PAUSING, JobStatus.PAUSED]
    resume = [JobStatus.PAUSED, JobStatus.PENDING, JobStatus.RUNNING]
    for path in (pause, resume):
        assert all(can_transition(a, b) for a, b in zip(path, path[1:], strict=False))
    assert not JobStatus.PAUSED.is_active
    assert JobStatus.PAUSED not in TERMINAL_STATUSES
    assert not can_transition(JobStatus.PAUSED, JobStatus.COMPLETED)


def test_the_normal_path_and_the_cancel_path_are_allowed():
    path = [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.COMPLETED]
    assert all(can_transition(a, b) for a, b in zip(path, path[1:], strict=False))
    cancel = [JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.FINALIZING, JobStatus.CANCELLED]
    assert all(can_transition(a, b) for a, b in zip(cancel, cancel[1:], strict=False))
    assert can_transition(JobStatus.PENDING, JobStatus.CANCELLED)


@pytest.mark.parametrize(
    ("close_reason", "reason", "status"),
    [
        ("finished", CompletionReason.DONE, JobStatus.COMPLETED),
        ("closespider_itemcount", CompletionReason.DONE, JobStatus.COMPLETED),
        ("closespider_pagecount", CompletionReason.DONE, JobStatus.COMPLETED),
        ("closespider_timeout", CompletionReason.TIMEOUT, JobStatus.COMPLETED),
        ("shutdown", CompletionReason.CANCELLED, JobStatus.CANCELLED),
        ("cancelled", CompletionReason.CANCELLED, JobStatus.CANCELLED),
        ("memusage_exceeded", CompletionReason.ERROR, JobStatus.FAILED),
        ("something_unknown", CompletionReason.ERROR, JobStatus.FAILED),
        (None, CompletionReason.ERROR, JobStatus.FAILED),
    ],
)
def test_scrapy_close_reasons_map_to_completion_reasons(close_reason, reason, status):
    assert reason_for_close(close_reason) is reason
    assert status_for_reason(reason) is status


# What Scrapyd clients generate (ISO timestamps, ids with spaces) and any
# other text Scrapyd can run.
@pytest.mark.parametrize(
    "job_id",
    [
        "a",
        "job-1.2_3",
        # Its id is fixed: pytest-xdist's workers must collect the same tests.
        pytest.param(new_job_id(), id="new_job_id"),
        "2026-11-29T16:39:20.123456+00:00",
        "nightly run 7",
        "-a",
        ".hidden",
        "..",
        "x'; DROP TABLE jobs; --",
        "<img src=x onerror=alert(1)>",
        "é" * 100,
        "A" * 200,
    ],
)
def test_any_id_scrapyd_can_run_is_accepted(job_id):
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "../etc/passwd",
        "a/b",
        "A" * 201,
        "é" * 101,
        "a\nb",
        "a\x00",
        "tab\there",
        "\x7f",
        "bad \udcff byte",
        None,
        12,
    ],
)
def test_empty_overlong_or_unrunnable_job_ids_are_refused_with_a_one_line_message(job_id):
    with pytest.raises(InvalidJobId) as info:
        validate_job_id(job_id)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("invalid job id")


def test_the_status_document_of_an_active_job():
    state = JobState(
        job_id="j1",
        spider="batch",
        status=JobStatus.RUNNING,
        started_at=100.0,
        responses_finished=4,
        responses_failed=1,
        total_pages_crawled=4,
    )
    doc = state.to_document(errors=[], history=[], now=110.5)
    assert doc["is_active"] is True
    assert doc["running_time"] == 10.5
    assert doc["processing_time"] is None
    assert doc["failure_ratio"] == 0.25
    assert doc["completion_reason"] is None
    assert doc["started_at"] == "1970-01-01T00:01:40.000Z"
    assert doc["message"]


def test_the_status_document_of_a_finished_job_with_errors_and_history():
    state = JobState(
        job_id="j1",
        status=JobStatus.COMPLETED,
        started_at=100.0,
        completed_at=160.0,
        completion_reason="done",
        error_count=3,
    )
    error = JobError(
        error_type="http_error",
        error_message="HTTP 500",
        page_url="http://x/",
        http_status=500,
        timestamp=120.0,
        is_recoverable=True,
        error_id=7,
    )
    event = HistoryEvent(step="finished", timestamp=160.0, status="completed", duration_ms=5)
    doc = state.to_document(errors=[error], history=[event], now=999.0)
    assert doc["is_active"] is False
    assert doc["processing_time"] == 60.0
    assert doc["running_time"] is None
    assert doc["error_count"] == 3 and doc["has_errors"] is True
    assert set(doc["errors"][0]) == {
        "error_id",
        "stage",
        "error_type",
        "error_message",
        "page_url",
        "http_status",
        "timestamp",
        "is_recoverable",
    }
    assert doc["history"] == [
        {
            "step": "finished",
            "timestamp": "1970-01-01T00:02:40.000Z",
            "duration_ms": 5,
            "status": "completed",
            "details": None,
        }
    ]


def test_a_webhook_url_is_shown_without_its_secrets():
    from scrapy_jobstatus._model import redact_url

    assert (
        redact_url("https://user:s3cret@hooks.example/in?token=abc&flag&x=")
        == "https://user:***@hooks.example/in?token=***&flag&x=***"
    )
    assert redact_url("https://t0ken@hooks.example/") == "https://***@hooks.example/"
    assert redact_url("http://hooks.example/plain") == "http://hooks.example/plain"
