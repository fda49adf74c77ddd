"""In a real browser: the nodes panel of the jobs dashboard (``GET dashboard``
reading ``nodes.json``), and the node that ran each job in the jobs table.

One real ``scrapyd`` with the shipped config, behind basic auth, shares its
SQLite job store with two more nodes whose heartbeats the tests write into it
as a node would: one dead for an hour, one whose name, version and URL are
markup and script. Before each test both heartbeats are written again, so
that the second one is alive for the node timeout (20 s) from then.

The browser is driven as in tests/test_dashboard.py (its helpers are shared):
Playwright's async API on pytest-twisted's loop, Debian's Chromium. Where a
test is about the page's timers (polling paused while the tab is hidden, a
missing service asked again a minute later), Playwright's clock moves the
page's time forward instead of the test waiting. Screenshots are saved in
tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, Route, expect
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._store import NodeInfo, open_store
from tests import test_dashboard
from tests.scrapyd_node import ScrapydNode, running_node, sample_urls, unique
from tests.test_dashboard import (
    AUTH,
    PAYLOAD,
    SET_HIDDEN,
    browsing,
    open_dashboard,
    row,
    screenshot,
)

# Chromium, as tests/test_dashboard.py launches it, for this module.
browser = test_dashboard.browser

NODE = "node-alpha"
GONE = "node-gone"
HOSTILE = "<img src=x onerror=window.__xss=1>"
HOSTILE_URL = "javascript:window.__xss=1"
NODES_JSON = re.compile(r"/nodes\.json$")
NOT_FOUND = (
    "\n<html>\n  <head><title>404 - No Such Resource</title></head>\n  <body>\n"
    "    <h1>No Such Resource</h1>\n    <p>Sorry. No luck finding that resource.</p>\n"
    "  </body>\n</html>\n"
)
# Counts the page's requests to nodes.json, whatever the time the page reads.
COUNT_FETCHES = """() => {
    window.__nodeFetches = 0;
    const fetch = window.fetch;
    window.fetch = (url, options) => {
        if (String(url).startsWith("nodes.json")) window.__nodeFetches += 1;
        return fetch(url, options);
    };
}"""


# -- the nodes and the browser ---------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-nodes"),
        options={"node_name": NODE, "max_proc": "2", "poll_interval": "0.2"},
        auth=AUTH,
    )


@pytest.fixture
def cluster(node: ScrapydNode) -> dict[str, Any]:
    """The heartbeats of the two other nodes, written now; nodes.json's answer."""
    now = time.time()
    store = open_store(node.db)
    try:
        store.beat(
            NodeInfo(
                name=GONE,
                url="http://127.0.0.1:9/",
                max_proc=4,
                running=1,
                version="scrapy-jobstatus 0.1.0, Scrapyd 1.5.0",
                started_at=now - 7200,
                last_seen=now - 3630,  # "1 h ago", give or take a clock's second
            ),
            store_clock=False,
        )
        store.beat(
            NodeInfo(
                name=HOSTILE,
                url=HOSTILE_URL,
                max_proc=1,
                running=0,
                version=PAYLOAD,
                started_at=now - 60,
                last_seen=now,
            ),
            store_clock=False,
        )
    finally:
        store.close()
    answer = node.get("nodes.json").json()
    assert [n["name"] for n in answer["nodes"]] == [HOSTILE, NODE, GONE]
    return {n["name"]: n for n in answer["nodes"]}


@pytest.fixture(scope="module")
def finished_job(node: ScrapydNode, site: str) -> str:
    """A job the node ran to its end."""
    job = unique("on-alpha")
    assert node.schedule(job=job, urls=sample_urls(site)).json()["status"] == "ok"
    node.wait_status(job, "completed")
    assert node.status(job)["node"] == NODE
    return job


def node_row(page: Page, name: str) -> Locator:
    # A CSS string takes JSON's escapes of quotes and backslashes.
    return page.locator(f"#nodes-body tr[data-node={json.dumps(name)}]")


