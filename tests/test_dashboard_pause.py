"""In a real browser: pausing a running job from the jobs dashboard, seeing
it paused, resuming it and seeing it complete; a resume the node refuses,
its message shown; and a job retried after a failed attempt, with its
attempts in its details.

One real ``scrapyd`` with the shipped config and ``[jobstatus] pausable =
on`` (every job it runs has a JOBDIR), behind basic auth, runs real crawls
of the local site, one at a time. The browser is driven as in
tests/test_dashboard.py, whose Chromium and helpers are shared. Screenshots
are saved in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect
from scrapy.utils.defer import deferred_f_from_coro_f

from tests import test_dashboard
from tests.helpers import read_lines, wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique
from tests.test_dashboard import (
    AUTH,
    JOBS_JSON,
    browsing,
    open_dashboard,
    row,
    screenshot,
)
from tests.test_dashboard_live import EVENTS_JSON, ms

# Chromium, as tests/test_dashboard.py launches it, for this module.
browser = test_dashboard.browser

# 61 pages and 122 documents, crawled in about 7 s two at a time.
DOCUMENTS = "/pages/0?links=3&max=60&docs=2&delay=0.2"
PAGES, FOUND = 61, 122
# Records each status a job's row shows, as the row changes.
WATCH_STATUSES = """job => {
    window.__statuses = [];
    const body = document.getElementById("jobs-body");
    const look = () => {
        const tr = body.querySelector(`tr[data-job="${job}"]`);
        const list = window.__statuses;
        if (tr && list[list.length - 1] !== tr.dataset.status) list.push(tr.dataset.status);
    };
    look();
    new MutationObserver(look).observe(body, {childList: true, subtree: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-pause"),
        options={"max_proc": "1", "poll_interval": "0.2", "items_dir": "items"},
        jobstatus={"pausable": "on"},
        auth=AUTH,
    )


def counter(page: Page, name: str) -> Any:
    return (
        page.locator("#details .counters div")
        .filter(has=page.locator("dt", has_text=re.compile(f"^{name}$")))
        .locator("dd")
    )


async def statuses_shown(page: Page) -> list[str]:
    """The statuses the watched row showed (see WATCH_STATUSES), from its
    first run on: a moment of pending before it, or of finalizing before
    it completed, left out."""
    shown: list[str] = await page.evaluate("window.__statuses")
    shown = [status for status in shown if status != "finalizing"]
    return shown[1:] if shown[:1] == ["pending"] else shown


@deferred_f_from_coro_f
async def test_pausing_and_resuming_a_running_job_from_the_page(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    job = unique("documents")
    answer = node.schedule(
        "documents", job=job, url=site + DOCUMENTS, settings={"CONCURRENT_REQUESTS": 2}
    ).json()
    assert answer["status"] == "ok", answer
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.evaluate(WATCH_STATUSES, job)
        shown = row(page, job)
        badge = shown.locator(".status .badge")
        await expect(badge).to_have_text("running", timeout=30_000)
        # Every job of this node has a JOBDIR: a running one can be paused.
        await expect(shown.locator("button.pause")).to_be_visible()
        await asyncio.to_thread(
            wait_for,
            lambda: node.status(job)["total_pages_crawled"] >= 3,
            30,
            0.05,
            "pages crawled",
        )

        await shown.locator("button.pause").click()
        await expect(page.locator("#notice")).to_contain_text(f"Job {job}: pausing.")
        await expect(badge).to_have_text("paused", timeout=30_000)
        await expect(badge).to_have_class(re.compile(r"\bbadge-paused\b"))
        await expect(shown.locator("button.pause")).to_have_count(0)
        await expect(shown.locator("button.resume")).to_be_visible()
        await expect(shown.locator("button.cancel")).to_be_visible()
        paused = await asyncio.to_thread(node.status, job)
        assert paused["status"] == "paused"
        assert 3 <= paused["total_pages_crawled"] < PAGES
        await expect(shown.locator(".pages")).to_have_text(str(paused["total_pages_crawled"]))

        await shown.locator("button.job-id").click()
        await expect(page.locator("#details-title .badge")).to_have_text("paused")
        await expect(counter(page, "Pausable")).to_have_text("yes")
        steps = page.locator("#details .timeline .step")
        await expect(steps.filter(has_text=re.compile("^paused$"))).to_have_count(1)
        # The feed of the run so far, with its items.
        feeds = page.locator("#details table.feeds tbody tr")
        await expect(feeds).to_have_count(1)
        (first_run,) = paused["feeds"]
        await expect(feeds.locator(".feed-items")).to_have_text(str(first_run["items"]))
        await expect(feeds.locator(".feed-uri")).to_have_text(first_run["uri"])
        # The answer to the pause showed it pausing at once, before it paused.
        assert await statuses_shown(page) == ["running", "pausing", "paused"]
        await screenshot(page, "dashboard-paused.png")

        await page.locator("#details button.resume").click()
        await expect(page.locator("#notice")).to_contain_text(f"Job {job}: pending.")
        await expect(badge).to_have_text("completed", timeout=60_000)
        await expect(shown.locator("button.resume")).to_have_count(0)
        # The answer to the resume showed it pending at once, then it ran again.
        assert await statuses_shown(page) == [
            "running", "pausing", "paused", "pending", "running", "completed",
        ]  # fmt: skip
        # Nothing found twice, nothing missed: the whole site's documents.
        await expect(shown.locator(".pages")).to_have_text(str(PAGES))
        await expect(shown.locator(".documents")).to_have_text(str(FOUND))
        await expect(steps.filter(has_text=re.compile("^resumed$"))).to_have_count(1)
        # A feed entry per run, their items adding up to the job's.
        await expect(feeds).to_have_count(2)
        items = [int(text) for text in await feeds.locator(".feed-items").all_text_contents()]
        assert items[0] == first_run["items"] and sum(items) == FOUND
    items_file = node.workdir / "items" / PROJECT / "documents" / f"{job}.jl"
    urls = [item["url"] for item in read_lines(items_file)]
    assert len(urls) == len(set(urls)) == FOUND


@deferred_f_from_coro_f
async def test_a_refused_resume_shows_the_node_s_message(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    job = unique("cancelled-meanwhile")
    node.schedule(job=job, urls=slow_urls(site, 2, 1), settings={"CONCURRENT_REQUESTS": 1})
    await asyncio.to_thread(node.wait_status, job, "running", timeout=30)
    assert node.post("jobpause.json", {"job": job}).code == 202
    await asyncio.to_thread(node.wait_status, job, "paused", timeout=30)

    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        shown = row(page, job)
        resume = shown.locator("button.resume")
        await expect(resume).to_be_visible()
        # From now on the page hears nothing from the node but the answer to
        # its resume: the table keeps showing the job paused.
        await page.route(EVENTS_JSON, refuse)
        async with page.expect_event(
            "requestfailed", lambda request: bool(JOBS_JSON.search(request.url)), timeout=10_000
        ):
            await page.route(JOBS_JSON, refuse)
        # Cancelled meanwhile, elsewhere.
        assert node.post("jobcancel.json", {"job": job}).json()["prevstate"] == "paused"
        await expect(shown.locator(".status .badge")).to_have_text("paused")
        await resume.click()
        notice = page.locator("#notice")
        await expect(notice).to_have_attribute("data-kind", "error")
        await expect(page.locator("#notice-text")).to_have_text(
            f"job '{job}' is cancelled: only a paused job can be resumed"
        )
        # The refusal carries the job as it is.
        await expect(shown.locator(".status .badge")).to_have_text("cancelled")
        await expect(shown.locator("button")).to_have_count(1)  # only the job id's
    assert node.status(job)["status"] == "cancelled"


@deferred_f_from_coro_f
async def test_a_retried_job_shows_its_attempts(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    """A job whose every response fails (above JOBSTATUS_FAILURE_RATIO),
    retried once: two attempts, both failed. The retry waits 2 to 4 s, long
    enough for the page to show when it is due."""
    job = unique("retried")
    urls = ",".join(f"{site}/status/500?n={i}" for i in range(4))
    answer = node.schedule(
        job=job, urls=urls, retries="1", settings={"JOBSTATUS_RETRY_DELAY": "4"}
    ).json()
    assert answer["status"] == "ok", answer
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + f"dashboard#job={job}")
        shown = row(page, job)
        await expect(shown.locator(".attempt-of")).to_have_text(re.compile("^attempt [12] of 2$"))
        # Between the attempts: queued again, the retry's time shown (read at once, in one go).
        waiting = await page.wait_for_function(
            """job => {
                const tr = document.querySelector(`tr[data-job="${job}"]`);
                const time = tr && tr.querySelector(".retry-at time");
                return time ? {
                    status: tr.dataset.status,
                    attempt: tr.querySelector(".attempt-of").textContent,
                    retryAt: time.getAttribute("datetime"),
                    text: tr.querySelector(".retry-at").textContent,
                } : null;
            }""",
            arg=job,
            timeout=30_000,
        )
        between = await waiting.json_value()
        assert between["status"] == "pending"
        assert between["attempt"] == "attempt 2 of 2"
        assert between["text"].startswith("retry at ")

        await expect(shown.locator(".status .badge")).to_have_text("failed", timeout=60_000)
        await expect(shown.locator(".attempt-of")).to_have_text("attempt 2 of 2")
        await expect(shown.locator(".retry-at")).to_have_count(0)
        document = await asyncio.to_thread(node.status, job)
        assert (document["attempt"], document["retries"]) == (2, 1)
        first, second = document["attempts"]
        # The retry did not start before it was due.
        assert ms(first["ended_at"]) < ms(between["retryAt"]) <= ms(second["started_at"])

        await expect(counter(page, "Attempt")).to_have_text("2 of 2")
        await expect(page.locator("#details .block h3", has_text="Attempts")).to_have_text(
            "Attempts (2)"
        )
        attempts = page.locator("#details .job-attempt")
        await expect(attempts).to_have_count(2)
        await expect(attempts.locator(".attempt-number")).to_have_text(["Attempt 1", "Attempt 2"])
        await expect(attempts.locator(".badge")).to_have_text(["failed", "failed"])
        await expect(attempts.locator(".attempt-reason")).to_have_text(["error", "error"])
        await expect(attempts.locator(".attempt-message")).to_have_text(
            [first["error_message"], second["error_message"]]
        )
        assert "above JOBSTATUS_FAILURE_RATIO" in first["error_message"]
        await expect(attempts.locator(".attempt-node")).to_have_text(
            [f"on {first['node']}", f"on {second['node']}"]
        )
        for index, attempt in enumerate([first, second]):
            shown_attempt = attempts.nth(index)
            await expect(shown_attempt.locator(".attempt-started time")).to_have_attribute(
                "datetime", attempt["started_at"]
            )
            await expect(shown_attempt.locator(".attempt-ended time")).to_have_attribute(
                "datetime", attempt["ended_at"]
            )
        steps = page.locator("#details .timeline .step")
        for step in ("retry", "retry started"):
            await expect(steps.filter(has_text=re.compile(f"^{step}$"))).to_have_count(1)
        await page.locator("#details .job-attempts").scroll_into_view_if_needed()
        await screenshot(page, "dashboard-attempts.png")
