"""Spiders that exercise the job lifecycle in tests and benchmarks."""

from __future__ import annotations

from typing import Any

import scrapy
from scrapy.linkextractors import LinkExtractor

from scrapy_jobstatus import set_stage


class ItemRefused(Exception):
    pass


class RefusingPipeline:
    """Fails on items whose URL asks for it: an item pipeline error."""

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        if "item-error" in item["url"]:
            raise ItemRefused(f"refused {item['url']}")
        return item


class ProbeSpider(scrapy.Spider):
    """Fetches ``urls``; a URL containing "spider-error" makes the callback
    raise; every other response gives one item."""

    name = "probe"

    def __init__(self, urls: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.urls = [u for u in urls.split(",") if u]

    async def start(self):
        set_stage(self, "probe")
        for url in self.urls:
            yield scrapy.Request(url, dont_filter=True)

    def parse(self, response):
        if "spider-error" in response.url:
            raise ValueError(f"cannot parse {response.url}")
        yield {"url": response.url, "status": response.status}


class FollowSpider(scrapy.Spider):
    """Follows every link from ``url``: one item per page."""

    name = "follow"
    link_extractor = LinkExtractor()

    def __init__(self, url: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.start_urls = [url]

    def parse(self, response):
        yield {"url": response.url}
        for link in self.link_extractor.extract_links(response):
            yield response.follow(link.url)


class StagePerPageSpider(FollowSpider):
    """Follows every link from ``url``, reporting a stage of its own on
    every page: a history without end."""

    name = "stage_per_page"
    pages = 0

    def __init__(self, url: str = "", stage_chars: str = "0", **kwargs: Any):
        super().__init__(url, **kwargs)
        # Each stage name padded with this many characters.
        self.padding = "B" * int(stage_chars)

    def parse(self, response):
        set_stage(self, f"page {self.pages} {self.padding}".rstrip())
        self.pages += 1
        yield from super().parse(response)


class ErrorPagesSpider(scrapy.Spider):
    """Fetches ``count`` error pages of the local ``site`` (``/status/404``),
    made one by one as the scheduler takes them: every response is one job
    error, and the spider itself keeps nothing."""

    name = "error_pages"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    def __init__(self, site: str = "", count: str = "100", **kwargs: Any):
        super().__init__(**kwargs)
        self.site = site
        self.count = int(count)

    async def start(self):
        for i in range(self.count):
            yield scrapy.Request(f"{self.site}/status/404?n={i}", dont_filter=True)

    def parse(self, response: scrapy.http.Response) -> None:
        return None
