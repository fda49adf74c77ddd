"""The JobStatus extension's own logic, on a crawler that is not crawling."""

from __future__ import annotations

import time

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from scrapy_jobstatus import JobState, JobStatus, JobStatusExtension


def extension(**settings) -> JobStatusExtension:
    ext = build_from_crawler(JobStatusExtension, get_crawler(settings_dict=settings))
    ext.state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=time.time())
    return ext


def test_disabled_means_not_configured():
    with pytest.raises(NotConfigured):
        build_from_crawler(JobStatusExtension, get_crawler(settings_dict={"JOBSTATUS_ENABLED": False}))


def test_a_bad_setting_is_kept_as_the_jobs_failure_not_raised():
    ext = build_from_crawler(JobStatusExtension, get_crawler(settings_dict={"JOBSTATUS_TIMEOUT": "x"}))
    assert ext.config is None
    assert ext.setting_error == "JOBSTATUS_TIMEOUT must be a number, not 'x'"


def test_the_frontier_estimate_never_goes_backwards_nor_reaches_100_while_active():
    ext = extension()
    state = ext.state
    state.responses_finished, state.requests_pending = 10, 10
    ext._update_progress()
    assert state.progress == 50.0
    state.responses_finished, state.requests_pending = 12, 40  # the frontier grew
    ext._update_progress()
    assert state.progress == 50.0
    state.responses_finished, state.requests_pending = 100, 0
    ext._update_progress()
    assert state.progress == 99.0


def test_nothing_known_means_no_progress():
    ext = extension()
    ext._update_progress()
    assert ext.state.progress is None
    assert ext.state.estimated_completion is None


def test_an_expected_total_makes_progress_exact():
    ext = extension()
    ext.progress_reported(field="expected_total", value=8)
    ext.state.total_documents_found = 3
    ext._update_progress()
    assert ext.state.progress == 37.5


def test_estimated_completion_follows_the_recent_rate_and_the_deadline():
    ext = extension(JOBSTATUS_TIMEOUT=1000)
    ext.progress_reported(field="expected_total", value=100)
    now = time.time()
    ext._rate_samples.extend([(now - 10, 0), (now, 0)])
    ext.state.total_documents_found = 20  # 20 done in 10 s: 80 left at 2/s
    ext._update_progress()
    assert ext.state.estimated_completion == pytest.approx(time.time() + 40, abs=1)

    ext.state.timeout = 5
    ext.state.started_at = now
    ext._update_progress()
    assert ext.state.estimated_completion == pytest.approx(now + 5)


def test_stages_are_recorded_in_order_with_events():
    ext = extension()
    for stage in ("discovery", "download"):
        ext.progress_reported(field="stage", value=stage)
    ext.progress_reported(field="current_page", value=3)
    ext.progress_reported(field="pagination_complete", value=False)
    assert ext.state.stage == "download"
    assert ext.state.stages_completed == ["discovery"]
    assert [e.step for e in ext._new_events] == ["stage discovery", "stage download"]
    assert (ext.state.current_page, ext.state.pagination_complete) == (3, False)
