"""The documents job: crawl a site from a start URL and report every linked
document, optionally downloading them. Skop's document discovery in Scrapy
form.

``scrapy crawl documents -a url=START [-a types=pdf,docx,...] [-a max_depth=N]
[-a max_pages=N] [-a download=1]``
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urldefrag, urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse
from scrapy.linkextractors import IGNORED_EXTENSIONS, LinkExtractor
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.project import data_path
from w3lib.url import canonicalize_url, url_query_cleaner

from crawler.arguments import (
    SpiderArgumentError,
    parse_bool,
    parse_int,
    parse_start_url,
    registered_domain,
)
from crawler.items import Document, DownloadedDocument
from scrapy_jobstatus import set_stage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from twisted.python.failure import Failure

# Document, spreadsheet, presentation, text and archive formats.
DEFAULT_TYPES = (
    "pdf", "doc", "docx", "odt", "rtf", "epub",
    "xls", "xlsx", "ods", "csv",
    "ppt", "pptx", "odp",
    "txt",
    "zip", "rar", "7z", "tar", "gz", "tgz", "bz2", "xz",
)  # fmt: skip

# Query parameters that only track a visit: the same page without them.
TRACKING_PARAMETERS = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|mc_cid|mc_eid|_ga|_gl|igshid)$",
    re.IGNORECASE,
)
_TYPE = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$")
_PAGE_REQUEST = "documents_page"
_PARSED = "documents_parsed"


def parse_types(value: str | None) -> tuple[str, ...]:
    if value is None or not value.strip():
        return DEFAULT_TYPES
    types = []
    for entry in value.split(","):
        entry = entry.strip().lower().lstrip(".")
        if not entry:
            continue
        if not _TYPE.match(entry):
            raise SpiderArgumentError(f"types: {entry[:50]!r} is not a file extension")
        types.append(entry)
    if not types:
        raise SpiderArgumentError("types: no file extension given")
    return tuple(dict.fromkeys(types))


def clean_url(url: str) -> str:
    """The URL without its fragment and tracking parameters."""
    url = urldefrag(url).url
    query = urlsplit(url).query
    if not query:
        return url
    tracking = [
        name
        for name, _ in parse_qsl(query, keep_blank_values=True)
        if TRACKING_PARAMETERS.match(name)
    ]
    if not tracking:
        return url
    return url_query_cleaner(url, tracking, remove=True, unique=False)


def _is_well_formed(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https", "ftp") and bool(parts.hostname)


class DocumentsSpider(scrapy.Spider):
    name = "documents"
    custom_settings = {
        # Breadth-first: a document's depth is its distance from the start
        # page, and max_pages keeps the pages nearest to it.
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
    }

    def __init__(
        self,
        url: str | None = None,
        types: str | None = None,
        max_depth: str | None = None,
        max_pages: str | None = None,
        download: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.arguments = {
            "url": url,
            "types": types,
            "max_depth": max_depth,
            "max_pages": max_pages,
            "download": download,
        }
        self.documents_seen: set[str] = set()
        self.pages_seen: set[bytes] = set()
        self.page_urls_seen: set[str] = set()
        self.downloading = False
        # Links to every element, whatever the extension: documents and pages
        # are told apart here, not by the extractor.
        self.link_extractor = LinkExtractor(tags="a", attrs="href", deny_extensions=(), unique=True)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        try:
            download = parse_bool("download", kwargs.get("download"))
        except SpiderArgumentError:
            download = False  # reported by start(), which fails the job
        if download:
            # Settings are frozen after this: the pipeline is enabled for
            # downloading jobs only.
            settings = crawler.settings
            settings["ITEM_PIPELINES"]["crawler.pipelines.DocumentFilesPipeline"] = 1
            settings.set("MEDIA_ALLOW_REDIRECTS", True, priority="spider")
            if not settings.get("FILES_STORE"):
                settings.set(
                    "FILES_STORE", data_path("documents", createdir=True), priority="spider"
                )
            crawler.signals.connect(spider.scheduler_empty, signal=signals.scheduler_empty)
        return spider

    async def start(self) -> AsyncIterator[Any]:
        # Arguments are checked here, not in __init__, so that a bad one
        # fails the job (with its status recorded) instead of the process.
        arguments = self.arguments
        start_url = parse_start_url("url", arguments["url"])
        self.types = parse_types(arguments["types"])
        self.max_depth = parse_int("max_depth", arguments["max_depth"], default=None, minimum=0)
        self.max_pages = parse_int("max_pages", arguments["max_pages"], default=None, minimum=1)
        self.download = parse_bool("download", arguments["download"])
        # Longest first, so that "tar.gz" wins over "gz" when both are asked.
        self.type_suffixes = sorted(("." + t for t in self.types), key=len, reverse=True)
        self.page_deny = tuple("." + e for e in {*IGNORED_EXTENSIONS, *DEFAULT_TYPES, *self.types})
        self.domain = registered_domain(start_url)
        # OffsiteMiddleware keeps the crawl, redirects included, on the domain.
        self.allowed_domains = [self.domain]
        # With a JOBDIR, Scrapy keeps spider.state across a pause: a resumed
        # job reports no document twice, and crawls max_pages in all.
        memory = getattr(self, "state", None)
        if memory is not None:
            self.documents_seen = memory.setdefault("documents_seen", self.documents_seen)
            self.pages_seen = memory.setdefault("pages_seen", self.pages_seen)
            self.page_urls_seen = memory.setdefault("page_urls_seen", self.page_urls_seen)
        set_stage(self, "discovery")
        request = self.page_request(clean_url(start_url))
        if request is not None:  # None: a resumed job, which crawled it
            yield request

    def page_request(self, url: str) -> scrapy.Request | None:
        """A request for a page not requested yet, within max_pages."""
        # Most links repeat one already seen, character for character: they
        # are told apart without building a request and its fingerprint.
        if url in self.page_urls_seen:
            return None
        self.page_urls_seen.add(url)
        request = scrapy.Request(
            url, callback=self.parse, errback=self.page_failed, meta={_PAGE_REQUEST: True}
        )
        fingerprint = self.crawler.request_fingerprinter.fingerprint(request)
        if fingerprint in self.pages_seen:
            return None
        if self.max_pages is not None and len(self.pages_seen) >= self.max_pages:
            self.crawler.stats.inc_value("documents/pages_over_max_pages")
            return None
        self.pages_seen.add(fingerprint)
        return request

    def document_type(self, url: str) -> str | None:
        path = urlsplit(url).path.lower()
        for suffix in self.type_suffixes:
            if path.endswith(suffix):
                return suffix[1:]
        return None

    def is_page(self, url: str) -> bool:
        parts = urlsplit(url)
        # OffsiteMiddleware's rule (host names, ports aside), checked here so
        # that offsite pages are not even counted against max_pages.
        host = parts.hostname or ""
        return (
            parts.scheme in ("http", "https")
            and (host == self.domain or host.endswith("." + self.domain))
            and not parts.path.lower().endswith(self.page_deny)
        )

    def parse(self, response: Response) -> Iterator[Any]:
        try:
            if not isinstance(response, HtmlResponse):
                # A link to an image, a feed or a download without a known
                # extension: not a page, so nothing to follow.
                self.crawler.stats.inc_value("documents/pages_not_html")
                self.logger.debug("Not an HTML page: %(url)s", {"url": response.url})
                return
            yield from self.parse_page(response)
        finally:
            response.meta[_PARSED] = True

    def parse_page(self, response: HtmlResponse) -> Iterator[Any]:
        depth = response.meta.get("depth", 0)
        follow = self.max_depth is None or depth < self.max_depth
        document_class = DownloadedDocument if self.download else Document
        for link in self.link_extractor.extract_links(response):
            if not _is_well_formed(link.url):
                self.crawler.stats.inc_value("documents/links_malformed")
                continue
            url = clean_url(link.url)
            file_type = self.document_type(url)
            if file_type is not None:
                key = canonicalize_url(url)
                if key in self.documents_seen:
                    continue
                self.documents_seen.add(key)
                yield document_class(
                    url=url,
                    link_text=" ".join(link.text.split()),
                    source_page=response.url,
                    file_type=file_type,
                    depth=depth + 1,
                )
            elif follow and self.is_page(url):
                request = self.page_request(url)
                if request is not None:
                    yield request

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        request.meta[_PARSED] = True
        # HTTP errors and failed downloads are recorded by the job; requests
        # dropped on purpose (offsite redirect, redirect loop) are counted.
        if failure.check(IgnoreRequest) and not failure.check(HttpError):
            self.crawler.stats.inc_value("documents/pages_ignored")
            self.logger.info(
                "Page not crawled: %(url)s: %(reason)s",
                {"url": request.url, "reason": failure.value},
            )

    def scheduler_empty(self) -> None:
        """With download=1: once no page is left to crawl, the files still
        being fetched are the download stage."""
        if self.downloading or not self.documents_seen or self.pages_in_progress():
            return
        self.downloading = True
        set_stage(self, "download")

    def pages_in_progress(self) -> bool:
        # The scheduler is empty (that is the signal); a page may still be
        # downloading, or downloaded and waiting for, or in, its callback.
        engine = self.crawler.engine
        assert engine is not None and engine.scraper.slot is not None
        slot = engine.scraper.slot
        requests = [
            *engine.downloader.active,
            *(request for _, request, _ in slot.queue),
            *slot.active,
        ]
        return any(r.meta.get(_PAGE_REQUEST) and not r.meta.get(_PARSED) for r in requests)
