"""In a real browser: a page of another origin cannot change anything on a
node, whether the node's auth is on (the browser holding its credentials,
the dashboard open in another tab) or off.

The node is a real ``scrapyd`` with the shipped config and the project
deployed by scrapyd-deploy, at ``http://127.0.0.1:PORT1``. The attacker's page
is served by a small server of the test's own at ``http://localhost:PORT2``,
another origin (and another site) for the browser. It submits forms, in
hidden frames and as a top-level navigation, and ``no-cors`` fetches with
credentials, to schedule.json, jobcancel.json, cancel.json, addversion.json
(multipart, with a real egg) and delproject.json: the node refuses each
(its access log shows a 403 for each) and nothing changes. The same script
run in a page of the node's own origin does change things: the requests
reach the node.

Chromium and Playwright as in tests/test_dashboard.py.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Browser, expect
from scrapy.utils.defer import deferred_f_from_coro_f

from tests.helpers import wait_for
from tests.scrapyd_node import (
    BIN,
    PROJECT,
    ScrapydNode,
    build_egg,
    running_node,
    slow_urls,
    unique,
)
from tests.test_dashboard import browser, browsing, open_dashboard, row  # noqa: F401 (fixture)

AUTH = ("admin", "s3cret-pass")
VIEWER = ("viewer", "look-only")
# What the attacker's page does, in this order; each is one request.
ATTACKS = [
    ("fetch", "schedule.json"),
    ("frame", "schedule.json"),
    ("fetch", "jobcancel.json"),
    ("frame", "jobcancel.json"),
    ("fetch", "cancel.json"),
    ("frame", "cancel.json"),
    ("fetch", "addversion.json"),
    ("frame", "addversion.json"),
    ("fetch", "delproject.json"),
    ("frame", "delproject.json"),
]

# The attacker's script: each request, then a report to its own server.
# ``cfg.node`` is the node's URL; the egg comes from the attacker's server.
ATTACK_JS = r"""
window.attack = async (cfg, attacks) => {
  const fields = {
    "schedule.json": { project: cfg.project, spider: "batch", jobid: cfg.job, urls: cfg.urls },
    "jobcancel.json": { job: cfg.victim },
    "cancel.json": { project: cfg.project, job: cfg.victim },
    "addversion.json": { project: cfg.project, version: cfg.version },
    "delproject.json": { project: cfg.project },
  };
  const egg = await (await fetch(cfg.egg)).blob();
  const results = [];
  let n = 0;
  for (const [how, service] of attacks) {
    n += 1;
    const values = { ...fields[service] };
    if (values.jobid) values.jobid = `${values.jobid}-${how}`;
    const multipart = service === "addversion.json";
    try {
      if (how === "fetch") {
        let body;
        if (multipart) {
          body = new FormData();
          for (const [k, v] of Object.entries(values)) body.append(k, v);
          body.append("egg", new File([egg], "project.egg"));
        } else {
          body = new URLSearchParams(values);
        }
        const options = { method: "POST", mode: "no-cors", credentials: "include", body };
        await fetch(cfg.node + service, options);
      } else {
        await new Promise((resolve) => {
          const frame = document.createElement("iframe");
          frame.name = `frame-${n}`;
          frame.hidden = true;
          document.body.append(frame);
          frame.onload = () => resolve();
          const form = document.createElement("form");
          form.method = "POST";
          form.action = cfg.node + service;
          form.target = frame.name;
          if (multipart) form.enctype = "multipart/form-data";
          for (const [k, v] of Object.entries(values)) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = k; input.value = v;
            form.append(input);
          }
          if (multipart) {
            const input = document.createElement("input");
            input.type = "file"; input.name = "egg";
            const files = new DataTransfer();
            files.items.add(new File([egg], "project.egg"));
            input.files = files.files;
            form.append(input);
          }
          document.body.append(form);
          form.submit();
        });
      }
      results.push(`${how} ${service}`);
    } catch (e) {
      results.push(`${how} ${service}: ${e}`);
    }
  }
  return results;
};

window.navigateTo = (cfg) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.action = cfg.node + "schedule.json";
  const values = { project: cfg.project, spider: "batch", jobid: `${cfg.job}-top`, urls: cfg.urls };
  for (const [k, v] of Object.entries(values)) {
    const input = document.createElement("input");
    input.type = "hidden"; input.name = k; input.value = v;
    form.append(input);
  }
  document.body.append(form);
  form.submit();
};
"""


class AttackerSite(ThreadingHTTPServer):
    """The attacker's web site: its page and the egg it uploads."""

    daemon_threads = True

    def __init__(self, egg: bytes):
        self.egg = egg
        super().__init__(("127.0.0.1", 0), _AttackerHandler)

    @property
    def url(self) -> str:
        # localhost, not 127.0.0.1: another origin than the node's.
        return f"http://localhost:{self.server_address[1]}/"


