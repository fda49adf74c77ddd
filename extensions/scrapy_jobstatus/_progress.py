"""The spider-facing API: what a spider may tell its job about its progress.

Each call sends a signal that the JobStatus extension listens to; with the
extension disabled nobody listens and the calls do nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy import Spider

# A custom Scrapy signal: handlers receive ``field`` and ``value``.
progress_reported = object()


def _report(spider: Spider, field: str, value: Any) -> None:
    spider.crawler.signals.send_catch_log(signal=progress_reported, field=field, value=value)


def set_stage(spider: Spider, stage: str) -> None:
    """Start a stage (e.g. "discovery", "download"); the previous one is done."""
    _report(spider, "stage", stage)


def set_expected_total(spider: Spider, total: int) -> None:
    """Declare how many items the job will produce, making progress exact."""
    _report(spider, "expected_total", int(total))


def set_current_page(spider: Spider, page: int) -> None:
    """The listing page being processed (1-based)."""
    _report(spider, "current_page", int(page))


def set_pagination_complete(spider: Spider, complete: bool = True) -> None:
    """A page without a next link was reached (True), or pagination was cut
    short (False)."""
    _report(spider, "pagination_complete", bool(complete))
