"""In a real browser: the jobs dashboard (``GET dashboard``) of a real
``scrapyd`` with pending, running, cancelled, failed and completed jobs,
behind Scrapyd's basic auth and a proxy's path prefix.

The node, the browser and the jobs that have ended are shared by the module;
no test changes them. The running and pending jobs are checked before each
test that uses them and started again if a test before changed them, so that
every test passes alone and in any order.

Playwright drives Debian's Chromium, headless. pytest-twisted runs an asyncio
loop in the test thread, which Playwright's sync API refuses to share, so the
tests use its async API on that loop (Scrapy's ``deferred_f_from_coro_f``),
and the browser fixture waits on it with ``pytest_twisted.blockon``.

Screenshots of the page are saved in tests/artifacts/; with
``UPDATE_SCREENSHOTS=1`` those the README shows are also copied to docs/.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import shutil
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from playwright.async_api import Browser, Dialog, Locator, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout
from scrapy.utils.defer import deferred_f_from_coro_f, deferred_from_coro

from tests.helpers import ROOT, run_crawl, wait_for
from tests.scrapyd_node import ScrapydNode, running_node, sample_urls, slow_urls, unique

T = TypeVar("T")

AUTH = ("watcher", "s3cret-pass")
PAYLOAD = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
JOBS_JSON = re.compile(r"/jobs\.json")

expect.set_options(timeout=10_000)


def wait(awaitable: Awaitable[T]) -> T:
    """The result of a coroutine run on the reactor's loop, from a fixture."""
    return pytest_twisted.blockon(deferred_from_coro(awaitable))


# -- the node, its jobs and the browser ------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    # Two slots: two crawls run while a third one waits. Every job's log and
    # items are kept (Scrapyd keeps 5 a spider): however many crawls the
    # tests before started, the links of a job lead to its files.
    workdir = tmp_path_factory.mktemp("scrapyd-dashboard")
    (workdir / "urls").mkdir()
    yield from running_node(
        workdir,
        options={
            "max_proc": "2",
            "poll_interval": "0.2",
            "items_dir": "items",
            "jobs_to_keep": "100",
        },
        auth=AUTH,
        # Where a job's urls_file is read from on the node.
        settings={"URLS_DIR": str(workdir / "urls")},
    )


# The dashboard's page size: the tests' jobs fit on its first page.
PAGE_SIZE = 20
LIVE = {"running": "running", "slow": "running", "pending": "pending"}