class _AttackerHandler(BaseHTTPRequestHandler):
    server: AttackerSite

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        if self.path == "/egg":
            self._send(self.server.egg, "application/octet-stream")
        else:
            page = f"<!DOCTYPE html><title>Win a prize</title><script>{ATTACK_JS}</script>"
            self._send(page.encode(), "text/html; charset=utf-8")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def egg(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The project's real egg, as scrapyd-deploy builds it."""
    workdir = tmp_path_factory.mktemp("egg")
    source = build_egg(workdir)
    path = workdir / "project.egg"
    subprocess.run(  # noqa: S603 (scrapyd-client's own command)
        [str(BIN / "scrapyd-deploy"), f"--build-egg={path}"],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=180,
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def attacker(egg: bytes) -> Iterator[AttackerSite]:
    server = AttackerSite(egg)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module", params=["auth", "no-auth"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScrapydNode]:
    auth = AUTH if request.param == "auth" else None
    jobstatus = {"viewer_username": VIEWER[0], "viewer_password": VIEWER[1]} if auth else {}
    yield from running_node(
        tmp_path_factory.mktemp(f"scrapyd-{request.param}"),
        options={"poll_interval": "0.2", "max_proc": "4"},
        jobstatus=jobstatus,
        auth=auth,
    )


@pytest.fixture
def victim(node: ScrapydNode, site: str) -> Iterator[str]:
    """A running job, the target of the cancels."""
    job = unique("victim")
    assert node.schedule(job=job, urls=slow_urls(site, 2, 60)).json()["status"] == "ok"
    node.wait_status(job, "running")
    yield job
    node.post("jobcancel.json", {"job": job, "force": "1"})
    node.wait_status(job, "cancelled")


def versions(node: ScrapydNode) -> list[str]:
    return node.get("listversions.json", {"project": PROJECT}).json()["versions"]


def job_ids(node: ScrapydNode) -> set[str]:
    return {job["job_id"] for job in node.get("jobs.json", {"limit": 1000}).json()["jobs"]}


def refused(node: ScrapydNode, service: str) -> int:
    """How many POSTs to the service the node's access log shows refused."""
    pattern = re.compile(rf'"POST /{re.escape(service)} HTTP/1\.1" 403 ')
    return len(pattern.findall(node.log.read_text(errors="replace")))


def config(
    node: ScrapydNode, attacker: AttackerSite, site: str, victim: str, job: str
) -> dict[str, str]:
    return {
        "node": node.url,
        "egg": attacker.url + "egg",
        "project": PROJECT,
        "job": job,
        "urls": f"{site}/sample/",
        "victim": victim,
        "version": "attacker",
    }


@deferred_f_from_coro_f
async def test_no_page_of_another_origin_changes_anything(
    browser: Browser,  # noqa: F811 (fixture)
    node: ScrapydNode,
    attacker: AttackerSite,
    site: str,
    victim: str,
) -> None:
    before = {service: refused(node, service) for _, service in ATTACKS}
    versions_before = versions(node)
    job = unique("xsite")
    cfg = config(node, attacker, site, victim, job)
    async with browsing(browser, auth=node.auth) as dashboard:
        # The user's dashboard open: the browser holds the node's credentials.
        await open_dashboard(dashboard, node.url + "dashboard")
        await expect(row(dashboard, victim).locator("button.cancel")).to_be_visible()
        page = await dashboard.context.new_page()
        await page.goto(attacker.url)
        results = await page.evaluate(
            "([cfg, attacks]) => window.attack(cfg, attacks)", [cfg, ATTACKS]
        )
        assert results == [f"{how} {service}" for how, service in ATTACKS]
        # A form submitted as a top-level navigation: the node's answer is
        # the page the browser shows.
        async with page.expect_navigation():
            await page.evaluate("(cfg) => window.navigateTo(cfg)", cfg)
        assert page.url == node.url + "schedule.json"
        answer = json.loads(await page.locator("body").inner_text())
        assert answer["status"] == "error" and "cross-origin" in answer["message"]

    # Every request reached the node and was refused.
    expected = {service: 0 for _, service in ATTACKS}
    for _, service in ATTACKS:
        expected[service] += 1
    expected["schedule.json"] += 1
    wait_for(
        lambda: all(refused(node, s) - before[s] >= n for s, n in expected.items()),
        what="the node's 403 to each request",
    )
    # Nothing changed.
    assert not {j for j in job_ids(node) if j.startswith(job)}
    assert node.status(victim)["status"] == "running"
    assert node.scrapyd_state(victim) == "running"
    assert versions(node) == versions_before and "attacker" not in versions_before
    assert PROJECT in node.get("listprojects.json").json()["projects"]
    log = node.log.read_text(errors="replace")
    assert "Refused POST '/" in log and "cross-origin request refused" in log


@deferred_f_from_coro_f
async def test_the_same_requests_from_the_nodes_own_origin_change_things(
    browser: Browser,  # noqa: F811 (fixture)
    node: ScrapydNode,
    attacker: AttackerSite,
    egg: bytes,
    site: str,
    victim: str,
) -> None:
    """The harness delivers what the attacker's page sends: run in a page of
    the node's origin, the same script schedules, cancels and deploys."""
    job = unique("own")
    cfg = config(node, attacker, site, victim, job)
    cfg["version"] = "own-origin"
    own = [
        ("fetch", "schedule.json"),
        ("frame", "schedule.json"),
        ("fetch", "addversion.json"),
        ("frame", "jobcancel.json"),
    ]
    async with browsing(browser, auth=node.auth) as page:
        # A page of the node without a Content-Security-Policy of its own,
        # given the egg by the test: nothing of another origin in it.
        await page.goto(node.url + "daemonstatus.json")
        await page.add_script_tag(content=ATTACK_JS)
        cfg["egg"] = await page.evaluate(
            """(data) => URL.createObjectURL(
                new Blob([Uint8Array.from(atob(data), (c) => c.charCodeAt(0))]))""",
            base64.b64encode(egg).decode(),
        )
        results = await page.evaluate("([cfg, attacks]) => window.attack(cfg, attacks)", [cfg, own])
        assert results == [f"{how} {service}" for how, service in own]
    try:
        assert {f"{job}-fetch", f"{job}-frame"} <= job_ids(node)
        assert "own-origin" in versions(node)
        node.wait_status(victim, "cancelling", "cancelled")
    finally:
        node.post("delversion.json", {"project": PROJECT, "version": "own-origin"})
        for name in (f"{job}-fetch", f"{job}-frame"):
            node.post("jobcancel.json", {"job": name, "force": "1"})


@pytest.mark.parametrize("node", ["auth"], indirect=True)
@deferred_f_from_coro_f
async def test_a_viewer_sees_no_buttons_and_cannot_change_anything(
    browser: Browser,  # noqa: F811 (fixture)
    node: ScrapydNode,
    victim: str,
) -> None:
    async with browsing(browser, auth=VIEWER) as page:
        await open_dashboard(page, node.url + "dashboard")
        victim_row = row(page, victim)
        await expect(victim_row.locator(".status .badge")).to_have_text("running")
        await expect(victim_row.locator("button.job-id")).to_be_visible()
        assert await victim_row.locator(".buttons button").count() == 0
        await victim_row.locator("button.job-id").click()
        await expect(page.locator("#details")).to_be_visible()
        assert await page.locator("#details .buttons button").count() == 0
        # The page's own requests: reads answered, changes refused.
        answer = await page.evaluate(
            """async (job) => {
                const body = new URLSearchParams({ job });
                const cancel = await fetch("jobcancel.json", { method: "POST", body });
                const read = await fetch(`jobstatus.json?job=${job}`);
                return [cancel.status, await cancel.json(), read.status];
            }""",
            victim,
        )
        assert answer[0] == 403 and answer[1]["status"] == "error" and answer[2] == 200
        statuses = await page.evaluate(
            "async (paths) => Promise.all(paths.map(async (path) => (await fetch(path)).status))",
            ["metrics", "jobs.json", "listjobs.json", "logs/", "dashboard/app.js"],
        )
        assert statuses == [200] * 5
        schedule = await page.evaluate(
            """async (project) => (await fetch("schedule.json", {
                method: "POST", body: new URLSearchParams({ project, spider: "batch" }),
            })).status""",
            PROJECT,
        )
        assert schedule == 403
    assert node.status(victim)["status"] == "running"
    async with browsing(browser, auth=AUTH) as page:
        await open_dashboard(page, node.url + "dashboard")
        await expect(row(page, victim).locator("button.cancel")).to_be_visible()
        # The same POST with the node's own credentials passes.
        cancel = await page.evaluate(
            """async (project) => {
                const body = new URLSearchParams({ project, job: "no-such-job" });
                const answer = await fetch("cancel.json", { method: "POST", body });
                return [answer.status, await answer.json()];
            }""",
            PROJECT,
        )
        assert cancel[0] == 200 and "cross-origin" not in cancel[1].get("message", "")


def test_state_changes_log_one_line_per_refusal_at_most_a_while(node: ScrapydNode) -> None:
    log_before = node.log.read_text(errors="replace").count("Refused ")
    headers = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    for _ in range(20):
        answer = node.post("jobcancel.json", {"job": "x"}, headers=headers)
        assert answer.code == 403 and answer.json()["status"] == "error"
    assert node.log.read_text(errors="replace").count("Refused ") - log_before <= 2
