"""The listings job, run as ``scrapy crawl listings`` against the local
site's /listing/ fixture, and its parsing of pages in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from crawler.arguments import SpiderArgumentError
from crawler.spiders import listings
from crawler.spiders.listings import ListingsSpider, parse_total
from scrapy_jobstatus import open_store
from tests.helpers import poll_until, read_lines, start_crawl
from tests.spider_jobs import FAST, run_job

PRODUCT_ARGS = {
    "item": "div.product",
    "fields": json.dumps(
        {"name": "h2 ::text", "price": ".price::text", "link": "xpath:.//h2/a/@href"}
    ),
    "next": "a.next",
}
DETAIL_ARGS = {
    "detail": "h2 a",
    "detail_fields": json.dumps({"sku": "dd.sku", "description": "xpath://p[@class='desc']"}),
}


def products(site: str, pages: tuple[int, ...], details: bool) -> list[dict]:
    """The fixture's products, written from its pages: 3 per page on pages 1
    and 2, one on page 3; Tray has no detail link, Mug's detail page is gone."""
    rows = [
        (1, "Teapot", "12.50", 11), (1, "Kettle", "30.00", 12), (1, "Mug", "4.20", 13),
        (2, "Spoon", "1.10", 21), (2, "Sugar bowl", "8.00", 22), (2, "Tray", "15.75", None),
        (3, "Strainer", "3.30", 31),
    ]  # fmt: skip
    result = []
    for page, name, price, product_id in rows:
        if page not in pages:
            continue
        item = {
            "name": name,
            "price": f"\u20ac {price}",
            "link": product_id and f"{site}/listing/product/{product_id}",
        }
        if details:
            found = product_id not in (None, 13)
            item["sku"] = f"SKU-{product_id}" if found else None
            item["description"] = f"A fine {name.lower()}." if found else None
        result.append(item)
    return result


def as_set(items: list[dict]) -> set[str]:
    keys = [json.dumps(item, sort_keys=True) for item in items]
    assert len(keys) == len(set(keys)), "an item was yielded twice"
    return set(keys)


def test_all_pages_are_followed_and_detail_pages_merged_into_their_items(tmp_path, site):
    args = {**PRODUCT_ARGS, **DETAIL_ARGS, "total": "p.count"}
    job = run_job(tmp_path, "listings", {"url": f"{site}/listing/products?page=1", **args})
    assert as_set(job.items) == as_set(products(site, (1, 2, 3), details=True))
    doc = job.doc
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["current_page"] == 3
    assert doc["pagination_complete"] is True
    assert doc["total_documents_found"] == 7
    assert doc["stages_completed"] == ["listing", "finalizing"]
    assert [(e["error_type"], e["page_url"]) for e in doc["errors"]] == [
        ("http_error", f"{site}/listing/product/13")
    ]


def test_max_pages_stops_pagination_and_leaves_it_incomplete(tmp_path, site):
    job = run_job(
        tmp_path,
        "listings",
        {"url": f"{site}/listing/products?page=1", **PRODUCT_ARGS, "max_pages": "2"},
    )
    assert as_set(job.items) == as_set(products(site, (1, 2), details=False))
    assert (job.doc["status"], job.doc["current_page"], job.doc["pagination_complete"]) == (
        "completed",
        2,
        False,
    )


def read_document(db: Path, job_id: str) -> dict[str, Any] | None:
    if not db.exists():
        return None
    store = open_store(db)  # as the crawl opens it: never found half made
    try:
        return store.document(job_id)
    finally:
        store.close()


def test_an_endless_listing_is_incomplete_while_walked_and_when_the_timeout_stops_it(
    tmp_path, site
):
    args = {"item": "li.row", "fields": '{"name": ".name"}', "next": "a.next"}
    db, feed = tmp_path / "jobs.db", tmp_path / "job1.jl"
    process = start_crawl(
        "listings", db, tmp_path / "job1.log", output=feed,
        args={"url": f"{site}/listing/endless?page=1", **args, "_job": "job1"},
        settings={**FAST, "JOBSTATUS_TIMEOUT": "2"},
    )  # fmt: skip
    try:
        readings = poll_until(
            lambda: read_document(db, "job1"),
            lambda document: document is not None and not document["is_active"],
            timeout=60,
            what="the listings job to end",
        )
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # While pages were being walked, the job said so: not complete yet.
    walking = [d for d in readings if d and d["status"] == "running" and d["current_page"]]
    assert walking, [d and (d["status"], d["current_page"]) for d in readings]
    assert all(d["pagination_complete"] is False for d in walking)
    pages_seen = [d["current_page"] for d in walking]
    assert pages_seen == sorted(pages_seen)
    doc = readings[-1]
    assert (doc["status"], doc["completion_reason"]) == ("completed", "timeout")
    assert doc["pagination_complete"] is False
    pages = doc["current_page"]
    assert pages > 1 and pages >= pages_seen[-1]
    assert as_set(read_lines(feed)) == as_set(
        [{"name": f"Row {p}.{n}"} for p in range(1, pages + 1) for n in (1, 2)]
    )


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({**PRODUCT_ARGS}, "url"),
        ({**PRODUCT_ARGS, "url": "file:///etc/passwd"}, "url"),
        ({**PRODUCT_ARGS, "url": "http://127.0.0.1:1/", "fields": '["h2"]'}, "fields"),
        ({**PRODUCT_ARGS, "url": "http://127.0.0.1:1/", "item": "div["}, "item"),
        ({**PRODUCT_ARGS, "url": "http://127.0.0.1:1/", "max_pages": "2.5"}, "max_pages"),
    ],
)
def test_a_bad_argument_fails_the_job_at_once_naming_it(tmp_path, args, argument):
    job = run_job(tmp_path, "listings", args)
    doc = job.doc
    assert (doc["status"], doc["completion_reason"]) == ("failed", "error")
    assert doc["error_message"].startswith(f"{argument}: ")
    assert "Traceback" not in doc["error_message"] and "\n" not in doc["error_message"]
    assert doc["total_pages_crawled"] == 0 and job.items == []