@pytest.fixture(scope="module")
def ended(node: ScrapydNode, site: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One job in each end status; the names are the job ids."""
    names = {
        "completed": "catalogue",
        "failed": "bad-urls",
        "title": "title-check",
        "cancelled": "stopped-early",
    }
    node.schedule(job=names["completed"], urls=sample_urls(site) + f",{site}/status/404")
    node.wait_status(names["completed"], "completed")
    # A spider argument that is no URL: the job fails, quoting it.
    node.schedule(job=names["failed"], urls=PAYLOAD)
    node.wait_status(names["failed"], "failed")
    # A crawled page whose title is the payload, quoted by a spider error: a
    # `scrapy crawl` writing to the node's store, as a crawl outside Scrapyd can.
    title_url = f"{site}/title?t={urllib.parse.quote(PAYLOAD)}"
    code = run_crawl(
        "titlecheck",
        node.db,
        tmp_path_factory.mktemp("title-check") / "crawl.log",
        args={"url": title_url, "title": "Welcome", "_job": names["title"]},
    )
    assert code == 0
    node.schedule(
        job=names["cancelled"], urls=slow_urls(site, 4, 5), settings={"CONCURRENT_REQUESTS": 2}
    )
    node.wait_status(names["cancelled"], "running")
    wait_for(
        lambda: node.status(names["cancelled"])["requests_in_flight"], what="requests in flight"
    )
    assert node.post("jobcancel.json", {"job": names["cancelled"], "force": "1"}).code == 202
    node.wait_status(names["cancelled"], "cancelled")
    node.wait_idle()
    return names


# Settings for requests that never end while the module runs.
ENDLESS = {"DOWNLOAD_TIMEOUT": 1800, "JOBSTATUS_TIMEOUT": 1800}


def start_live_jobs(node: ScrapydNode, site: str, workdir: Path, round_: int) -> dict[str, str]:
    """Both slots busy, and a job waiting for one: a crawl making progress (a
    page a second for ten minutes), one whose requests do not end, and one
    queued behind them that would not end either."""
    suffix = "" if round_ == 1 else f"-{round_}"
    names = {
        "running": f"long-crawl{suffix}",
        "slow": f"slow-pages{suffix}",
        "pending": f"queued{suffix}",
    }
    # More URLs than a request parameter holds: a file in the node's URLS_DIR.
    urls_file = node.workdir / "urls" / f"live{suffix}.txt"
    urls_file.write_text("\n".join(slow_urls(site, 600, 1).split(",")) + "\n")
    node.schedule(
        job=names["running"],
        urls_file=urls_file.name,
        settings={"CONCURRENT_REQUESTS": 1, **ENDLESS},
    )
    node.schedule(
        job=names["slow"],
        urls=slow_urls(site, 4, 1500),
        settings={"CONCURRENT_REQUESTS": 2, **ENDLESS},
    )
    node.wait_status(names["running"], "running")
    node.wait_status(names["slow"], "running")
    node.schedule(job=names["pending"], urls=slow_urls(site, 2, 1500), settings=ENDLESS)
    assert node.status(names["pending"])["status"] == "pending"
    wait_for(
        lambda: node.status(names["running"])["total_pages_crawled"] >= 2, what="pages crawled"
    )
    return names


def stop_jobs(node: ScrapydNode, jobs: list[str]) -> None:
    """End the jobs that are still active (a pending one first, so that it
    never gets a slot), and wait for the node to be idle."""
    for job in sorted(jobs, key=lambda job: node.status(job)["status"] != "pending"):
        if node.status(job)["is_active"]:
            node.post("jobcancel.json", {"job": job, "force": "1"})
    for job in jobs:
        wait_for(lambda job=job: not node.status(job)["is_active"], what=f"job {job} to end")
    node.wait_idle()


@pytest.fixture(scope="module")
def live_rounds(node: ScrapydNode) -> Iterator[list[dict[str, str]]]:
    """The sets of live jobs started so far; the last one may still be live."""
    rounds: list[dict[str, str]] = []
    yield rounds
    if rounds:
        stop_jobs(node, list(rounds[-1].values()))


@pytest.fixture
def live(
    node: ScrapydNode,
    site: str,
    ended: dict[str, str],
    live_rounds: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Jobs running and pending (see ``start_live_jobs``): those a test before
    left if they still are, else new ones."""
    if live_rounds:
        last = live_rounds[-1]
        if {key: node.status(job)["status"] for key, job in last.items()} == LIVE:
            return last
        stop_jobs(node, list(last.values()))
    workdir = tmp_path_factory.mktemp("live")
    live_rounds.append(start_live_jobs(node, site, workdir, len(live_rounds) + 1))
    return live_rounds[-1]


@pytest.fixture
def jobs(ended: dict[str, str], live: dict[str, str]) -> dict[str, str]:
    """One job in each status; the names are the job ids."""
    return {**ended, **live}


def active_jobs(node: ScrapydNode) -> list[str]:
    return [
        job["job_id"]
        for status in ("pending", "running", "cancelling", "finalizing")
        for job in node.get("jobs.json", {"status": status, "limit": 1000}).json()["jobs"]
    ]


@pytest.fixture
def idle_node(
    node: ScrapydNode, ended: dict[str, str], live_rounds: list[dict[str, str]]
) -> Iterator[ScrapydNode]:
    """The node with both slots free: the live jobs, if any, are stopped, and
    whatever the test started is stopped after it."""
    stop_jobs(node, active_jobs(node))
    yield node
    stop_jobs(node, active_jobs(node))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), "the browser tests need Chromium: apt-get install chromium"
    playwright = wait(async_playwright().start())
    try:
        chromium = wait(
            playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        )
        yield chromium
        wait(chromium.close())
    finally:
        wait(playwright.stop())


