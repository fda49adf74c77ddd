"""A downloader middleware that reports the final outcome of failed downloads.

Scrapy sends no signal when a download fails for good, so this middleware,
placed nearer the engine than RetryMiddleware, sees only the exceptions left
once retries are exhausted and passes them on as a signal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from typing import Self

    from scrapy import Request, Spider
    from scrapy.crawler import Crawler

# A custom Scrapy signal: handlers receive ``request`` and ``exception``.
download_failed = object()


class DownloadOutcomeMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_exception(
        self, request: Request, exception: Exception, spider: Spider | None = None
    ) -> None:
        # An ignored request was dropped on purpose, not failed.
        if not isinstance(exception, IgnoreRequest):
            self.crawler.signals.send_catch_log(
                signal=download_failed, request=request, exception=exception
            )
