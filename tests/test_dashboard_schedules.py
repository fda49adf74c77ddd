"""In a real browser: the dashboard's schedules panel on a real ``scrapyd``
with the shipped config, behind basic auth with read-only credentials too.

A schedule added through the panel's form (a bad cron refused with the
node's own one line, the form keeping what was typed; a good one listed with
its rule in words and its next run), edited, disabled and enabled again, run
now (its job in the job list, linked from the schedule's last run), its jobs
alone in the job list, deleted after a confirmation; a viewer sees the
schedules and no button that changes them.

The schedules tick once a year (January 1, 02:00 Paris time): the only jobs
they make while the tests run are those run now. The browser is driven as in
tests/test_dashboard.py, whose Chromium and helpers are shared. Screenshots
are saved in tests/artifacts/.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Dialog, Locator, Page, Route, expect
from scrapy.utils.defer import deferred_f_from_coro_f

from tests import test_dashboard
from tests.helpers import wait_for
from tests.scrapyd_node import (
    PROJECT,
    ScrapydNode,
    running_node,
    sample_urls,
    slow_urls,
    unique,
)
from tests.test_dashboard import (
    AUTH,
    SET_HIDDEN,
    accept_next_dialog,
    browsing,
    open_dashboard,
    row,
    screenshot,
)

# Chromium, as tests/test_dashboard.py launches it, for this module.
browser = test_dashboard.browser

VIEWER = ("viewer", "look-only")
YEARLY = "0 2 1 1 *"
YEARLY_WORDS = "every year on January 1 at 02:00 Europe/Paris"
LISTSCHEDULES_JSON = re.compile(r"/listschedules\.json(\?|$)")
# Counts the page's requests to listschedules.json, whatever the time the page reads.
COUNT_FETCHES = """() => {
    window.__scheduleFetches = 0;
    const fetch = window.fetch;
    window.fetch = (url, options) => {
        if (String(url).startsWith("listschedules.json")) window.__scheduleFetches += 1;
        return fetch(url, options);
    };
}"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-schedules"),
        options={"max_proc": "2", "poll_interval": "0.2"},
        jobstatus={"viewer_username": VIEWER[0], "viewer_password": VIEWER[1]},
        auth=AUTH,
    )


def listed(node: ScrapydNode, name: str) -> dict[str, Any] | None:
    """The schedule as listschedules.json lists it; None if it is not."""
    answer = node.get("listschedules.json", {"project": PROJECT})
    assert answer.code == 200, answer.body
    return next((s for s in answer.json()["schedules"] if s["name"] == name), None)


@pytest.fixture
def added(node: ScrapydNode, site: str) -> Iterator[str]:
    """A schedule of the batch spider, added through the node's service."""
    name = unique("yearly")
    answer = node.post(
        "addschedule.json",
        {
            "project": PROJECT,
            "name": name,
            "spider": "batch",
            "cron": YEARLY,
            "timezone": "Europe/Paris",
            "urls": sample_urls(site),
        },
    )
    assert answer.json()["status"] == "ok", answer.body
    yield name
    node.post("delschedule.json", {"project": PROJECT, "name": name})


def schedule_row(page: Page, name: str) -> Locator:
    return page.locator(f'tr.schedule-row[data-schedule="{name}"]')