@contextlib.asynccontextmanager
async def browsing(
    browser: Browser, *, auth: tuple[str, str] | None = AUTH, width: int = 1440, height: int = 900
) -> AsyncIterator[Page]:
    """A page in a fresh browser context; no script error may happen in it."""
    credentials = {"username": auth[0], "password": auth[1]} if auth else None
    context = await browser.new_context(
        http_credentials=credentials, viewport={"width": width, "height": height}
    )
    try:
        page = await context.new_page()
        errors: list[Any] = []
        page.on("pageerror", lambda error: errors.append(error))
        yield page
        assert errors == []
    finally:
        await context.close()


async def open_dashboard(page: Page, url: str) -> None:
    response = await page.goto(url)
    assert response is not None and response.status == 200
    await expect(page.locator("#live")).to_contain_text("Live")


def row(page: Page, job: str) -> Locator:
    return page.locator(f'tr[data-job="{job}"]')


async def screenshot(
    page: Page, name: str, *, down_to: Locator | None = None, readme: bool = False
) -> None:
    """Save a screenshot in tests/artifacts/ (and docs/ if the README shows it
    and UPDATE_SCREENSHOTS=1), of the viewport or of the page's top down to an
    element."""
    ARTIFACTS.mkdir(exist_ok=True)
    clip = None
    if down_to is not None:
        box = await down_to.bounding_box()
        assert box is not None and page.viewport_size is not None
        clip = {
            "x": 0,
            "y": 0,
            "width": page.viewport_size["width"],
            "height": box["y"] + box["height"] + 16,
        }
    await page.screenshot(path=ARTIFACTS / name, clip=clip)
    if readme and os.environ.get("UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / name, DOCS / name)


async def follow(page: Page, link: Locator) -> tuple[int, str]:
    """The status and address a link leads to, opened in another tab of the
    same browser, with the credentials the browser holds."""
    href = await link.get_attribute("href")
    assert href is not None
    tab = await page.context.new_page()
    try:
        response = await tab.goto(urllib.parse.urljoin(page.url, href))
        assert response is not None
        return response.status, response.url
    finally:
        await tab.close()


async def accept_next_dialog(page: Page) -> list[str]:
    """Accept the next confirmation; its message is in the list returned."""
    messages: list[str] = []

    async def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    return messages


# -- the table -------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_table_shows_each_job_with_its_badge_and_counters(
    browser: Browser, node: ScrapydNode, jobs: dict[str, str]
) -> None:
    total = node.get("jobs.json").json()["total"]
    assert total <= PAGE_SIZE  # every job is on the first page
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        for key, status in [
            ("completed", "completed"),
            ("failed", "failed"),
            ("title", "completed"),
            ("cancelled", "cancelled"),
            ("running", "running"),
            ("slow", "running"),
            ("pending", "pending"),
        ]:
            badge = row(page, jobs[key]).locator(".status .badge")
            await expect(badge).to_have_text(status)
            await expect(badge).to_have_class(re.compile(rf"\bbadge-{status}\b"))

        completed = row(page, jobs["completed"])
        await expect(completed.locator(".pages")).to_have_text("9")
        await expect(completed.locator(".documents")).to_have_text("9")
        await expect(completed.locator(".failed")).to_have_text("1")
        await expect(completed.locator(".pct")).to_have_text("100%")
        await expect(completed.locator(".reason")).to_have_text("done")
        await expect(completed.locator(".spider")).to_have_text("batch")
        await expect(completed.locator("button.cancel")).to_have_count(0)

        failed = row(page, jobs["failed"])
        await expect(failed.locator(".reason")).to_contain_text("error")
        await expect(failed.locator(".bar")).to_have_class(re.compile(r"\bindeterminate\b"))
        await expect(row(page, jobs["cancelled"]).locator(".reason")).to_have_text("cancelled")

        running = row(page, jobs["running"])
        await expect(running.locator(".pct")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
        await expect(running.locator(".eta time")).to_be_visible()
        await expect(running.locator("button.cancel")).to_be_visible()
        pending = row(page, jobs["pending"])
        await expect(pending.locator("button.cancel")).to_be_visible()
        await expect(pending.locator(".started")).to_have_text("—")

        # Newest first.
        order = await page.locator("tr.job").evaluate_all("rows => rows.map(r => r.dataset.job)")
        assert (
            order.index(jobs["pending"])
            < order.index(jobs["running"])
            < order.index(jobs["completed"])
        )
        await expect(page.locator("#range")).to_have_text(f"1–{total} of {total}")

        await screenshot(page, "dashboard.png", down_to=page.locator("#pager"), readme=True)


@deferred_f_from_coro_f
async def test_links_lead_to_the_log_the_items_and_the_error_report(
    browser: Browser, node: ScrapydNode, jobs: dict[str, str], site: str
) -> None:
    job = jobs["completed"]
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        files = row(page, job).locator(".files")
        log, items, errors = (
            files.get_by_role("link", name="Log"),
            files.get_by_role("link", name="Items"),
            files.locator(".errors-csv"),
        )
        await expect(log).to_have_attribute("href", f"logs/crawler/batch/{job}.log")
        await expect(items).to_have_attribute("href", f"items/crawler/batch/{job}.jl")
        await expect(errors).to_have_attribute(
            "href", f"joberrors.json?job={job}&project=crawler&format=csv"
        )
        for link in (log, items):
            assert (await follow(page, link))[0] == 200
        async with page.expect_download() as download_info:
            await errors.click()
        download = await download_info.value
        assert download.suggested_filename == f"{job}-errors.csv"
        report = Path(await download.path()).read_text()
        assert report.splitlines()[0].startswith("error_id,stage,error_type")
        assert f"{site}/status/404" in report
        # A job that never ran has no files yet; one run outside Scrapyd has no Scrapyd log.
        await expect(row(page, jobs["pending"]).locator(".files")).to_have_text("—")
        await expect(row(page, jobs["title"]).locator(".files a")).to_have_text(["Errors"])


@deferred_f_from_coro_f
async def test_table_updates_itself_while_a_job_runs(
    browser: Browser, node: ScrapydNode, live: dict[str, str]
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.evaluate("window.__sameDocument = true")
        running = row(page, live["running"])
        pages = int(await running.locator(".pages").text_content())
        percent = await running.locator(".pct").text_content()
        await expect(running.locator(".pages")).not_to_have_text(str(pages))
        await expect(running.locator(".pct")).not_to_have_text(percent)
        assert int(await running.locator(".pages").text_content()) > pages
        assert await page.evaluate("window.__sameDocument") is True  # no reload


@deferred_f_from_coro_f
async def test_filters_by_status_and_spider(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    def ids(**params: str) -> list[str]:
        return [job["job_id"] for job in node.get("jobs.json", params).json()["jobs"]]

    total = node.get("jobs.json").json()["total"]
    assert total <= PAGE_SIZE
    completed, failed = ids(status="completed"), ids(status="failed")
    assert {ended["completed"], ended["title"]} <= set(completed)
    assert ended["failed"] in failed
    shown = "rows => rows.map(r => r.dataset.job)"
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.select_option("#filter-status", "completed")
        await expect(page.locator("tr.job")).to_have_count(len(completed))
        await expect(page.locator("tr.job .status .badge")).to_have_text(
            ["completed"] * len(completed)
        )
        assert await page.locator("tr.job").evaluate_all(shown) == completed
        await page.fill("#filter-spider", "titlecheck")
        await expect(page.locator("tr.job")).to_have_count(1)
        await expect(row(page, ended["title"])).to_be_visible()
        await page.click("button[type=reset]")
        await expect(page.locator("#range")).to_have_text(f"1–{total} of {total}")

        # The filters live in the address: a reload keeps them.
        await page.select_option("#filter-status", "failed")
        await expect(page.locator("tr.job")).to_have_count(len(failed))
        assert "status=failed" in page.url
        await page.reload()
        await expect(page.locator("#filter-status")).to_have_value("failed")
        await expect(page.locator("tr.job")).to_have_count(len(failed))
        await expect(row(page, ended["failed"])).to_be_visible()


@deferred_f_from_coro_f
async def test_pages_through_the_jobs_newest_first(
    browser: Browser, node: ScrapydNode, jobs: dict[str, str]
) -> None:
    listing = node.get("jobs.json", {"limit": 6}).json()
    total, newest = listing["total"], [job["job_id"] for job in listing["jobs"]]
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard#limit=3")
        await expect(page.locator("#range")).to_have_text(f"1–3 of {total}")
        await expect(page.locator("#newer")).to_be_disabled()
        await expect(page.locator("tr.job")).to_have_count(3)
        assert (
            await page.locator("tr.job").evaluate_all("rows => rows.map(r => r.dataset.job)")
            == newest[:3]
        )
        await page.click("#older")
        await expect(page.locator("#range")).to_have_text(f"4–6 of {total}")
        await expect(page.locator("#newer")).to_be_enabled()
        await expect(page.locator("tr.job").first).to_have_attribute("data-job", newest[3])
        assert (
            await page.locator("tr.job").evaluate_all("rows => rows.map(r => r.dataset.job)")
            == newest[3:6]
        )


# -- progress details ---------------------------------------------------------------


@deferred_f_from_coro_f
async def test_details_show_counters_history_and_errors(
    browser: Browser, node: ScrapydNode, ended: dict[str, str], site: str
) -> None:
    job = ended["completed"]
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await row(page, job).locator("button.job-id").click()
        details = page.locator("#details")
        await expect(details).to_be_visible()
        await expect(page.locator("#details-title")).to_contain_text(job)
        await expect(page.locator("#details-title .badge")).to_have_text("completed")
        counters = details.locator(".counters")
        for name, value in [
            ("Pages crawled", "9"),
            ("Documents found", "9"),
            ("Failed responses", "1"),
            ("Failure ratio", "11.1%"),
            ("Errors", "1"),
            ("Progress", "100%"),
            ("Completion reason", "done"),
            ("Close reason", "finished"),
        ]:
            await expect(
                counters.locator(
                    "div", has=page.locator("dt", has_text=re.compile(f"^{name}$"))
                ).locator("dd")
            ).to_have_text(value)
        steps = details.locator(".timeline .step")
        await expect(steps.first).to_have_text("opened")
        for step in ("first response", "closing", "feeds closed", "finished"):
            await expect(steps.filter(has_text=re.compile(f"^{step}$"))).to_have_count(1)
        await expect(details.locator(".timeline .duration").first).to_have_text(
            re.compile(r"^ \+\d")
        )
        error = details.locator(".errors li")
        await expect(error).to_have_count(1)
        await expect(error.locator(".chip")).to_have_text(["http_error", "HTTP 404"])
        await expect(error.locator(".url")).to_have_text(f"{site}/status/404")
        await expect(details.locator(".reports a")).to_have_count(2)
        # Too short a job for a rate: said so rather than charted.
        await expect(details.locator(".block", has_text="Pages per minute")).to_contain_text(
            "too short for a rate"
        )
        assert "job=catalogue" in page.url

        await page.keyboard.press("Escape")
        await expect(details).to_be_hidden()


@deferred_f_from_coro_f
async def test_details_chart_pages_per_minute_of_a_running_job(
    browser: Browser, node: ScrapydNode, live: dict[str, str]
) -> None:
    job = live["running"]
    async with browsing(browser) as page:
        # Opened from the address, as a shared link does.
        await open_dashboard(page, node.url + f"dashboard#job={job}")
        details = page.locator("#details")
        await expect(details.locator("#details-title .badge")).to_have_text("running")
        await expect(details.locator("button.cancel")).to_be_visible()
        chart = details.locator("svg.chart")
        await expect(chart).to_be_visible(timeout=20_000)
        # Counters read while the page is open make measured bars.
        await expect(chart.locator("rect.col.measured").first).to_be_attached(timeout=20_000)
        await expect(details.locator("figcaption")).to_contain_text("pages/min")
        pages = details.locator(
            ".counters div", has=page.locator("dt", has_text="Pages crawled")
        ).locator("dd")
        before = await pages.text_content()
        await expect(pages).not_to_have_text(before)
        await screenshot(page, "dashboard-details.png", readme=True)


# -- escaping -----------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_payloads_from_pages_errors_and_arguments_show_as_text(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    jobs = ended
    async with browsing(browser) as page:
        blocked: list[str] = []
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        response = await page.goto(node.url + "dashboard")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        await expect(page.locator("#live")).to_contain_text("Live")

        # In the table: the failed job's error message quotes the argument.
        await expect(row(page, jobs["failed"]).locator(".why")).to_contain_text(PAYLOAD)

        # The failed job's details: error message, error list and arguments.
        await row(page, jobs["failed"]).locator("button.job-id").click()
        details = page.locator("#details")
        await expect(details.locator(".errors .error-message")).to_contain_text(PAYLOAD)
        await expect(details.locator(".message")).to_contain_text(PAYLOAD)
        await expect(details.locator(".args td")).to_have_text(PAYLOAD)

        # The title of a crawled page, quoted by a spider error.
        await row(page, jobs["title"]).locator("button.job-id").click()
        await expect(page.locator("#details-title")).to_contain_text(jobs["title"])
        await expect(details.locator(".errors .error-message")).to_contain_text(
            f"unexpected title: {PAYLOAD}"
        )
        await expect(details.locator(".errors .chip").first).to_have_text("spider_error")

        assert await page.evaluate("window.__xss") is None
        await expect(page.locator("img")).to_have_count(0)
        await expect(page.locator("script")).to_have_count(1)  # the page's own
        assert blocked == []  # nothing even tried to run


# -- cancelling ------------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_cancelling_a_pending_job_from_the_page(
    browser: Browser, node: ScrapydNode, site: str, live: dict[str, str]
) -> None:
    # Queued behind the live jobs, which keep both slots.
    job = unique("queued-then-cancelled")
    assert node.schedule(job=job, urls=sample_urls(site)).json()["status"] == "ok"
    assert node.status(job)["status"] == "pending" and node.scrapyd_state(job) == "pending"
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        pending = row(page, job)
        await expect(pending.locator(".status .badge")).to_have_text("pending")
        messages = await accept_next_dialog(page)
        await pending.locator("button.cancel").click()
        await expect(pending.locator(".status .badge")).to_have_text("cancelled")
        assert messages and job in messages[0]
        await expect(pending.locator("button")).to_have_count(1)  # only the job id's
        await expect(page.locator("#notice")).to_contain_text(f"Job {job}: cancelled")
    assert node.status(job)["status"] == "cancelled"
    assert node.scrapyd_state(job) is None  # out of Scrapyd's queue, never run


@deferred_f_from_coro_f
async def test_declined_confirmation_cancels_nothing(
    browser: Browser, node: ScrapydNode, live: dict[str, str]
) -> None:
    job = live["running"]
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")

        async def dismiss(dialog: Dialog) -> None:
            await dialog.dismiss()

        page.once("dialog", dismiss)
        async with page.expect_event("dialog"):
            await row(page, job).locator("button.cancel").click()
        await expect(row(page, job).locator(".status .badge")).to_have_text("running")
    assert node.status(job)["status"] == "running"


@deferred_f_from_coro_f
async def test_cancelling_then_force_stopping_a_running_job(
    browser: Browser, node: ScrapydNode, live: dict[str, str]
) -> None:
    job = live["slow"]  # requests that do not end: cancelling lasts until forced
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        slow = row(page, job)
        await accept_next_dialog(page)
        await slow.locator("button.cancel").click()
        await expect(slow.locator(".status .badge")).to_have_text("cancelling")
        force = slow.locator("button.force")
        await expect(force).to_be_visible()
        messages = await accept_next_dialog(page)
        await force.click()
        await expect(slow.locator(".status .badge")).to_have_text("cancelled", timeout=15_000)
        assert "may be lost" in messages[0]
        await expect(slow.locator(".reason")).to_have_text("cancelled")
    document = node.status(job)
    assert document["status"] == "cancelled"
    assert any(warning.startswith("forced stop") for warning in document["warnings"])


@deferred_f_from_coro_f
async def test_cancelling_a_running_job_shows_cancelling_then_cancelled(
    browser: Browser, idle_node: ScrapydNode, site: str
) -> None:
    node = idle_node
    job = unique("cancel-me")
    node.schedule(job=job, urls=slow_urls(site, 6, 6), settings={"CONCURRENT_REQUESTS": 2})
    # A free slot runs it at once; then its first requests are in flight.
    await asyncio.to_thread(node.wait_status, job, "running", timeout=30)
    await asyncio.to_thread(
        wait_for,
        lambda: node.status(job)["requests_in_flight"] == 2,
        30,
        0.05,
        "requests in flight",
    )
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + f"dashboard#job={job}")
        running = row(page, job)
        await expect(running.locator(".status .badge")).to_have_text("running")
        await accept_next_dialog(page)
        await page.locator("#details button.cancel").click()
        # At once, from the answer to the cancel, in the panel and the table.
        await expect(running.locator(".status .badge")).to_have_text("cancelling", timeout=2_000)
        await expect(page.locator("#details-title .badge")).to_have_text("cancelling")
        await expect(running.locator("button.force")).to_be_visible()
        # The requests in flight finish; their pages are kept.
        await expect(running.locator(".status .badge")).to_have_text("cancelled", timeout=20_000)
        await expect(running.locator(".pages")).to_have_text("2")
        await expect(running.locator("button.force")).to_have_count(0)
        steps = page.locator("#details .timeline .step")
        await expect(steps.filter(has_text="cancel requested")).to_have_count(1)


# -- a node out of reach, a hidden tab ----------------------------------------------------


@deferred_f_from_coro_f
async def test_shows_when_the_node_is_unreachable_and_recovers(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.route(JOBS_JSON, lambda route: route.abort("connectionrefused"))
        alert = page.locator("#alert")
        await expect(alert).to_be_visible()
        await expect(alert).to_contain_text("The node is unreachable")
        await expect(page.locator("#live")).to_have_text("Offline")
        await expect(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))
        await expect(row(page, ended["completed"])).to_be_visible()  # the last known state stays
        await page.unroute(JOBS_JSON)
        await expect(alert).to_be_hidden()
        await expect(page.locator("#live")).to_contain_text("Live · updated")


STORE_DOWN = (
    '{"status": "error", "message": "the job store is unreachable or busy'
    ' (connection refused); try again in 2 s", "node_name": "n"}'
)


@deferred_f_from_coro_f
async def test_shows_the_node_s_message_when_its_store_is_unreachable(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.route(
            JOBS_JSON,
            lambda route: route.fulfill(
                status=503,
                headers={"Retry-After": "2"},
                content_type="application/json",
                body=STORE_DOWN,
            ),
        )
        alert = page.locator("#alert")
        await expect(alert).to_be_visible()
        await expect(alert).to_contain_text("The node's job store is unreachable")
        await expect(alert).to_contain_text("(connection refused); try again in 2 s")
        await expect(alert).not_to_contain_text("HTTP 503")
        await expect(row(page, ended["completed"])).to_be_visible()  # the last known state stays
        await page.unroute(JOBS_JSON)
        await expect(alert).to_be_hidden()


SET_HIDDEN = """hidden => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


@deferred_f_from_coro_f
async def test_pauses_while_the_tab_is_hidden(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await page.evaluate(SET_HIDDEN, True)
        await expect(page.locator("#live")).to_have_text("Paused while the tab is hidden")
        # No request for two poll intervals and more.
        with pytest.raises(PlaywrightTimeout):
            async with page.expect_request(JOBS_JSON, timeout=5_000):
                pass
        # Shown again: up to date at once.
        async with page.expect_request(JOBS_JSON, timeout=1_000):
            await page.evaluate(SET_HIDDEN, False)
        await expect(page.locator("#live")).to_contain_text("Live")


# -- basic auth, a path prefix, Scrapyd's home page, a phone ----------------------------------


class PrefixProxy(ThreadingHTTPServer):
    """A reverse proxy serving the node under a path prefix and telling it the
    prefix in X-Forwarded-Prefix, as a web server in front of Scrapyd does."""

    daemon_threads = True

    def __init__(self, upstream_port: int, prefix: str):
        self.upstream_port = upstream_port
        self.prefix = prefix
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}/"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: PrefixProxy
    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "te", "upgrade"}

    def _forward(self) -> None:
        prefix = self.server.prefix
        if not self.path.startswith(prefix + "/"):
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP_BY_HOP}
        headers["X-Forwarded-Prefix"] = prefix
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            upstream.request(
                self.command, self.path[len(prefix) :], body=body or None, headers=headers
            )
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in self.HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away during a long poll: nobody to answer
        finally:
            upstream.close()

    do_GET = do_POST = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture
def proxy(node: ScrapydNode) -> Iterator[PrefixProxy]:
    server = PrefixProxy(node.port, "/scrapyd")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@deferred_f_from_coro_f
async def test_needs_the_node_credentials(browser: Browser, node: ScrapydNode) -> None:
    async with browsing(browser, auth=None) as page:
        for path in ("dashboard", "dashboard/app.js", "jobs.json"):
            response = await page.request.get(node.url + path)
            assert response.status == 401
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            await page.goto(node.url + "dashboard")


@deferred_f_from_coro_f
async def test_works_under_a_path_prefix_from_scrapyd_home(
    browser: Browser, proxy: PrefixProxy, ended: dict[str, str]
) -> None:
    async with browsing(browser) as page:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(proxy.url)
        link = page.get_by_role("link", name="Jobs dashboard")
        await expect(link).to_have_attribute("href", "/scrapyd/dashboard")
        await link.click()
        await expect(page).to_have_url(proxy.url + "dashboard")
        await expect(page.locator("#live")).to_contain_text("Live")
        completed = row(page, ended["completed"])
        await expect(completed.locator(".status .badge")).to_have_text("completed")
        assert requested and all(url.startswith(proxy.url) for url in requested), requested

        status, url = await follow(page, completed.get_by_role("link", name="Log"))
        assert status == 200 and url.startswith(proxy.url + "logs/")
        await page.goto(proxy.url + "dashboard/")
        await expect(page).to_have_url(proxy.url + "dashboard")


@deferred_f_from_coro_f
async def test_readable_on_a_phone(
    browser: Browser, node: ScrapydNode, ended: dict[str, str]
) -> None:
    async with browsing(browser, width=390, height=844) as page:
        await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#jobs thead")).to_be_hidden()
        card = row(page, ended["completed"])
        await expect(card.locator(".status .badge")).to_be_visible()
        await expect(card.locator(".pages")).to_have_text("9")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        box = await card.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        await screenshot(page, "dashboard-phone.png")
        await card.locator("button.job-id").click()
        panel = await page.locator("#details").bounding_box()
        assert panel is not None and panel["width"] == 390
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
