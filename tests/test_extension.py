"""The JobStatus extension as Scrapy builds it: settings, and the signals it
connects. Its decisions are the tracker's (tests/test_tracker.py); its crawls
are tests/test_crawl_lifecycle.py's and tests/test_faults.py's."""

from __future__ import annotations

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from scrapy_jobstatus import JobStatusExtension


def test_disabled_means_not_configured():
    with pytest.raises(NotConfigured):
        build_from_crawler(
            JobStatusExtension, get_crawler(settings_dict={"JOBSTATUS_ENABLED": False})
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"JOBSTATUS_TIMEOUT": "x"}, "JOBSTATUS_TIMEOUT must be a number, not 'x'"),
        ({"JOBSTATUS_INTERVAL": "0"}, "JOBSTATUS_INTERVAL must be at least 0.1 s, got 0"),
        (
            {"JOBSTATUS_INTERVAL": "0.000001"},
            "JOBSTATUS_INTERVAL must be at least 0.1 s, got 1e-06",
        ),
        ({"JOBSTATUS_STORE_WAIT": "-1"}, "JOBSTATUS_STORE_WAIT must not be negative, got -1"),
        ({"JOBSTATUS_REQUIRED": "maybe"}, "JOBSTATUS_REQUIRED must be true or false, not 'maybe'"),
    ],
)
def test_a_bad_setting_is_kept_as_the_jobs_failure_not_raised(settings, message):
    ext = build_from_crawler(JobStatusExtension, get_crawler(settings_dict=settings))
    assert ext.config is None
    assert ext.setting_error == message