async def not_found(route: Route) -> None:
    """Scrapyd's answer for a service its scrapyd.conf does not list."""
    await route.fulfill(status=404, content_type="text/html; charset=utf-8", body=NOT_FOUND)


# -- the panel ---------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_panel_lists_the_nodes_alive_and_dead(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any]
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        panel = page.locator("#nodes")
        await expect(panel).to_be_visible()
        # Several nodes and a dead one: open at first.
        await expect(panel).to_have_js_property("open", True)
        await expect(panel.locator("summary")).to_have_text(
            re.compile(r"^Nodes\s+3 nodes, 2 alive\s*1 dead$")
        )
        rows = page.locator("#nodes-body tr")
        await expect(rows).to_have_count(3)
        assert await rows.evaluate_all("rows => rows.map(r => r.dataset.node)") == [
            HOSTILE,
            NODE,
            GONE,
        ]

        alpha = node_row(page, NODE)
        await expect(alpha.locator(".state .badge")).to_have_text("alive")
        await expect(alpha.locator(".state .badge")).to_have_class(re.compile(r"\bbadge-alive\b"))
        await expect(alpha.locator(".name")).to_have_text(f"{NODE} this node")
        # A crawl of a test before may still count until the next heartbeat.
        await expect(alpha.locator(".slots")).to_have_text("0 / 2", timeout=20_000)
        await expect(alpha.locator(".seen time")).to_have_text(re.compile(r"^\d+ s ago$"))
        await expect(alpha.locator(".seen time")).to_have_attribute(
            "title", re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        )
        await expect(alpha.locator(".version")).to_have_text(cluster[NODE]["version"])
        link = alpha.locator(".address a")
        await expect(link).to_have_text(node.url)
        await expect(link).to_have_attribute("href", node.url)
        await expect(link).to_have_attribute("rel", "noopener noreferrer")

        gone = node_row(page, GONE)
        await expect(gone).to_have_class(re.compile(r"\bdead\b"))
        await expect(gone.locator(".state .badge")).to_have_text("dead")
        await expect(gone.locator(".state .badge")).to_have_class(re.compile(r"\bbadge-dead\b"))
        await expect(gone.locator(".name")).to_have_text(GONE)  # not this node
        await expect(gone.locator(".slots")).to_have_text("1 / 4")
        seen = gone.locator(".seen time")
        await expect(seen).to_have_text("1 h ago")
        await expect(seen).to_have_attribute("title", cluster[GONE]["last_seen"])
        await expect(gone.locator(".since time")).to_have_attribute(
            "datetime", cluster[GONE]["started_at"]
        )
        await expect(gone.locator(".address a")).to_have_attribute("href", "http://127.0.0.1:9/")

        await expect(node_row(page, HOSTILE).locator(".state .badge")).to_have_text("alive")
        await screenshot(page, "dashboard-nodes.png", down_to=panel)

        # Collapsed to its summary line by hand: it stays so.
        await panel.locator("summary").click()
        await expect(rows.first).to_be_hidden()
        async with page.expect_response(NODES_JSON, timeout=15_000):
            pass
        await expect(panel).to_have_js_property("open", False)


@deferred_f_from_coro_f
async def test_node_names_versions_and_urls_show_as_text(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any]
) -> None:
    async with browsing(browser) as page:
        blocked: list[str] = []
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        await open_dashboard(page, node.url + "dashboard")
        hostile = node_row(page, HOSTILE)
        await expect(hostile.locator(".node-name")).to_have_text(HOSTILE)
        await expect(hostile.locator(".node-name")).to_have_attribute("title", HOSTILE)
        await expect(hostile.locator(".version")).to_have_text(PAYLOAD)
        await expect(hostile.locator(".version span")).to_have_attribute("title", PAYLOAD)
        # Only a web address becomes a link.
        await expect(hostile.locator(".address")).to_have_text(HOSTILE_URL)
        await expect(hostile.locator(".address a")).to_have_count(0)
        await expect(page.locator("#nodes a")).to_have_count(2)

        await expect(page.locator("img")).to_have_count(0)
        await expect(page.locator("script")).to_have_count(1)  # the page's own
        assert await page.evaluate("window.__xss") is None
        assert blocked == []  # nothing even tried to run


