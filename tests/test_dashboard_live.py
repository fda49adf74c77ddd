"""In a real browser: the jobs dashboard drawing a job's whole run from
``jobstatus.json?series=1``, following the node's events (``events.json``,
a long poll) to show a job's end at once, falling back to plain polling on a
node without that service, and showing a job's webhook deliveries
(``webhooks.json``).

One real ``scrapyd`` with the shipped config, behind basic auth, runs real
crawls of the local site. Its scrapyd.conf gets ``events.json`` and
``webhooks.json`` where the shipped one lacks them and their modules exist
(tests that need one are skipped otherwise). A job with webhook deliveries
is written through the store API before the node starts, each delivery
settled (delivered, given up, or retried an hour later), so the node's own
deliverer has nothing to take up.

The browser is driven as in tests/test_dashboard.py, whose helpers are
shared. Times are compared in the browser's clock, the machine's, which is
also the crawls'; where a test is about the page's timers, Playwright's
clock moves the page's time instead. Screenshots are saved in
tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from scrapy.utils.defer import deferred_f_from_coro_f

from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._store import Attempt, open_store
from tests import test_dashboard
from tests.helpers import wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, slow_urls, unique
from tests.test_dashboard import (
    AUTH,
    PAYLOAD,
    SET_HIDDEN,
    browsing,
    open_dashboard,
    row,
    screenshot,
)
from tests.test_dashboard_nodes import not_found

# Chromium, as tests/test_dashboard.py launches it, for this module.
browser = test_dashboard.browser

EVENTS_JSON = re.compile(r"/events\.json(\?|$)")
WEBHOOKS_JSON = re.compile(r"/webhooks\.json(\?|$)")
# The page's poll of jobs.json.
POLL_MS = 2000
TERMINAL = {"completed", "failed", "cancelled"}

HOOK = "http://127.0.0.1:9/hook"
SECRET_HOOK = "https://hook-user:s3cret-hook@hooks.example/in"  # noqa: S105 (a test's)
HOSTILE_HOOK = 'javascript:window.__xss=1//"><img src=x onerror=window.__xss=1>'
HOOKED = "with-webhooks"
# Logs the page's requests (start, answer) and events.json's answers, in the page's clock.
LOG_FETCHES = """() => {
    window.__log = [];
    const fetch = window.fetch;
    window.fetch = async (url, options) => {
        const entry = {url: String(url), start: Date.now()};
        window.__log.push(entry);
        const response = await fetch(url, options);
        entry.answered = Date.now();
        if (entry.url.startsWith("events.json")) {
            response.clone().json().then((body) => { entry.body = body; }, () => {});
        }
        return response;
    };
}"""
# Stamps the first time each job row shows each status, in the page's clock.
WATCH_ROWS = """() => {
    window.__seen = {};
    const body = document.getElementById("jobs-body");
    const look = () => {
        for (const tr of body.querySelectorAll("tr.job")) {
            const key = `${tr.dataset.job} ${tr.dataset.status}`;
            if (!(key in window.__seen)) window.__seen[key] = Date.now();
        }
    };
    look();
    new MutationObserver(look).observe(body, {childList: true, subtree: true, attributes: true});
}"""
COUNT_EVENT_FETCHES = """() => {
    window.__eventFetches = 0;
    const fetch = window.fetch;
    window.fetch = (url, options) => {
        if (String(url).startsWith("events.json")) window.__eventFetches += 1;
        return fetch(url, options);
    };
}"""


# -- the node -----------------------------------------------------------------------


def write_hooked_job(db: Path) -> None:
    """A completed job with three webhook URLs (a plain one, one with a
    password, one that is markup and script), its job.started and
    job.completed deliveries, and an attempt or two each, every delivery
    settled: delivered, given up, or retried an hour from now."""
    now = time.time()
    state = JobState(
        job_id=HOOKED, project=PROJECT, spider="batch", status=JobStatus.RUNNING, pid=1,
        interval=1.0, created_at=now - 120, started_at=now - 120, updated_at=now - 120,
        webhooks=[HOOK, SECRET_HOOK, HOSTILE_HOOK],
    )  # fmt: skip
    store = open_store(db)
    try:
        assert store.start_job(state).started
        state.total_pages_crawled = state.total_documents_found = 5
        state.status, state.completed_at, state.updated_at = JobStatus.COMPLETED, now - 60, now - 60
        state.progress = 100.0
        assert store.save(state).written
        # Due since they were written: claimed by this process, no node runs yet.
        deliveries = store.claim_deliveries(time.time(), lease=30, limit=10, job_id=HOOKED)
        assert len(deliveries) == 6
        refused = Attempt(now - 100, None, "Connection refused", 2, False, now - 95)
        outcomes = {
            ("job.started", HOOK): refused,
            ("job.started", SECRET_HOOK): Attempt(now - 100, 204, None, 31, True, None),
            ("job.started", HOSTILE_HOOK): Attempt(now - 100, None, PAYLOAD, 0, False, None),
            ("job.completed", HOOK): Attempt(now - 50, 503, None, 12, False, now + 3600),
            ("job.completed", SECRET_HOOK): Attempt(now - 50, 410, None, 8, False, None),
            ("job.completed", HOSTILE_HOOK): Attempt(now - 50, None, PAYLOAD, 0, False, None),
        }
        for delivery in deliveries:
            store.record_attempt(delivery, outcomes[delivery.event_type, delivery.url])
        # The first one's retry, due a while ago: delivered.
        (retried,) = store.claim_deliveries(time.time(), lease=30, limit=10, job_id=HOOKED)
        assert (retried.event_type, retried.url) == ("job.started", HOOK)
        store.record_attempt(retried, Attempt(now - 95, 200, None, 4, True, None))
        assert store.claim_deliveries(time.time() + 60, lease=30, limit=10, job_id=HOOKED) == []
    finally:
        store.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    node = ScrapydNode(
        tmp_path_factory.mktemp("scrapyd-live"),
        options={"max_proc": "2", "poll_interval": "0.2"},
        auth=AUTH,
    )
    write_hooked_job(node.db)  # before the node starts: its deliverer finds nothing due
    try:
        node.start()
        node.deploy()
        yield node
    finally:
        node.stop()


# -- helpers -----------------------------------------------------------------------


def ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def elapsed(span_ms: float) -> str:
    """The page's m:ss for a span."""
    s = math.floor(span_ms / 1000 + 0.5)
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


