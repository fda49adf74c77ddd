"""A stats consumer like Spidermon's close monitors: an extension that reads
the crawl's ``jobstatus/*`` stats in its own ``spider_closed`` handler and
writes what it saw to the JSON file named by ``STATS_PROBE_FILE``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from scrapy import signals

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Spider
    from scrapy.crawler import Crawler


class ClosingStatsRecorder:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.path = crawler.settings["STATS_PROBE_FILE"]

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        recorder = cls(crawler)
        crawler.signals.connect(recorder.spider_closed, signal=signals.spider_closed)
        return recorder

    def spider_closed(self, spider: Spider, reason: str) -> None:
        seen = {
            key: value
            for key, value in self.crawler.stats.get_stats().items()
            if key.startswith("jobstatus/")
        }
        with open(self.path, "w") as f:
            json.dump(seen, f)
