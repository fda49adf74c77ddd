"""End to end: with Scrapyd's basic auth on, every service asks for
credentials; hostile job ids and parameters are refused before they reach the
store; no answer carries a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, unique

AUTH = ("admin", "s3cret")
SERVICES = [
    ("GET", "jobstatus.json", {"job": "any"}),
    ("GET", "jobs.json", {}),
    ("POST", "jobcancel.json", {"job": "any"}),
    ("GET", "joberrors.json", {"job": "any"}),
    ("POST", "schedule.json", {"project": PROJECT, "spider": "batch"}),
    ("POST", "cancel.json", {"project": PROJECT, "job": "any"}),
    ("GET", "status.json", {"job": "any"}),
    ("GET", "listjobs.json", {}),
]
# Ids Scrapyd cannot run (its launcher names files after them) or that are
# empty or over-long: refused.
REFUSED_IDS = ["../../etc/passwd", "a/b", "a\x00b", "a\nb", "\x1b[31mred", "a" * 201, ""]
# Everything else Scrapyd accepts is a job id, hostile or not: it only ever
# reaches SQL as a bound value and never becomes a path of ours.
HOSTILE_VALID_IDS = [
    "..",
    ".hidden",
    "a\\b",
    "x' OR '1'='1",
    "x; DROP TABLE jobs; --",
    'x" OR ""="',
    "%2e%2e%2f",
    " a",
    "-rf",
    "caf\u00e9 \u65e5\u672c",
    "${HOME}",
    "<img src=x onerror=alert(1)>",
    "2026-11-29T16:39:20.123456+00:00",
    "a" * 200,
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-auth"), options={"poll_interval": "0.2"}, auth=AUTH
    )


@pytest.mark.parametrize(("method", "endpoint", "params"), SERVICES)
def test_every_service_needs_credentials(
    node: ScrapydNode, method: str, endpoint: str, params: dict[str, str]
) -> None:
    assert node.request(method, endpoint, params, auth=None).code == 401
    assert node.request(method, endpoint, params, auth=("admin", "wrong")).code == 401
    assert node.request(method, endpoint, params).code != 401


def test_a_job_runs_end_to_end_with_auth(node: ScrapydNode, site: str) -> None:
    job = unique("auth")
    assert node.schedule(job=job, urls=f"{site}/sample/").json()["status"] == "ok"
    done = node.wait_status(job, "completed")
    assert done["total_pages_crawled"] == 1
    assert node.get("joberrors.json", {"job": job}).json()["error_count"] == 0


@pytest.mark.parametrize("job", REFUSED_IDS)
def test_unrunnable_job_ids_are_refused(node: ScrapydNode, job: str) -> None:
    before = node.get("jobs.json").json()["total"]
    for method, endpoint in (
        ("GET", "jobstatus.json"),
        ("POST", "jobcancel.json"),
        ("GET", "joberrors.json"),
    ):
        answer = node.request(method, endpoint, {"job": job})
        assert answer.code == 400, (endpoint, job, answer.body)
        body = answer.json()
        assert body["status"] == "error" and body["message"].startswith("job: invalid job id")
        assert b"Traceback" not in answer.body
    schedule = node.post(
        "schedule.json", {"project": PROJECT, "spider": "batch", "jobid": job}
    ).json()
    assert schedule["status"] == "error"
    assert node.get("jobs.json").json()["total"] == before
    assert not list(node.workdir.glob("**/passwd*"))


def test_any_id_scrapyd_can_run_is_a_job_kept_exactly(node: ScrapydNode, site: str) -> None:
    for job in HOSTILE_VALID_IDS:
        answer = node.schedule(job=job, urls=f"{site}/sample/apple,{site}/status/404").json()
        assert answer == {"status": "ok", "jobid": job, "node_name": answer["node_name"]}
    for job in HOSTILE_VALID_IDS:
        done = node.wait_status(job, "completed", "failed", "cancelled")
        assert (done["job_id"], done["status"]) == (job, "completed"), done["error_message"]
        assert done["total_pages_crawled"] == 2 and done["error_count"] == 1
        errors = node.get("joberrors.json", {"job": job, "format": "csv"})
        assert errors.code == 200 and errors.body.count(b"\r\n") == 2
        disposition = errors.headers["Content-Disposition"]
        assert disposition.isascii() and "\n" not in disposition and "/" not in disposition
        cancel = node.post("jobcancel.json", {"job": job})
        assert cancel.code == 400 and cancel.json()["job"]["job_id"] == job
    node.wait_idle()
    finished = {job["id"] for job in node.get("listjobs.json").json()["finished"]}
    assert set(HOSTILE_VALID_IDS) <= finished
    listed = node.get("jobs.json", {"limit": 1000}).json()["jobs"]
    assert set(HOSTILE_VALID_IDS) <= {job["job_id"] for job in listed}
    # A job id is used once: a second schedule with it is refused and the job
    # it names is left alone.
    again = node.schedule(job="..", urls=f"{site}/sample/").json()
    assert again["status"] == "error" and "already used" in again["message"]
    assert node.status("..")["total_pages_crawled"] == 2


@pytest.mark.parametrize(
    "params",
    [
        {"project": "x' OR 1=1 --"},
        {"spider": "../../batch"},
        {"status": "running' OR '1'='1"},
        {"limit": "1; DROP TABLE jobs"},
        {"offset": "1e9999"},
    ],
)
def test_hostile_filters_are_refused(node: ScrapydNode, params: dict[str, str]) -> None:
    answer = node.get("jobs.json", params)
    assert answer.code == 400 and b"Traceback" not in answer.body
    assert node.get("jobs.json").code == 200


def test_undecodable_parameters_are_refused_without_a_traceback(node: ScrapydNode) -> None:
    for endpoint, params in (
        ("jobstatus.json", {"job": b"\xff\xfe"}),
        ("joberrors.json", {"job": b"\xff\xfe"}),
        ("jobs.json", {"project": b"\xff"}),
    ):
        answer = node.get(endpoint, params)
        assert answer.code == 400, (endpoint, answer.body)
        assert b"Traceback" not in answer.body and b'File "' not in answer.body


def test_oversized_request_is_refused(node: ScrapydNode) -> None:
    answer = node.post("jobcancel.json", {"job": "x" * 100_000})
    assert answer.code == 400 and "too long" in answer.json()["message"]


def test_scrapyd_cancel_with_a_hostile_id_leaves_the_store_alone(node: ScrapydNode) -> None:
    before = node.get("jobs.json").json()["total"]
    answer = node.post("cancel.json", {"project": PROJECT, "job": "../../etc/passwd"}).json()
    assert answer["status"] == "ok" and answer["prevstate"] is None
    assert node.get("jobs.json").json()["total"] == before


def test_a_refused_request_is_one_log_line_without_a_traceback(node: ScrapydNode) -> None:
    start = len(node.log.read_text())
    refusals = [
        ("GET", "jobstatus.json", {"job": "a/b"}),
        ("GET", "jobs.json", {"limit": "0"}),
        ("POST", "jobcancel.json", {}),
        ("POST", "cancel.json", {"project": PROJECT}),
    ]
    for method, endpoint, params in refusals:
        answer = node.request(method, endpoint, params)
        assert answer.json()["status"] == "error", (endpoint, answer.body)

    def logged() -> list[str] | None:
        lines = node.log.read_text()[start:].splitlines()
        refused = [line for line in lines if "Refused" in line]
        return lines if len(refused) == len(refusals) else None

    lines = wait_for(logged, timeout=10, what="one log line per refused request")
    assert not any("Traceback" in line for line in lines), lines
    assert [line.count("Refused") for line in lines if "Refused" in line] == [1] * len(refusals)
