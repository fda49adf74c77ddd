"""End to end: with Scrapyd's basic auth on, every service asks for
credentials; hostile job ids and parameters are refused before they reach the
store; no answer carries a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
HOSTILE_IDS = [
    "../../etc/passwd",
    "..",
    ".hidden",
    "a/b",
    "a\\b",
    "x' OR '1'='1",
    "x; DROP TABLE jobs; --",
    'x" OR ""="',
    "%2e%2e%2f",
    "a\x00b",
    "a\nb",
    " a",
    "-rf",
    "caf\u00e9",
    "${HOME}",
    "a" * 129,
    "",
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


@pytest.mark.parametrize("job", HOSTILE_IDS)
def test_hostile_job_ids_are_refused(node: ScrapydNode, job: str) -> None:
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