# -- in process ---------------------------------------------------------------


def spider_with(**args: str) -> ListingsSpider:
    crawler = get_crawler(ListingsSpider)
    spider = ListingsSpider.from_crawler(crawler, **args)
    crawler.spider = spider
    return spider


def start(spider: ListingsSpider) -> Request:
    """The first request of start(), which awaits nothing before it: run
    without an event loop (the test session's loop is already running)."""
    step = spider.start().__anext__()
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise AssertionError("start() awaited something")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"fields": "{not json"}, "fields: not valid JSON"),
        ({"fields": "{}"}, "fields: must be a non-empty JSON object"),
        ({"fields": '{"name": 3}'}, "fields: the selector of 'name' must be a string"),
        ({"fields": '{"name": "xpath://h2["}'}, "fields: name: invalid selector"),
        ({"fields": '{"name": "xpath:nosuch()"}'}, "fields: name: invalid selector"),
        ({"next": ""}, "next: no selector given"),
        ({"next": "a::nosuch"}, "next: invalid selector"),
        ({"detail": "h2 a", "detail_fields": '{"sku": 1}'}, "detail_fields: the selector of 'sku'"),
        ({"detail_fields": '{"sku": ".sku"}'}, "detail_fields: given without detail"),
        ({"total": "p:nth-child(x)"}, "total: invalid selector"),
        ({"max_pages": "0"}, "max_pages: must be at least 1"),
    ],
)
def test_argument_errors_start_with_the_argument_name(args, message):
    spider = spider_with(url="http://example.com/", **{**PRODUCT_ARGS, **args})
    with pytest.raises(SpiderArgumentError) as error:
        start(spider)
    assert str(error.value).startswith(message)


@pytest.fixture
def reported(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """What the listings spider tells its job through the library's public
    progress API (``set_stage``, ``set_current_page``...), in order."""
    calls: list[tuple[str, object]] = []
    for field in ("stage", "current_page", "expected_total", "pagination_complete"):

        def record(spider: ListingsSpider, value: object = True, field: str = field) -> None:
            calls.append((field, value))

        monkeypatch.setattr(listings, f"set_{field}", record)
    return calls


def test_a_page_reports_its_number_the_expected_total_and_the_end_of_pagination(
    reported: list[tuple[str, object]],
):
    spider = spider_with(url="http://example.com/list", **PRODUCT_ARGS, total="p.count")
    start(spider)
    # Not complete until a page without a next link is reached.
    assert reported == [("stage", "listing"), ("pagination_complete", False)]
    reported.clear()

    def page(number: int, body: str) -> list:
        response = HtmlResponse(
            f"http://example.com/list?page={number}", body=body.encode(), encoding="utf-8",
            request=Request(f"http://example.com/list?page={number}"),
        )  # fmt: skip
        return list(spider.parse(response, page=number))

    first = page(
        1,
        "<p class='count'>Showing 1-2 of 1,204 results</p>"
        "<div class='product'><h2>A</h2></div><a class='next' href='?page=2'>next</a>",
    )
    assert reported == [("current_page", 1), ("expected_total", 1204)]
    assert [type(x).__name__ for x in first] == ["dict", "Request"]
    assert first[1].url == "http://example.com/list?page=2"
    reported.clear()
    last = page(2, "<p class='count'>1,204 results</p><div class='product'><h2>B</h2></div>")
    assert reported == [("current_page", 2), ("pagination_complete", True)]
    assert last == [{"name": "B", "price": None, "link": None}]


def test_a_next_link_back_to_a_page_already_seen_ends_the_listing(
    reported: list[tuple[str, object]],
):
    spider = spider_with(url="http://example.com/list?page=1", **PRODUCT_ARGS)
    start(spider)
    reported.clear()
    url = "http://example.com/list?page=1"
    body = b"<a class='next' href='?page=1'>again</a>"
    response = HtmlResponse(url, body=body, encoding="utf-8", request=Request(url))
    assert list(spider.parse(response, page=1)) == []
    assert reported == [("current_page", 1), ("pagination_complete", True)]


def test_max_pages_ends_pagination_without_completing_it(reported: list[tuple[str, object]]):
    spider = spider_with(url="http://example.com/list?page=1", **PRODUCT_ARGS, max_pages="1")
    start(spider)
    reported.clear()
    url = "http://example.com/list?page=1"
    body = b"<div class='product'><h2>A</h2></div><a class='next' href='?page=2'>next</a>"
    response = HtmlResponse(url, body=body, encoding="utf-8", request=Request(url))
    assert list(spider.parse(response, page=1)) == [{"name": "A", "price": None, "link": None}]
    assert reported == [("current_page", 1)]


@pytest.mark.parametrize(
    ("text", "total"),
    [
        ("7 results", 7),
        ("Showing 1\u201320 of 1,345", 1345),
        ("1\u202f234 items", 1234),
        ("no results", None),
    ],
)
def test_the_total_is_the_largest_number_of_its_text(text, total):
    assert parse_total(text) == total
