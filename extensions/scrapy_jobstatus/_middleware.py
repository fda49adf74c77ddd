"""The middlewares of the job lifecycle.

A downloader middleware that reports the final outcome of failed downloads.

Scrapy sends no signal when a download fails for good, so this middleware,
placed nearer the engine than RetryMiddleware, sees only the exceptions left
once retries are exhausted and passes them on as a signal. A spider
middleware keeps a resumed crawl from sending its start requests again;
another signals an error of the spider's start on a Scrapy that only logs it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import scrapy
from packaging.version import Version
from scrapy import Request, signals
from scrapy.exceptions import CloseSpider, IgnoreRequest, NotConfigured
from twisted.python.failure import Failure

from ._defaults import default
from ._jobdir import JobDir

if TYPE_CHECKING:
    # typing.Self requires Python 3.11
    from collections.abc import AsyncIterator
    from typing import Self

    from scrapy import Spider
    from scrapy.crawler import Crawler

# A custom Scrapy signal: handlers receive ``request`` and ``exception``.
download_failed = object()
# From 2.18, Scrapy's engine sends spider_error (with no response) for an
# exception of the spider's start; before, it only logs it.
SIGNALS_START_ERRORS = Version(scrapy.__version__) >= Version("2.18")


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


class ResumedStartMiddleware:
    """A spider middleware for crawls with a JOBDIR: it records the start
    requests the crawl sends, and a crawl resuming a paused job sends only
    the others. Scrapy's own resume sends every start request again (they
    are not filtered as duplicates): their pages would be crawled twice."""

    def __init__(self, crawler: Crawler, jobdir: JobDir):
        self.jobdir = jobdir
        self.fingerprinter = crawler.request_fingerprinter
        self.sent = jobdir.started_requests() if jobdir.resumable else Counter()
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        path = crawler.settings.get("JOBDIR")
        enabled = crawler.settings.getbool("JOBSTATUS_ENABLED", default("JOBSTATUS_ENABLED"))
        if not path or not enabled:
            raise NotConfigured
        return cls(crawler, JobDir(path))

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item_or_request in start:
            if isinstance(item_or_request, Request):
                fingerprint = self.fingerprinter.fingerprint(item_or_request).hex()
                if self.sent[fingerprint]:
                    self.sent[fingerprint] -= 1  # sent before the pause
                    continue
                self.jobdir.record_started([fingerprint])
            yield item_or_request

    def spider_closed(self) -> None:
        self.jobdir.close()


class StartErrorMiddleware:
    """A spider middleware for a Scrapy older than 2.18: an exception of the
    spider's start (a bad argument, say) is sent as ``spider_error`` with no
    response, as newer Scrapy does, so that it fails the job; Scrapy then
    logs it as usual."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if SIGNALS_START_ERRORS:
            raise NotConfigured
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for item_or_request in start:
                yield item_or_request
        except CloseSpider:
            raise  # a close asked for, not an error
        except Exception:
            self.crawler.signals.send_catch_log(
                signal=signals.spider_error,
                failure=Failure(),
                response=None,
                spider=self.crawler.spider,
            )
            raise