@deferred_f_from_coro_f
async def test_job_rows_name_their_node(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any], finished_job: str
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#jobs th.node")).to_have_text("Node")
        cell = row(page, finished_job).locator(".node")
        await expect(cell).to_be_visible()
        await expect(cell).to_have_text(NODE)
        await expect(cell.locator("span")).to_have_attribute("title", NODE)
        await screenshot(page, "dashboard-nodes-jobs.png", down_to=page.locator("#pager"))
        # And in the job's details.
        await row(page, finished_job).locator("button.job-id").click()
        counter = page.locator(
            "#details .counters div", has=page.locator("dt", has_text=re.compile("^Node$"))
        )
        await expect(counter.locator("dd")).to_have_text(NODE)


@pytest.fixture(scope="module")
def job_of_gone(node: ScrapydNode) -> str:
    """A job another node ran, in the shared store: its log is on that node."""
    job = unique("on-gone")
    now = time.time()
    store = open_store(node.db)
    try:
        store.start_job(
            JobState(
                job_id=job,
                project="crawler",
                spider="batch",
                node=GONE,
                status=JobStatus.RUNNING,
                pid=1,
                created_at=now,
                started_at=now,
                updated_at=now,
            )  # fmt: skip
        )
        store.end_job(job, JobStatus.FAILED, "its node died", unstarted=False)
    finally:
        store.close()
    return job


@deferred_f_from_coro_f
async def test_a_job_of_another_node_links_to_its_log_there(
    browser: Browser,
    node: ScrapydNode,
    cluster: dict[str, Any],
    finished_job: str,
    job_of_gone: str,
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await expect(row(page, job_of_gone).locator(".node")).to_have_text(GONE)
        remote = row(page, job_of_gone).get_by_role("link", name="Log")
        await expect(remote).to_have_attribute(
            "href", f"http://127.0.0.1:9/logs/crawler/batch/{job_of_gone}.log"
        )
        local = row(page, finished_job).get_by_role("link", name="Log")
        await expect(local).to_have_attribute("href", f"logs/crawler/batch/{finished_job}.log")


@deferred_f_from_coro_f
async def test_one_node_gets_a_closed_panel_and_no_node_column(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any], finished_job: str
) -> None:
    """The store of a single node: its name in every job row says nothing."""
    alone = {"status": "ok", "node_name": NODE, "nodes": [cluster[NODE]]}

    async def one_node(route: Route) -> None:
        await route.fulfill(json=alone)

    async with browsing(browser) as page:
        await page.route(NODES_JSON, one_node)
        await open_dashboard(page, node.url + "dashboard")
        panel = page.locator("#nodes")
        await expect(panel.locator("summary")).to_have_text(
            re.compile(r"^Nodes\s+1 node, 1 alive$")
        )
        await expect(panel).to_have_js_property("open", False)
        await expect(page.locator("#nodes-body tr")).to_be_hidden()
        await expect(row(page, finished_job).locator(".status .badge")).to_have_text("completed")
        await expect(row(page, finished_job).locator(".node")).to_be_hidden()
        await expect(page.locator("#jobs th.node")).to_be_hidden()
        await panel.locator("summary").click()
        await expect(node_row(page, NODE).locator(".state .badge")).to_have_text("alive")


