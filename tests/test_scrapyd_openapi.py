"""The OpenAPI document of the Scrapyd services is valid OpenAPI 3.1 and true:
real answers of a real node, in every state and with every code, match it,
pausing, resuming and retrying jobs included."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from tests.helpers import ROOT, poll_until, wait_for
from tests.scrapyd_node import PROJECT, Response, ScrapydNode, running_node, slow_urls, unique
from tests.webhook_receiver import SECRET, Receiver, webhook_receiver

SPEC = ROOT / "extensions" / "scrapy_jobstatus" / "scrapyd" / "openapi.yaml"
AUTH = ("admin", "s3cret")
VIEWER = ("viewer", "look-only")
CROSS_SITE = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


JOB_SERVICES = (
    "/jobstatus.json",
    "/jobs.json",
    "/jobcancel.json",
    "/jobpause.json",
    "/jobresume.json",
    "/joberrors.json",
    "/nodes.json",
    "/webhooks.json",
)
WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text())


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    # Items kept: a job's document lists the feeds its runs wrote.
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-openapi"),
        options={"max_proc": "1", "poll_interval": "0.2", "items_dir": "items"},
        jobstatus={
            "webhook_secret": SECRET,
            "viewer_username": VIEWER[0],
            "viewer_password": VIEWER[1],
        },
        auth=AUTH,
    )


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """A node with its auth off, for the answers to an unknown Host."""
    node = ScrapydNode(tmp_path_factory.mktemp("scrapyd-openapi-open"))
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def named() -> dict[str, Response]:
    """Answers of ``answers`` whose meaning a test checks, by name."""
    return {}


@pytest.fixture(scope="module")
def answers(
    node: ScrapydNode,
    open_node: ScrapydNode,
    site: str,
    receiver: Receiver,
    named: dict[str, Response],
) -> list[tuple[str, str, Response]]:
    """Real answers of every service, in every job state, with every code."""
    seen: list[tuple[str, str, Response]] = []

    def call(
        method: str,
        path: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> Response:
        response = node.request(method, path.lstrip("/"), params, **kwargs)
        seen.append((method, path, response))
        if name:
            named[name] = response
        return response

    def schedule(
        job: str,
        urls: str,
        args: list[tuple[str, str]] | None = None,
        name: str | None = None,
        **settings: str,
    ) -> Response:
        params = [("project", PROJECT), ("spider", "batch"), ("jobid", job), ("urls", urls)]
        params += [("setting", f"{k}={v}") for k, v in settings.items()]
        return call("POST", "/schedule.json", params + (args or []), name=name)

    blocker = unique("blocker")
    schedule(blocker, slow_urls(site, 2, 20))
    node.wait_status(blocker, "running")
    call("GET", "/jobstatus.json", {"job": blocker})
    # Running without a JOBDIR (the node's pausable is off): no pause; a
    # resume has nothing to do.
    call("POST", "/jobpause.json", {"job": blocker}, name="pause without JOBDIR")
    call("POST", "/jobresume.json", {"job": blocker}, name="resume running")
    pending = unique("pending")
    schedule(pending, f"{site}/sample/")
    call("GET", "/jobstatus.json", {"job": pending})
    call("GET", "/jobs.json")
    call("POST", "/jobcancel.json", {"job": pending})
    call("POST", "/jobcancel.json", {"job": pending})
    schedule("../bad", f"{site}/sample/")
    schedule(unique("slow"), f"{site}/sample/", JOBSTATUS_TIMEOUT="99999")
    schedule(unique("keyless"), f"{site}/sample/", args=[("webhook", receiver.url)])
    call("POST", "/cancel.json", {"project": PROJECT, "job": "no-such-job"})
    call("POST", "/jobcancel.json", {"job": blocker, "force": "1"})
    node.wait_status(blocker, "cancelled")
    call("GET", "/jobstatus.json", {"job": blocker})

    done = unique("done")
    schedule(done, f"{site}/sample/,{site}/status/404,{site}/sample/apple")
    node.wait_status(done, "completed")
    call("GET", "/jobstatus.json", {"job": done})
    call("GET", "/joberrors.json", {"job": done})
    call("GET", "/joberrors.json", {"job": done, "format": "csv"})
    call("GET", "/jobs.json", {"status": "completed", "limit": 2})
    call("POST", "/jobcancel.json", {"job": done})
    call("POST", "/jobpause.json", {"job": done}, name="pause completed")
    call("POST", "/jobresume.json", {"job": done}, name="resume completed")

    queued = unique("queued")
    node.wait_idle()
    blocker = unique("blocker")
    schedule(blocker, slow_urls(site, 2, 20))
    node.wait_status(blocker, "running")
    schedule(queued, f"{site}/sample/")
    call("POST", "/cancel.json", {"project": PROJECT, "job": queued})
    call("POST", "/jobcancel.json", {"job": blocker, "force": "1"})

    for path in ("/jobstatus.json", "/joberrors.json"):
        call("GET", path, {"job": "no-such-job"})
        call("GET", path, {"job": "../etc/passwd"})
        call("GET", path, {"job": "x"}, auth=None)
    call("GET", "/jobs.json", {"limit": "5000"})
    call("GET", "/jobs.json", {}, auth=None)
    call("GET", "/nodes.json")
    call("GET", "/nodes.json", auth=None)
    call("GET", "/jobstatus.json", {"job": done, "series": "1"})
    call("GET", "/events.json")
    call("GET", "/events.json", {"since": "0", "job": done})
    call("GET", "/events.json", {"since": "0", "wait": "61"})
    call("GET", "/metrics")
    call("GET", "/metrics", auth=None)
    call("GET", "/webhooks.json", {"job": done})
    call("GET", "/webhooks.json", {"job": "no-such-job"})
    call("GET", "/webhooks.json", {"job": "a/b"})
    call("GET", "/webhooks.json", {"job": done}, auth=None)
    call("POST", "/jobcancel.json", {"job": "no-such-job"})
    call("POST", "/jobcancel.json", {"job": "a/b"})
    call("GET", "/jobcancel.json", {"job": "a"})
    call("POST", "/jobcancel.json", {"job": "a"}, auth=None)
    call("POST", "/schedule.json", {"project": PROJECT, "spider": "batch"}, auth=None)
    call("POST", "/cancel.json", {"project": PROJECT, "job": "a"}, auth=None)
    node.wait_status(blocker, "cancelled")
    node.wait_idle()

    # Pause and resume. A pausable job (three pages a second apart, one at
    # a time, with its own webhook) runs; jobs queued behind it are paused
    # at once, resumed, cancelled while paused.
    pausable = unique("pausable")
    schedule(
        pausable,
        slow_urls(site, 3, 1),
        # The receiver verifies with this key: the job's own.
        args=[("webhook", receiver.url), ("webhook_secret", SECRET)],
        JOBSTATUS_PAUSABLE="True",
        JOBSTATUS_INTERVAL="0.5",
        CONCURRENT_REQUESTS="1",
    )
    node.wait_status(pausable, "running")
    queued = unique("queued")
    schedule(queued, f"{site}/sample/")
    call("POST", "/jobpause.json", {"job": queued}, name="pause pending")
    call("POST", "/jobpause.json", {"job": queued, "project": PROJECT}, name="pause paused")
    call("GET", "/jobstatus.json", {"job": queued})
    call("GET", "/jobs.json", {"status": "paused"}, name="list paused")
    call("POST", "/jobresume.json", {"job": queued}, name="resume paused")
    call("POST", "/jobresume.json", {"job": queued}, name="resume pending")
    call("POST", "/jobpause.json", {"job": queued})
    call("POST", "/jobcancel.json", {"job": queued}, name="cancel paused")
    call("POST", "/jobpause.json", {"job": queued}, name="pause cancelled")
    call("POST", "/jobresume.json", {"job": queued}, name="resume cancelled")
    again = unique("queued")
    schedule(again, f"{site}/sample/")
    call("POST", "/jobpause.json", {"job": again})
    call("POST", "/cancel.json", {"project": PROJECT, "job": again}, name="scrapyd cancel paused")

    wait_for(lambda: node.status(pausable)["total_pages_crawled"] >= 1, what="a page crawled")
    call("POST", "/jobpause.json", {"job": pausable}, name="pause running")
    call("GET", "/jobs.json", {"status": "pausing"})
    call("GET", "/jobstatus.json", {"job": pausable})
    node.wait_status(pausable, "paused")
    call("GET", "/jobstatus.json", {"job": pausable}, name="paused document")
    call("POST", "/jobpause.json", {"job": pausable}, name="pause paused again")
    call("POST", "/jobresume.json", {"job": pausable}, name="resume the paused job")
    node.wait_status(pausable, "completed")
    call("GET", "/jobstatus.json", {"job": pausable}, name="resumed document")
    wait_for(
        lambda: [
            r for r in receiver.of_type("job.paused") if r.payload["data"]["job_id"] == pausable
        ],
        what="the job.paused webhook",
    )
    call("GET", "/webhooks.json", {"job": pausable}, name="paused webhooks")
    for path in ("/jobpause.json", "/jobresume.json"):
        call("POST", path, {"job": "no-such-job"})
        call("POST", path, {"job": pausable, "project": "other-project"})
        call("POST", path, {"job": "a/b"})
        call("GET", path, {"job": pausable})
        call("POST", path, {"job": pausable}, auth=None)

    # Periodic schedules: every answer of their services.
    base = {"project": PROJECT, "name": "openapi"}
    rule = {"spider": "batch", "cron": "0 0 1 1 *", "overlap": "skip"}
    call("POST", "/addschedule.json", {**base, **rule, "urls": f"{site}/sample/"})
    call("POST", "/addschedule.json", {**base, "enabled": "0"})
    call("POST", "/addschedule.json", {**base, "name": "no-such", "enabled": "1"})
    call("POST", "/addschedule.json", {**base, **rule, "cron": "61 * * * *"})
    call("GET", "/listschedules.json", {"history": "1"})
    call("GET", "/listschedules.json", {"project": "a b"})
    run = call("POST", "/runschedule.json", base)
    call("POST", "/runschedule.json", base, name="run again")
    call("POST", "/runschedule.json", {**base, "name": "no-such"})
    call("GET", "/jobs.json", {"schedule": "openapi"})
    call("GET", "/jobstatus.json", {"job": run.json()["jobid"]}, name="run document")
    node.post("jobcancel.json", {"job": run.json()["jobid"]})
    call("POST", "/delschedule.json", base)
    call("POST", "/delschedule.json", base)
    node.wait_status(run.json()["jobid"], "cancelled", "completed")

    # Retries: refused unless a whole number from 0 to 100; a job failing
    # every time, retried once, two seconds at most after its first attempt.
    schedule(unique("bad-retries"), f"{site}/sample/", args=[("retries", "x")])
    schedule(unique("bad-retries"), f"{site}/sample/", args=[("retries", "101")])
    retried = unique("retried")
    failing = ",".join(f"{site}/status/500?n={i}" for i in range(3))
    schedule(retried, failing, args=[("retries", "1")], JOBSTATUS_RETRY_DELAY="2")
    poll_until(
        lambda: node.status(retried),
        lambda job: job["attempt"] == 2 and job["status"] == "pending",
        what="the second attempt, waiting",
    )
    call("GET", "/jobstatus.json", {"job": retried}, name="retry waiting")
    node.wait_status(retried, "failed")
    call("GET", "/jobstatus.json", {"job": retried}, name="retried document")
    node.wait_idle()

    # The store's write lock held by another process: every service that
    # writes answers 503, then 200 once it is free (the readers' 503, with
    # the store stopped, is tests/test_store_outage.py's).
    holder = subprocess.Popen(  # noqa: S603 (this Python)
        [sys.executable, "-c", WRITE_LOCK, str(node.db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for path in JOB_SERVICES:
            if "post" in yaml.safe_load(SPEC.read_text())["paths"][path]:
                call("POST", path, {"job": retried}, name=f"locked {path}")
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    wait_for(lambda: node.get("jobs.json").code == 200, timeout=30, what="the store back")

    # The node's guard: a browser's change from another origin, read-only
    # credentials, and (auth off) a Host the node does not know.
    rebind = {"Host": f"rebind.example:{open_node.port}"}
    for path, operations in yaml.safe_load(SPEC.read_text())["paths"].items():
        for method in operations:
            if method == "post":
                call("POST", path, {"job": "x"}, headers=CROSS_SITE, name=f"cross-site {path}")
                call("POST", path, {"job": "x"}, auth=VIEWER, name=f"viewer {path}")
            else:
                call("GET", path, {"job": "x"}, auth=VIEWER)
            answer = open_node.request(
                method.upper(), path.lstrip("/"), {"job": "x"}, headers=rebind
            )
            seen.append((method.upper(), path, answer))
    return seen


def test_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate_spec(spec)
    assert spec["openapi"].startswith("3.1")


def test_real_answers_match_the_document(
    spec: dict[str, Any], answers: list[tuple[str, str, Response]]
) -> None:
    checked = set()
    for method, path, response in answers:
        if method.lower() not in spec["paths"][path]:
            assert response.code == 405, f"{method} {path}: {response.code}"
            schema = {"components": spec["components"], "$ref": "#/components/schemas/Error"}
            Draft202012Validator(schema).validate(response.json())
            continue
        operation = spec["paths"][path][method.lower()]
        code = str(response.code)
        assert code in operation["responses"], f"{method} {path}: {code} is not documented"
        documented = _resolve(spec, operation["responses"][code])
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        assert content_type in documented["content"], f"{method} {path} {code}: {content_type}"
        if content_type == "application/json":
            schema = {
                "components": spec["components"],
                **documented["content"][content_type]["schema"],
            }
            errors = list(Draft202012Validator(schema).iter_errors(response.json()))
            assert not errors, (
                f"{method} {path} {code}: {errors[0].message} at {list(errors[0].absolute_path)}"
            )
        checked.add((method.lower(), path, code))
    # Every documented answer of the job services was seen for real.
    for path in JOB_SERVICES:
        for method, operation in spec["paths"][path].items():
            for code in operation["responses"]:
                if (method, code) == ("get", "503"):
                    continue  # seen with the store stopped: tests/test_store_outage.py
                assert (method, path, code) in checked, f"{method} {path} {code} never seen"


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = spec
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def test_pause_and_resume_answer_with_their_codes(
    answers: list[tuple[str, str, Response]], named: dict[str, Response]
) -> None:
    """What the pause and resume answers say, beyond their shape."""

    def answer(name: str) -> tuple[int, str | None, str | None]:
        body = named[name].json()
        return named[name].code, body.get("prevstate"), (body.get("job") or {}).get("status")

    assert answer("pause pending") == (200, "pending", "paused")
    assert answer("pause paused") == (200, "paused", "paused")
    assert answer("resume paused") == (200, "paused", "pending")
    assert answer("resume pending") == (200, "pending", "pending")
    assert answer("cancel paused") == (200, "paused", "cancelled")
    assert answer("pause cancelled") == (400, "cancelled", "cancelled")
    assert answer("resume cancelled") == (400, "cancelled", "cancelled")
    assert named["scrapyd cancel paused"].json()["prevstate"] == "paused"
    assert answer("pause without JOBDIR") == (400, "running", "running")
    assert "runs without a JOBDIR" in named["pause without JOBDIR"].json()["message"]
    assert answer("resume running") == (200, "running", "running")
    assert answer("pause completed") == (400, "completed", "completed")
    assert answer("resume completed") == (400, "completed", "completed")
    assert answer("pause running") == (202, "running", "pausing")
    assert answer("pause paused again") == (200, "paused", "paused")
    assert answer("resume the paused job") == (200, "paused", "pending")
    assert [j["status"] for j in named["list paused"].json()["jobs"]] == ["paused"]

    paused = named["paused document"].json()["job"]
    assert paused["pausable"] is True and paused["is_active"] is False
    assert paused["completion_reason"] is None
    resumed = named["resumed document"].json()["job"]
    assert resumed["total_pages_crawled"] == 3
    # A feed per run: the pages before the pause, and the rest.
    assert [feed["attempt"] for feed in resumed["feeds"]] == [1, 1]
    assert sum(feed["items"] for feed in resumed["feeds"]) == 3
    hooks = named["paused webhooks"].json()["deliveries"]
    assert "job.paused" in [delivery["type"] for delivery in hooks]

    assert named["retry waiting"].json()["job"]["retry_at"] is not None
    assert named["run again"].code == 409
    assert named["run document"].json()["job"]["schedule"] == "openapi"
    retried = named["retried document"].json()["job"]
    assert (retried["attempt"], retried["retries"], retried["retry_at"]) == (2, 1, None)
    assert [a["status"] for a in retried["attempts"]] == ["failed", "failed"]


def test_the_guard_answers_in_the_shape_of_scrapyd(
    answers: list[tuple[str, str, Response]], named: dict[str, Response]
) -> None:
    for path in ("/jobcancel.json", "/jobpause.json", "/jobresume.json", "/schedule.json"):
        cross_site, viewer = named[f"cross-site {path}"], named[f"viewer {path}"]
        assert (cross_site.code, viewer.code) == (403, 403), path
        assert "cross-origin" in cross_site.json()["message"]
        assert "only read" in viewer.json()["message"]
    misdirected = [answer for _, _, answer in answers if answer.code == 421]
    assert len(misdirected) == 16