def hash_params(page: Page) -> dict[str, list[str]]:
    """What the page keeps in its address's hash."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).fragment)


def history_row(page: Page, name: str) -> Locator:
    return page.locator(f'tr.schedule-history[data-schedule="{name}"]')


async def open_panel(page: Page) -> Locator:
    panel = page.locator("#schedules")
    await expect(panel).to_be_visible()
    if await panel.get_attribute("open") is None:
        await panel.locator("summary").click()
    await expect(panel.locator(".schedules-wrap")).to_be_visible()
    return panel


@deferred_f_from_coro_f
async def test_a_schedule_added_through_the_form(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    name = unique("nightly")
    urls = sample_urls(site)
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        await page.locator("#schedule-add").click()
        form = page.locator("#schedule-form")
        await expect(form).to_be_visible()
        field = form.locator
        # The node's one project is filled in.
        await expect(field('input[name="project"]')).to_have_value(PROJECT)
        await field('input[name="name"]').fill(name)
        await field('input[name="spider"]').fill("batch")
        await field('input[name="cron"]').fill("0 25 * * *")
        await field('input[name="timezone"]').fill("Europe/Paris")
        await field('textarea[name="args"]').fill(f"urls={urls}")
        await field('select[name="overlap"]').select_option("skip")
        await form.get_by_role("button", name="Save").click()

        # Refused with the node's own line; what was typed is kept.
        refusal = node.post(
            "addschedule.json",
            {
                "project": PROJECT,
                "name": name,
                "spider": "batch",
                "cron": "0 25 * * *",
                "timezone": "Europe/Paris",
            },
        ).json()
        assert refusal["status"] == "error" and "cron" in refusal["message"]
        await expect(page.locator("#schedule-form-error")).to_have_text(refusal["message"])
        await expect(form).to_be_visible()
        await expect(field('input[name="name"]')).to_have_value(name)
        await expect(field('input[name="cron"]')).to_have_value("0 25 * * *")
        await expect(field('textarea[name="args"]')).to_have_value(f"urls={urls}")
        await expect(field('select[name="overlap"]')).to_have_value("skip")
        assert listed(node, name) is None
        await screenshot(page, "dashboard-schedule-form.png", down_to=form)

        # A spider argument named as one of the schedule's own parameters: refused by the page.
        await field('textarea[name="args"]').fill(f"urls={urls}\nevery=5")
        await form.get_by_role("button", name="Save").click()
        await expect(page.locator("#schedule-form-error")).to_contain_text('"every" is a parameter')
        await field('textarea[name="args"]').fill(f"urls={urls}")

        await field('input[name="cron"]').fill(YEARLY)
        await expect(page.locator("#schedule-rule-words")).to_have_text(f": {YEARLY_WORDS}")
        await form.get_by_role("button", name="Save").click()
        await expect(form).to_be_hidden()
        await expect(page.locator("#notice")).to_contain_text(f"Schedule {name} saved")
        schedule = listed(node, name)
        assert schedule is not None
        assert (schedule["cron"], schedule["timezone"], schedule["overlap"]) == (
            YEARLY,
            "Europe/Paris",
            "skip",
        )
        assert schedule["args"] == {"urls": urls} and schedule["enabled"] is True
        shown = schedule_row(page, name)
        await expect(shown.locator(".rule")).to_have_text(YEARLY_WORDS)
        await expect(shown.locator(".spider")).to_have_text("batch")
        await expect(shown.locator(".next time")).to_have_attribute(
            "datetime", schedule["next_tick"]
        )
        await expect(shown.locator(".last")).to_have_text("—")
        await screenshot(page, "dashboard-schedules.png", down_to=page.locator("#schedules"))
    node.post("delschedule.json", {"project": PROJECT, "name": name})


@deferred_f_from_coro_f
async def test_a_new_schedule_of_a_used_name_replaces_it_only_when_confirmed(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        await page.locator("#schedule-add").click()
        form = page.locator("#schedule-form")
        await form.locator('input[name="name"]').fill(added)
        await form.locator('input[name="spider"]').fill("batch")
        await form.locator('input[name="kind"][value="every"]').check()
        await form.locator('input[name="every"]').fill("30")
        await expect(page.locator("#schedule-rule-words")).to_have_text(": every 30 seconds")

        async def dismiss(dialog: Dialog) -> None:
            await dialog.dismiss()

        page.once("dialog", dismiss)
        async with page.expect_event("dialog"):
            await form.get_by_role("button", name="Save").click()
        await expect(form).to_be_visible()
        schedule = listed(node, added)
        assert schedule is not None and (schedule["cron"], schedule["every"]) == (YEARLY, None)

        messages = await accept_next_dialog(page)
        await form.get_by_role("button", name="Save").click()
        await expect(form).to_be_hidden()
        assert messages and added in messages[0]
        await expect(schedule_row(page, added).locator(".rule")).to_have_text("every 30 seconds")
    schedule = listed(node, added)
    assert schedule is not None and (schedule["cron"], schedule["every"]) == (None, 30)


@deferred_f_from_coro_f
async def test_editing_a_schedule_keeps_what_the_form_does_not_change(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    before = listed(node, added)
    assert before is not None
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        await schedule_row(page, added).locator("button.edit").click()
        form = page.locator("#schedule-form")
        await expect(form.locator("#schedule-form-title")).to_have_text(f"Edit schedule {added}")
        await expect(form.locator('input[name="cron"]')).to_have_value(YEARLY)
        await expect(form.locator('input[name="timezone"]')).to_have_value("Europe/Paris")
        name_field = form.locator('input[name="name"]')
        await expect(name_field).to_have_value(added)
        assert await name_field.evaluate("input => input.readOnly")
        await form.locator('input[name="cron"]').fill("30 3 * * 1-5")
        await form.get_by_role("button", name="Save").click()
        await expect(form).to_be_hidden()
        await expect(schedule_row(page, added).locator(".rule")).to_have_text(
            "every weekday at 03:30 Europe/Paris"
        )
    after = listed(node, added)
    assert after is not None and after["cron"] == "30 3 * * 1-5"
    assert (after["args"], after["spider"], after["timezone"]) == (
        before["args"],
        before["spider"],
        before["timezone"],
    )


@deferred_f_from_coro_f
async def test_disabling_and_enabling_a_schedule(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        shown = schedule_row(page, added)
        await expect(shown).to_have_attribute("data-enabled", "true")
        await shown.locator("button.toggle").click()
        await expect(shown).to_have_attribute("data-enabled", "false")
        await expect(shown.locator(".next")).to_have_text("disabled")
        await expect(shown.locator("button.toggle")).to_have_text("Enable")
        schedule = listed(node, added)
        assert schedule is not None and schedule["enabled"] is False
        assert schedule["cron"] == YEARLY and schedule["args"]  # the rest kept

        await shown.locator("button.toggle").click()
        await expect(shown).to_have_attribute("data-enabled", "true")
        await expect(shown.locator("button.toggle")).to_have_text("Disable")
        schedule = listed(node, added)
        assert schedule is not None and schedule["enabled"] is True
        await expect(shown.locator(".next time")).to_have_attribute(
            "datetime", schedule["next_tick"]
        )


@deferred_f_from_coro_f
async def test_run_now_queues_a_job_linked_from_its_schedule(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        shown = schedule_row(page, added)
        await shown.locator("button.run").click()
        await expect(page.locator("#notice")).to_contain_text(f"Schedule {added}: job {added}-")
        notice = await page.locator("#notice-text").text_content()
        match = re.search(r"job (\S+) queued", notice or "")
        assert match, notice
        job = match.group(1)
        schedule = listed(node, added)
        assert schedule is not None and schedule["last_job"] == job
        assert node.status(job)["schedule"] == added

        # In the job list, and linked from the schedule's last run, with its badge.
        await expect(row(page, job)).to_be_visible()
        link = shown.locator("a.last-job")
        await expect(link).to_have_text(job)
        node.wait_status(job, "completed")
        await expect(shown.locator(".last .badge")).to_have_text("completed")
        await expect(row(page, job).locator(".status .badge")).to_have_text("completed")
        await screenshot(page, "dashboard-schedule-run.png", down_to=page.locator("#jobs"))
        await link.click()
        await expect(page.locator("#details")).to_be_visible()
        await expect(page.locator("#details-title")).to_contain_text(job)
        schedule_counter = (
            page.locator("#details .counters div")
            .filter(has=page.locator("dt", has_text=re.compile("^Schedule$")))
            .locator("dd")
        )
        await expect(schedule_counter).to_have_text(added)
        assert hash_params(page)["job"] == [job]


@deferred_f_from_coro_f
async def test_a_refused_run_shows_the_node_s_message(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    name = unique("alone")
    params = {"project": PROJECT, "name": name, "spider": "batch", "cron": YEARLY}
    params |= {"overlap": "skip", "urls": slow_urls(site, 1, 30)}
    assert node.post("addschedule.json", params).json()["status"] == "ok"
    try:
        first = node.post("runschedule.json", {"project": PROJECT, "name": name}).json()
        assert first["status"] == "ok", first
        node.wait_status(first["jobid"], "running")
        refusal = node.post("runschedule.json", {"project": PROJECT, "name": name})
        assert refusal.code == 409 and f"job {first['jobid']}" in refusal.json()["message"]
        async with browsing(browser) as page:
            await open_dashboard(page, node.url + "dashboard")
            await open_panel(page)
            button = schedule_row(page, name).locator("button.run")
            await button.click()
            notice = page.locator("#notice")
            await expect(notice).to_have_attribute("data-kind", "error")
            await expect(page.locator("#notice-text")).to_have_text(refusal.json()["message"])
            await expect(button).to_be_enabled()
        schedule = listed(node, name)
        assert schedule is not None and schedule["last_job"] == first["jobid"]
    finally:
        node.post("delschedule.json", {"project": PROJECT, "name": name})
        for job in node.get("jobs.json", {"schedule": name, "limit": 100}).json()["jobs"]:
            if job["is_active"]:
                node.post("jobcancel.json", {"job": job["job_id"], "force": "1"})
        node.wait_idle()


@deferred_f_from_coro_f
async def test_the_history_shows_each_tick_fired_or_skipped(
    browser: Browser, node: ScrapydNode, site: str
) -> None:
    # Ticks every second, each job a few seconds long: the ticks meanwhile are skipped.
    name = unique("busy")
    answer = node.post(
        "addschedule.json",
        {
            "project": PROJECT,
            "name": name,
            "spider": "batch",
            "every": "1",
            "overlap": "skip",
            "urls": slow_urls(site, 2, 4),
        },
    )
    assert answer.json()["status"] == "ok", answer.body
    try:
        wait_for(
            lambda: (s := listed(node, name)) and s["skipped"] >= 2 and s["last_job"],
            timeout=30,
            what="a tick fired and two skipped",
        )
        node.post("addschedule.json", {"project": PROJECT, "name": name, "enabled": "0"})
        async with browsing(browser) as page:
            await open_dashboard(page, node.url + "dashboard")
            await open_panel(page)
            shown = schedule_row(page, name)
            await expect(shown.locator(".rule")).to_have_text("every second")
            await shown.locator("button.history").click()
            history = history_row(page, name)
            fired = history.locator("li.outcome-fired")
            await expect(fired.first).to_be_visible()
            await expect(history.locator("li.outcome-skipped").first).to_be_visible()
            job = await fired.first.locator("a.tick-job").text_content()
            assert job and job.startswith(f"{name}-"), job
            await expect(shown.locator("button.history")).to_have_text("Hide history")
            await screenshot(
                page, "dashboard-schedule-history.png", down_to=page.locator("#schedules")
            )
            await fired.first.locator("a.tick-job").click()
            await expect(page.locator("#details-title")).to_contain_text(job)
            await page.locator("#details-close").click()
            await shown.locator("button.history").click()
            await expect(history).to_have_count(0)
    finally:
        node.post("delschedule.json", {"project": PROJECT, "name": name})
        for job in node.get("jobs.json", {"schedule": name, "limit": 100}).json()["jobs"]:
            if job["is_active"]:
                node.post("jobcancel.json", {"job": job["job_id"], "force": "1"})
        node.wait_idle()


@deferred_f_from_coro_f
async def test_the_job_list_shows_one_schedule_s_jobs(
    browser: Browser, node: ScrapydNode, site: str, added: str
) -> None:
    run = node.post("runschedule.json", {"project": PROJECT, "name": added}).json()
    assert run["status"] == "ok", run
    other = unique("one-off")
    assert node.schedule(job=other, urls=sample_urls(site)).json()["status"] == "ok"
    node.wait_status(run["jobid"], "completed")
    node.wait_status(other, "completed")
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await expect(row(page, other)).to_be_visible()
        await open_panel(page)

        # A click on the schedule's name.
        await schedule_row(page, added).locator("button.schedule-name").click()
        await expect(page.locator("#filter-schedule")).to_have_value(added)
        await expect(row(page, other)).to_have_count(0)
        await expect(row(page, run["jobid"])).to_be_visible()
        shown = await page.locator("tr.job").evaluate_all("rows => rows.map(r => r.dataset.job)")
        assert shown and all(job.startswith(f"{added}-") for job in shown), shown
        assert hash_params(page)["schedule"] == [added]

        # Kept in the page's address; cleared with the other filters.
        await page.reload()
        await expect(page.locator("#filter-schedule")).to_have_value(added)
        await expect(row(page, run["jobid"])).to_be_visible()
        await expect(row(page, other)).to_have_count(0)
        await page.locator("#filters").get_by_role("button", name="Clear").click()
        await expect(row(page, other)).to_be_visible()

        # Typed in the filter, the schedule's name suggested.
        suggested = await page.locator("#schedule-names option").evaluate_all(
            "options => options.map(o => o.value)"
        )
        assert added in suggested
        await page.locator("#filter-schedule").fill(added)
        await expect(row(page, other)).to_have_count(0)
        await expect(row(page, run["jobid"])).to_be_visible()


@deferred_f_from_coro_f
async def test_deleting_a_schedule_after_a_confirmation(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        shown = schedule_row(page, added)

        async def dismiss(dialog: Dialog) -> None:
            await dialog.dismiss()

        page.once("dialog", dismiss)
        async with page.expect_event("dialog"):
            await shown.locator("button.delete").click()
        await expect(shown).to_be_visible()
        assert listed(node, added) is not None

        messages = await accept_next_dialog(page)
        await shown.locator("button.delete").click()
        await expect(shown).to_have_count(0)
        assert messages and added in messages[0]
        await expect(page.locator("#notice")).to_contain_text(f"Schedule {added} deleted")
    assert listed(node, added) is None


@deferred_f_from_coro_f
async def test_a_viewer_sees_the_schedules_and_no_buttons(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser, auth=VIEWER) as page:
        await open_dashboard(page, node.url + "dashboard")
        await open_panel(page)
        shown = schedule_row(page, added)
        await expect(shown.locator(".rule")).to_have_text(YEARLY_WORDS)
        await expect(shown.locator("button.schedule-name")).to_be_visible()
        await expect(shown.locator(".buttons button")).to_have_count(0)
        await expect(page.locator("#schedule-add")).to_be_hidden()
        reads = ":not(.schedule-name):not(.history)"
        await expect(page.locator(f"#schedules button:visible{reads}")).to_have_count(0)
        # Its history is a read.
        await shown.locator("button.history").click()
        await expect(history_row(page, added)).to_contain_text("No tick yet.")
        # The node refuses the viewer's changes anyway.
        code = await page.evaluate(
            """async ([project, name]) => (await fetch("runschedule.json", {
                method: "POST", body: new URLSearchParams({ project, name }),
            })).status""",
            [PROJECT, added],
        )
        assert code == 403
    schedule = listed(node, added)
    assert schedule is not None and schedule["last_job"] is None


@deferred_f_from_coro_f
async def test_the_panel_is_read_every_5_s_and_not_while_the_tab_is_hidden(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        await page.clock.install()
        await open_dashboard(page, node.url + "dashboard")
        await expect(schedule_row(page, added)).to_be_visible()
        async with page.expect_response(LISTSCHEDULES_JSON, timeout=2_000):
            await page.clock.fast_forward(5_000)

        await page.evaluate(SET_HIDDEN, True)
        await expect(page.locator("#live")).to_have_text("Paused while the tab is hidden")
        await page.evaluate(COUNT_FETCHES)
        await page.clock.fast_forward(120_000)
        assert await page.evaluate("window.__scheduleFetches") == 0
        # Shown again: read at once.
        async with page.expect_response(LISTSCHEDULES_JSON, timeout=2_000):
            await page.evaluate(SET_HIDDEN, False)
        await expect(schedule_row(page, added)).to_be_visible()


@deferred_f_from_coro_f
async def test_no_panel_and_no_error_without_the_service(
    browser: Browser, node: ScrapydNode, added: str
) -> None:
    async with browsing(browser) as page:
        # A scrapyd.conf without listschedules.json: Scrapyd's page for an unknown resource.
        async def not_found(route: Route) -> None:
            await route.fulfill(status=404, content_type="text/html", body="No Such Resource")

        await page.route(LISTSCHEDULES_JSON, not_found)
        async with page.expect_response(LISTSCHEDULES_JSON):
            await open_dashboard(page, node.url + "dashboard")
        await expect(page.locator("#schedules")).to_be_hidden()
        await expect(page.locator("#alert")).to_be_hidden()
        await expect(page.locator("#notice")).to_be_hidden()
