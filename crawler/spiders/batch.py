"""The batch job: fetch a given list of URLs, one item per URL with its
outcome. ScraperAPI's DataPipeline job in Scrapy form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import scrapy
from scrapy.http import TextResponse

from crawler.arguments import SpiderArgumentError, parse_start_url
from crawler.items import PageOutcome
from crawler.urls_file import UrlsFilePolicy, on_scrapyd_node, parse_urls_file
from scrapy_jobstatus import set_expected_total, set_stage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy.http import Response
    from twisted.python.failure import Failure


def parse_url_list(
    urls: str | None, urls_file: str | None, policy: UrlsFilePolicy | None = None
) -> list[str]:
    """The URLs to fetch, in order, each once; a bad entry is an error that
    names the argument it came from. ``urls_file`` is read as ``policy``
    allows (by default: any regular file of the user's)."""
    if urls and urls_file:
        raise SpiderArgumentError("give either urls or urls_file, not both")
    if urls_file:
        argument = "urls_file"
        policy = policy or UrlsFilePolicy(directory=None)
        result = parse_urls_file(policy.read(urls_file))
    elif urls:
        argument = "urls"
        result = [parse_start_url(argument, entry) for entry in urls.split(",") if entry.strip()]
    else:
        raise SpiderArgumentError(
            "urls: no URL given (use -a urls=URL,URL,... or -a urls_file=PATH)"
        )
    if not result:
        raise SpiderArgumentError(f"{argument}: the URL list is empty")
    return list(dict.fromkeys(result))


class BatchSpider(scrapy.Spider):
    name = "batch"
    custom_settings = {
        # One item per URL whatever its status: error pages are outcomes too.
        "HTTPERROR_ALLOW_ALL": True,
    }

    def __init__(self, urls: str | None = None, urls_file: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.urls = urls
        self.urls_file = urls_file

    async def start(self) -> AsyncIterator[Any]:
        # Arguments are checked here, not in __init__, so that a bad list
        # fails the job (with its status recorded) instead of the process.
        policy = None
        if self.urls_file:
            policy = UrlsFilePolicy.from_settings(self.settings, on_node=on_scrapyd_node())
        targets = parse_url_list(self.urls, self.urls_file, policy)
        set_expected_total(self, len(targets))
        set_stage(self, "fetch")
        for url in targets:
            yield scrapy.Request(
                url,
                callback=self.parse,
                errback=self.failed,
                dont_filter=True,
                meta={"batch_url": url},
            )

    def parse(self, response: Response) -> PageOutcome:
        title = None
        if (
            isinstance(response, TextResponse)
            and b"html" in response.headers.get(b"Content-Type", b"html").lower()
        ):
            title = response.css("title::text").get()
            title = " ".join(title.split()) if title else None
        return PageOutcome(url=response.meta["batch_url"], status=response.status, title=title)

    def failed(self, failure: Failure) -> PageOutcome:
        request = failure.request  # type: ignore[attr-defined]
        error = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        return PageOutcome(
            url=request.meta["batch_url"], status=None, error=" ".join(error.split())
        )