async def bars(page: Page) -> list[dict[str, float]]:
    return await page.locator("#details svg.chart rect.col").evaluate_all(
        """rects => rects.map(r => ({
            from: Number(r.dataset.from), to: Number(r.dataset.to), rate: Number(r.dataset.rate),
            measured: r.classList.contains("measured")}))"""
    )


async def failure_marks(page: Page) -> int:
    return await page.locator("#details svg.chart rect.fail").evaluate_all(
        "rects => rects.reduce((sum, r) => sum + Number(r.dataset.failed), 0)"
    )


def series_of(node: ScrapydNode, job: str) -> list[dict[str, Any]]:
    answer = node.get("jobstatus.json", {"job": job, "series": "1"})
    assert answer.code == 200, answer.body
    return answer.json()["job"]["series"]


async def check_chart(page: Page, series: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The chart is the series': from its first point to its last, every bar
    measured, and the pages of the bars add up to the pages of the run."""
    chart = page.locator("#details svg.chart")
    await expect(chart).to_be_visible()
    span = ms(series[-1]["t"]) - ms(series[0]["t"])
    await expect(chart.locator("text.label").last).to_have_text(elapsed(span))
    drawn = await bars(page)
    # To the last point, or to the job's end when the page read it a moment
    # after (the end and the last write are milliseconds apart).
    assert drawn[0]["from"] == 0 and drawn[-1]["to"] == pytest.approx(span, abs=100)
    assert all(b["to"] == pytest.approx(c["from"]) for b, c in zip(drawn, drawn[1:], strict=False))
    assert all(b["measured"] for b in drawn), "a bar is an estimate"
    pages = sum(b["rate"] * (b["to"] - b["from"]) / 60000 for b in drawn)
    assert pages == pytest.approx(series[-1]["pages"] - series[0]["pages"], rel=1e-6)
    assert await failure_marks(page) == series[-1]["failed"] - series[0]["failed"]
    await expect(page.locator("#details figcaption")).to_contain_text(
        "from the counters the node recorded over the job's run"
    )
    return drawn


# -- the chart ------------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_the_chart_shows_the_whole_run_after_a_reload(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    """A real crawl of about 12 s, its rate changing halfway: watched while
    it runs, then the page reloaded once it ended."""
    job = unique("charted")
    urls = [f"{site}/slow?delay=0.25&n={i}" for i in range(16)]
    urls += [f"{site}/slow?delay=1&n={i}" for i in range(16, 23)] + [f"{site}/status/404"]
    answer = node.schedule(
        job=job,
        urls=",".join(urls),
        settings={"CONCURRENT_REQUESTS": 1, "JOBSTATUS_INTERVAL": "0.5"},
    ).json()
    assert answer["status"] == "ok", answer
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + f"dashboard#job={job}")
        title = page.locator("#details-title .badge")
        await expect(title).to_have_text("running", timeout=20_000)
        await expect(title).to_have_text("completed", timeout=60_000)
        series = await asyncio.to_thread(series_of, node, job)
        assert series[-1]["pages"] == 24 and series[-1]["failed"] == 1
        # The open page read the series once more when the job ended.
        await expect(page.locator("#details .counters dd").first).to_be_visible()
        await check_chart(page, series)

        # A new page knows nothing of the run but its series: the same chart.
        await page.reload()
        await expect(page.locator("#live")).to_contain_text("Live")
        await expect(title).to_have_text("completed")
        drawn = await check_chart(page, series)
        # Fast pages, then slow ones: the first steps crawled more than the last.
        assert drawn[0]["rate"] > 2 * drawn[-2]["rate"] > 0
        points = await page.locator("#details svg.chart polyline.docs").get_attribute("points")
        assert points is not None and len(points.split()) == len(drawn)
        await screenshot(page, "dashboard-series.png")


@deferred_f_from_coro_f
async def test_the_chart_of_a_long_run_is_its_recorded_rates(
    browser: Browser, node: ScrapydNode
) -> None:
    """A run of 20 minutes, written a second at a time through the store
    API (its series thinned to at most 500 points): 30 pages a minute for 8
    minutes, nothing for 4, then 90 a minute, with 3 failures at 14:45."""
    job = unique("long-run")
    start = time.time() - 1300
    state = JobState(
        job_id=job, project=PROJECT, spider="batch", status=JobStatus.RUNNING, pid=1,
        interval=1.0, created_at=start, started_at=start, updated_at=start,
    )  # fmt: skip

    def rate(second: int) -> float:
        return 0.5 if second <= 480 else 0 if second <= 720 else 1.5

    def write() -> None:
        store = open_store(node.db)
        try:
            assert store.start_job(state).started
            pages = 0.0
            for second in range(1, 1201):
                pages += rate(second)
                state.total_pages_crawled = state.total_documents_found = int(pages)
                state.responses_failed = 3 if second >= 885 else 0
                state.updated_at = start + second
                if second == 1200:
                    state.status, state.completed_at = JobStatus.COMPLETED, start + second
                assert store.save(state).written
        finally:
            store.close()

    await asyncio.to_thread(write)
    series = await asyncio.to_thread(series_of, node, job)
    assert len(series) <= 500 and series[-1]["pages"] == 960
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + f"dashboard#job={job}")
        await expect(page.locator("#details-title .badge")).to_have_text("completed")
        drawn = await check_chart(page, series)
        await expect(page.locator("#details svg.chart text.label").last).to_have_text("20:00")
        # 30-second steps: each one's rate is the run's own at that time (the
        # steps beside a change of rate share it: a point of the thinned
        # series need not fall on it).
        assert len(drawn) == 40
        changes = {8 * 60000, 12 * 60000}
        for bar in drawn:
            if changes & {bar["from"], bar["to"]}:
                continue
            minute = bar["from"] / 60000
            expected = 30 if minute < 8 else 0 if minute < 12 else 90
            assert bar["rate"] == pytest.approx(expected, abs=0.5), bar
        fail = page.locator("#details svg.chart rect.fail")
        await expect(fail).to_have_count(1)
        await expect(fail.locator("title")).to_have_text("14:30–15:00: 3 failed responses")
        caption = page.locator("#details figcaption")
        await expect(caption).to_contain_text("Line: documents per minute.")
        await expect(caption).to_contain_text("Red marks: steps with failed responses (3 in all).")
        await expect(page.locator("#details svg.chart")).to_have_attribute(
            "aria-label", "Pages crawled per minute over the job's life"
        )
        await screenshot(page, "dashboard-series-long.png")


# -- live updates -----------------------------------------------------------------------


async def first_seen(page: Page, job: str, status: str) -> float:
    await expect(row(page, job).locator(".status .badge")).to_have_text(status, timeout=60_000)
    seen = await page.evaluate("window.__seen")
    return seen[f"{job} {status}"]


async def check_event_driven(page: Page, job: str, status: str, seen: float) -> tuple[float, float]:
    """The answer of events.json that carried the job's end, and the
    jobs.json request it set off at once, which brought the end to the
    page: the time between the two, and how much later the 2 s poll would
    have asked (2 s after the answer of the poll before)."""
    log = await page.evaluate("window.__log")
    carried = [
        entry
        for entry in log
        if entry["url"].startswith("events.json")
        and any(
            e["job_id"] == job and e["status"] == status
            for e in (entry.get("body") or {}).get("events", [])
        )
    ]
    assert carried, f"no answer of events.json carried the end of {job}"
    answered = carried[0]["answered"]
    after = [e["start"] for e in log if e["url"].startswith("jobs.json") and e["start"] >= answered]
    assert after, "no refresh after the event"
    # Set off by the event, sooner than the poll would ask (which may still
    # win the race when it happened to be due at that moment).
    assert after[0] - answered <= 400, after[0] - answered
    before = [
        e["answered"]
        for e in log
        if e["url"].startswith("jobs.json") and e.get("answered") and e["answered"] <= answered
    ]
    heartbeat = before[-1] + POLL_MS
    assert after[0] < heartbeat
    return after[0] - answered, heartbeat - after[0]


@deferred_f_from_coro_f
async def test_a_job_s_end_shows_within_a_second_through_events_json(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    async with browsing(browser) as page:
        await page.add_init_script(script=f"({LOG_FETCHES})()")
        await open_dashboard(page, node.url + "dashboard")
        live = page.locator("#live")
        await expect(live).to_have_attribute("data-events", "on")
        await expect(live).to_have_attribute("title", re.compile("on each job event"))
        await page.evaluate(WATCH_ROWS)

        # A job that completes.
        done = unique("ends")
        node.schedule(job=done, urls=slow_urls(site, 3, 0.5), settings={"CONCURRENT_REQUESTS": 1})
        seen = await first_seen(page, done, "completed")
        document = await asyncio.to_thread(node.status, done)
        completed_after = seen - ms(document["completed_at"])
        assert 0 < completed_after < 1000, completed_after
        set_off, sooner = await check_event_driven(page, done, "completed", seen)

        # A job cancelled (forced: its requests do not end by themselves).
        stopped = unique("stopped")
        node.schedule(job=stopped, urls=slow_urls(site, 2, 60), settings={"CONCURRENT_REQUESTS": 2})
        await expect(row(page, stopped).locator(".status .badge")).to_have_text(
            "running", timeout=30_000
        )
        await asyncio.to_thread(
            wait_for, lambda: node.status(stopped)["requests_in_flight"] == 2, 30
        )
        cancelled_at = time.time() * 1000
        assert node.post("jobcancel.json", {"job": stopped, "force": "1"}).code == 202
        seen = await first_seen(page, stopped, "cancelled")
        document = await asyncio.to_thread(node.status, stopped)
        cancelled_after = seen - ms(document["completed_at"])
        assert 0 < cancelled_after < 1000, cancelled_after
        _, sooner_cancelled = await check_event_driven(page, stopped, "cancelled", seen)
        await screenshot(page, "dashboard-live-events.png", down_to=page.locator("#pager"))
        print(
            f"\nthrough events.json: completed shown {completed_after:.0f} ms after completed_at"
            f" (jobs.json asked {set_off:.0f} ms after the event, {sooner:.0f} ms before the"
            f" 2 s poll would have); cancelled shown {cancelled_after:.0f} ms after completed_at"
            f" ({sooner_cancelled:.0f} ms before the poll), {seen - cancelled_at:.0f} ms after"
            " the cancel request"
        )


@deferred_f_from_coro_f
async def test_without_events_json_the_page_polls_as_before(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    async with browsing(browser) as page:
        await page.route(EVENTS_JSON, not_found)
        await page.add_init_script(script=f"({LOG_FETCHES})()")
        async with page.expect_response(EVENTS_JSON) as answer:
            await open_dashboard(page, node.url + "dashboard")
        assert (await answer.value).status == 404
        live = page.locator("#live")
        await expect(live).to_have_attribute("data-events", "off")
        await expect(live).to_have_attribute("title", "Updated every 2 s")
        await page.evaluate(WATCH_ROWS)
        job = unique("polled")
        node.schedule(job=job, urls=slow_urls(site, 3, 0.5), settings={"CONCURRENT_REQUESTS": 1})
        seen = await first_seen(page, job, "completed")
        document = await asyncio.to_thread(node.status, job)
        after = seen - ms(document["completed_at"])
        assert 0 < after < POLL_MS + 1000, after
        await expect(page.locator("#alert")).to_be_hidden()
        await expect(page.locator("#notice")).to_be_hidden()
        await expect(live).to_contain_text("Live · updated")
        log = await page.evaluate("window.__log")
        assert [e["url"] for e in log if e["url"].startswith("events.json")] == ["events.json"]
        print(f"\nby polling alone: completed shown {after:.0f} ms after completed_at")


@deferred_f_from_coro_f
async def test_a_node_without_events_json_is_asked_again_a_minute_later(
    browser: Browser, node: ScrapydNode
) -> None:
    async with browsing(browser) as page:
        await page.clock.install()
        await page.route(EVENTS_JSON, not_found)
        async with page.expect_response(EVENTS_JSON):
            await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#live")).to_have_attribute("data-events", "off")
        await page.evaluate(COUNT_EVENT_FETCHES)
        await page.clock.fast_forward(30_000)
        assert await page.evaluate("window.__eventFetches") == 0
        await page.unroute(EVENTS_JSON)
        # Its latest id, then a long poll from there.
        async with page.expect_request(lambda request: "since=" in request.url):
            await page.clock.fast_forward(30_000)
        await expect(page.locator("#live")).to_have_attribute("data-events", "on")
        assert await page.evaluate("window.__eventFetches") == 2


@deferred_f_from_coro_f
async def test_events_json_is_not_asked_while_the_tab_is_hidden(
    browser: Browser, node: ScrapydNode
) -> None:
    async with browsing(browser) as page:
        await page.clock.install()
        await page.add_init_script(script=f"({LOG_FETCHES})()")
        await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#live")).to_have_attribute("data-events", "on")
        await page.wait_for_function(
            "() => window.__log.some(e => e.url.includes('since=') && !e.answered)"
        )
        # The long poll under way is given up when the tab hides.
        async with page.expect_event(
            "requestfailed", lambda request: bool(EVENTS_JSON.search(request.url))
        ):
            await page.evaluate(SET_HIDDEN, True)
        await expect(page.locator("#live")).to_have_text("Paused while the tab is hidden")
        await page.evaluate(COUNT_EVENT_FETCHES)
        await page.clock.fast_forward(120_000)
        assert await page.evaluate("window.__eventFetches") == 0
        # Shown again: the stream starts again at once, from the latest event.
        async with page.expect_request(
            lambda request: request.url.endswith("/events.json"), timeout=2_000
        ):
            await page.evaluate(SET_HIDDEN, False)
        await expect(page.locator("#live")).to_contain_text("Live")


# -- the webhook log ----------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_the_webhook_log_shows_each_delivery_as_text(
    browser: Browser, node: ScrapydNode
) -> None:
    answer = node.get("webhooks.json", {"job": HOOKED})
    assert answer.code == 200, answer.body
    deliveries = answer.json()["deliveries"]
    assert len(deliveries) == 6
    async with browsing(browser) as page:
        blocked: list[str] = []
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        await open_dashboard(page, node.url + f"dashboard#job={HOOKED}")
        block = page.locator("#details .block", has=page.locator("h3", has_text="Webhooks"))
        await expect(block.locator("h3")).to_have_text(
            "Webhooks (1 pending, 2 delivered, 3 failed)"
        )
        items = block.locator(".deliveries > li")
        await expect(items).to_have_count(6)
        await expect(items.locator(".event-type")).to_have_text([d["type"] for d in deliveries])
        await expect(items.locator(".delivery-head .badge")).to_have_text(
            [d["status"] for d in deliveries]
        )
        # URLs as the node shows them (a password redacted), as text: never a link.
        await expect(items.locator(".hook-url")).to_have_text([d["url"] for d in deliveries])
        assert "https://hook-user:***@hooks.example/in" in [d["url"] for d in deliveries]
        await expect(items.locator(".hook-url").last).to_have_text(HOSTILE_HOOK)
        await expect(block.locator("a")).to_have_count(0)
        assert "s3cret-hook" not in await page.locator("body").inner_text()

        first = items.nth(0)  # job.started to HOOK: refused, then delivered
        await expect(first.locator(".attempt")).to_have_count(2)
        await expect(first.locator(".attempt").first.locator(".attempt-error")).to_have_text(
            "Connection refused"
        )
        await expect(first.locator(".attempt").first.locator(".retry time")).to_have_attribute(
            "datetime", deliveries[0]["attempts"][0]["next_retry"]
        )
        await expect(first.locator(".attempt").last.locator(".http")).to_have_text("HTTP 200")
        pending = items.filter(has=page.locator(".badge", has_text="pending"))
        await expect(pending.locator(".http")).to_have_text("HTTP 503")
        await expect(pending.locator(".next-attempt time")).to_have_attribute(
            "datetime", next(d for d in deliveries if d["status"] == "pending")["next_attempt_at"]
        )
        # An error planted by a receiver stays text.
        await expect(block.locator(".attempt-error").filter(has_text="<script>")).to_have_text(
            [PAYLOAD, PAYLOAD]
        )
        assert await page.evaluate("window.__xss") is None
        await expect(page.locator("img")).to_have_count(0)
        await expect(page.locator("script")).to_have_count(1)  # the page's own
        assert blocked == []
        await block.scroll_into_view_if_needed()
        await screenshot(page, "dashboard-webhooks.png")


@deferred_f_from_coro_f
async def test_no_webhook_log_without_deliveries_or_without_the_service(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    job = unique("no-hooks")
    node.schedule(job=job, urls=f"{site}/sample/")
    await asyncio.to_thread(node.wait_status, job, "completed")
    async with browsing(browser) as page:
        # A job without webhooks: no section.
        async with page.expect_response(WEBHOOKS_JSON) as answer:
            await open_dashboard(page, node.url + f"dashboard#job={job}")
        assert (await (await answer.value).json())["deliveries"] == []
        await expect(page.locator("#details .timeline")).to_be_visible()
        await expect(page.locator("#details .block h3", has_text="Webhooks")).to_have_count(0)
    async with browsing(browser) as page:
        # A node without the service: no section, no error.
        await page.route(WEBHOOKS_JSON, not_found)
        async with page.expect_response(WEBHOOKS_JSON) as answer:
            await open_dashboard(page, node.url + f"dashboard#job={HOOKED}")
        assert (await answer.value).status == 404
        await expect(page.locator("#details .counters")).to_be_visible()
        await expect(page.locator("#details .block h3", has_text="Webhooks")).to_have_count(0)
        await expect(page.locator("#alert")).to_be_hidden()
        await expect(page.locator("#notice")).to_be_hidden()
