"""A spider whose errors quote what it found on a crawled page."""

from __future__ import annotations

from typing import Any

import scrapy


class TitleCheckSpider(scrapy.Spider):
    """Fetches ``url`` and expects its page title to be ``title``: any other
    title is a spider error whose message quotes the title found."""

    name = "titlecheck"

    def __init__(self, url: str = "", title: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.url = url
        self.title = title

    async def start(self):
        yield scrapy.Request(self.url, dont_filter=True)

    def parse(self, response):
        found = response.css("title::text").get("")
        if found != self.title:
            raise ValueError(f"unexpected title: {found}")
        yield {"url": response.url, "title": found}