@deferred_f_from_coro_f
async def test_ages_are_on_the_node_clock(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any]
) -> None:
    """A browser whose clock is two hours fast: a heartbeat of seconds ago
    is seconds old all the same."""
    async with browsing(browser) as page:
        await page.clock.install(time=time.time() + 7200)
        await open_dashboard(page, node.url + "dashboard")
        await expect(node_row(page, NODE).locator(".seen time")).to_have_text(
            re.compile(r"^\d+ s ago$")
        )
        await expect(node_row(page, GONE).locator(".seen time")).to_have_text("1 h ago")


# -- a scrapyd.conf without nodes.json, a hidden tab ---------------------------------


@deferred_f_from_coro_f
async def test_no_panel_and_no_error_without_the_service(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any], finished_job: str
) -> None:
    async with browsing(browser) as page:
        await page.clock.install()
        await page.route(NODES_JSON, not_found)
        async with page.expect_response(NODES_JSON) as answer:
            await open_dashboard(page, node.url + "dashboard")
        assert (await answer.value).status == 404
        await expect(row(page, finished_job).locator(".status .badge")).to_have_text("completed")
        # Which node ran a job is in jobs.json all the same.
        await expect(row(page, finished_job).locator(".node")).to_have_text(NODE)
        await expect(page.locator("#nodes")).to_be_hidden()
        await expect(page.locator("#alert")).to_be_hidden()
        await expect(page.locator("#notice")).to_be_hidden()
        await expect(page.locator("#live")).to_contain_text("Live · updated")

        # Not asked again every 5 s, but a minute later (a restart may add it).
        await page.evaluate(COUNT_FETCHES)
        await page.clock.fast_forward(30_000)
        assert await page.evaluate("window.__nodeFetches") == 0
        await page.unroute(NODES_JSON)
        await page.clock.fast_forward(30_000)
        await expect(page.locator("#nodes")).to_be_visible()
        await expect(page.locator("#nodes-body tr")).to_have_count(3)
        assert await page.evaluate("window.__nodeFetches") == 1


@deferred_f_from_coro_f
async def test_panel_pauses_while_the_tab_is_hidden(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any]
) -> None:
    async with browsing(browser) as page:
        await page.clock.install()
        await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#nodes-body tr")).to_have_count(3)
        # Every 5 s while shown.
        async with page.expect_response(NODES_JSON, timeout=2_000):
            await page.clock.fast_forward(5_000)

        await page.evaluate(SET_HIDDEN, True)
        await expect(page.locator("#live")).to_have_text("Paused while the tab is hidden")
        await page.evaluate(COUNT_FETCHES)
        await page.clock.fast_forward(120_000)
        assert await page.evaluate("window.__nodeFetches") == 0
        # Shown again: read at once.
        async with page.expect_response(NODES_JSON, timeout=2_000):
            await page.evaluate(SET_HIDDEN, False)
        await expect(page.locator("#live")).to_contain_text("Live")
        await expect(node_row(page, GONE).locator(".state .badge")).to_have_text("dead")


# -- a phone -------------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_panel_and_node_column_on_a_phone(
    browser: Browser, node: ScrapydNode, cluster: dict[str, Any], finished_job: str
) -> None:
    async with browsing(browser, width=390, height=844) as page:
        await open_dashboard(page, node.url + "dashboard")
        gone = node_row(page, GONE)
        await expect(gone.locator(".state .badge")).to_have_text("dead")
        await expect(gone.locator(".address a")).to_be_visible()
        await expect(page.locator("#nodes .head")).to_be_hidden()
        # The jobs table's is the page's one thead (tests/test_dashboard.py counts on it).
        await expect(page.locator("#jobs thead")).to_be_hidden()
        card = row(page, finished_job)
        await expect(card.locator(".node")).to_have_text(NODE)
        await expect(card.locator(".node")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        for box in [
            await page.locator("#nodes").bounding_box(),
            await gone.bounding_box(),
            await card.bounding_box(),
        ]:
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        await screenshot(page, "dashboard-nodes-phone.png", down_to=card)
