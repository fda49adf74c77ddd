"""The listings job: walk a paginated listing, extract each item's fields,
optionally completed from its detail page. Aitronos's listing job in Scrapy
form.

``scrapy crawl listings -a url=START -a item=CSS -a fields=JSON -a next=CSS
[-a detail=CSS] [-a detail_fields=JSON] [-a max_pages=N] [-a total=CSS]``

Selectors are CSS, or XPath written ``xpath:EXPR``. ``fields`` and
``detail_fields`` map a field name to a selector evaluated inside each item
element, or on the detail page; a field's value is the text of its first
match (``None`` when nothing matches), and ``href``/``src`` attributes are
made absolute. Items are dicts of those fields.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy.http import TextResponse
from w3lib.url import canonicalize_url

from crawler.arguments import (
    SpiderArgumentError,
    parse_fields,
    parse_int,
    parse_selector,
    parse_start_url,
)
from scrapy_jobstatus import (
    set_current_page,
    set_expected_total,
    set_pagination_complete,
    set_stage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import Response
    from twisted.python.failure import Failure

    from crawler.arguments import FieldSelector

# A whole number, with or without thousands separators ("1,234", "1 234").
_NUMBER = re.compile(r"\d{1,3}(?:[,.\u00a0\u202f ]\d{3})+(?!\d)|\d+")


def parse_total(text: str | None) -> int | None:
    """The number of items in a text such as "1,234 results" or "Showing
    1-20 of 345": its largest number."""
    numbers = [int(re.sub(r"\D", "", n)) for n in _NUMBER.findall(text or "")]
    return max(numbers) if numbers else None


class ListingsSpider(scrapy.Spider):
    name = "listings"

    def __init__(
        self,
        url: str | None = None,
        item: str | None = None,
        fields: str | None = None,
        next: str | None = None,  # noqa: A002 (the argument's public name)
        detail: str | None = None,
        detail_fields: str | None = None,
        max_pages: str | None = None,
        total: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.arguments = {
            "url": url, "item": item, "fields": fields, "next": next, "detail": detail,
            "detail_fields": detail_fields, "max_pages": max_pages, "total": total,
        }  # fmt: skip
        self.pages_seen: set[str] = set()
        self.total_reported = False

    async def start(self) -> AsyncIterator[Any]:
        # Arguments are checked here, not in __init__, so that a bad one
        # fails the job (with its status recorded) instead of the process.
        arguments = self.arguments
        start_url = parse_start_url("url", arguments["url"])
        self.item_selector = parse_selector("item", arguments["item"], required=True)
        self.fields = parse_fields("fields", arguments["fields"], required=True)
        self.next_selector = parse_selector("next", arguments["next"], required=True)
        self.detail_selector = parse_selector("detail", arguments["detail"], required=False)
        self.detail_fields = parse_fields(
            "detail_fields", arguments["detail_fields"], required=False
        )
        if self.detail_fields and self.detail_selector is None:
            raise SpiderArgumentError(
                "detail_fields: given without detail (the selector of the detail page link)"
            )
        self.max_pages = parse_int("max_pages", arguments["max_pages"], default=None, minimum=1)
        self.total_selector = parse_selector("total", arguments["total"], required=False)
        set_stage(self, "listing")
        # With a JOBDIR, Scrapy keeps spider.state across a pause: a resumed
        # job knows the pages it went through.
        memory = getattr(self, "state", None)
        resumed = bool(memory and memory.get("pages_seen"))
        if memory is not None:
            self.pages_seen = memory.setdefault("pages_seen", self.pages_seen)
        if not resumed:
            # Not complete until a page without a next link is reached: a job
            # stopped before (max_pages, timeout, cancel) stays incomplete.
            set_pagination_complete(self, False)
        self.pages_seen.add(canonicalize_url(start_url))
        yield scrapy.Request(
            start_url, callback=self.parse, errback=self.page_failed, cb_kwargs={"page": 1}
        )

    def parse(self, response: Response, page: int) -> Iterator[Any]:
        set_current_page(self, page)
        if not isinstance(response, TextResponse):
            self.logger.warning(
                "Listing page %(page)d is not a text page: %(url)s",
                {"page": page, "url": response.url},
            )
            return
        if not self.total_reported and self.total_selector is not None:
            self.report_total(response)
        for element in self.item_selector.select(response.selector):
            item = self.extract(self.fields, element, response)
            link = self.detail_selector.first_link(element) if self.detail_selector else None
            if link:
                yield response.follow(
                    link, callback=self.parse_detail, errback=self.detail_failed,
                    # Two items may share a detail page: each gets its visit.
                    dont_filter=True, cb_kwargs={"item": item},
                )  # fmt: skip
            else:
                yield {**item, **dict.fromkeys(self.detail_fields)}
        next_link = self.next_selector.first_link(response.selector)
        next_url = response.urljoin(next_link) if next_link else None
        if next_url is None or not next_url.startswith(("http://", "https://")):
            set_pagination_complete(self, True)
            return
        if canonicalize_url(next_url) in self.pages_seen:
            # A last page linking back to itself or to an earlier page.
            self.logger.info(
                "Page %(page)d links back to a page already seen: the listing ends", {"page": page}
            )
            set_pagination_complete(self, True)
            return
        if self.max_pages is not None and page >= self.max_pages:
            self.logger.info(
                "max_pages (%(max)d) reached: pagination stops here", {"max": self.max_pages}
            )
            return
        self.pages_seen.add(canonicalize_url(next_url))
        yield scrapy.Request(
            next_url, callback=self.parse, errback=self.page_failed, cb_kwargs={"page": page + 1}
        )

    def parse_detail(self, response: Response, item: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(response, TextResponse):
            return {**item, **dict.fromkeys(self.detail_fields)}
        return {**item, **self.extract(self.detail_fields, response.selector, response)}

    def detail_failed(self, failure: Failure) -> dict[str, Any]:
        # The listing's fields are kept; the error is in the job's errors.
        item = failure.request.cb_kwargs["item"]  # type: ignore[attr-defined]
        return {**item, **dict.fromkeys(self.detail_fields)}

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        set_current_page(self, request.cb_kwargs["page"])
        self.logger.warning(
            "Listing page %(page)d failed: pagination stops", {"page": request.cb_kwargs["page"]}
        )

    def extract(
        self, fields: dict[str, FieldSelector], root: Any, response: TextResponse
    ) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for name, selector in fields.items():
            value = selector.first_text(root)
            if value and selector.is_url:
                value = response.urljoin(value)
            item[name] = value
        return item

    def report_total(self, response: TextResponse) -> None:
        assert self.total_selector is not None
        total = parse_total(self.total_selector.first_text(response.selector))
        if total is None:
            self.logger.warning("total: no number found on %(url)s", {"url": response.url})
            return
        self.total_reported = True
        set_expected_total(self, total)
