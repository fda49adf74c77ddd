"""The OpenAPI document of the Scrapyd services is valid OpenAPI 3.1 and true:
real answers of a real node, in every state and with every code, match it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from tests.helpers import ROOT
from tests.scrapyd_node import PROJECT, Response, ScrapydNode, running_node, slow_urls, unique

SPEC = ROOT / "extensions" / "scrapy_jobstatus" / "scrapyd" / "openapi.yaml"
AUTH = ("admin", "s3cret")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-openapi"),
        options={"max_proc": "1", "poll_interval": "0.2"},
        auth=AUTH,
    )


@pytest.fixture(scope="module")
def answers(node: ScrapydNode, site: str) -> list[tuple[str, str, Response]]:
    """Real answers of every service, in every job state, with every code."""
    seen: list[tuple[str, str, Response]] = []

    def call(
        method: str,
        path: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Response:
        response = node.request(method, path.lstrip("/"), params, **kwargs)
        seen.append((method, path, response))
        return response

    def schedule(job: str, urls: str, **settings: str) -> Response:
        params = [("project", PROJECT), ("spider", "batch"), ("jobid", job), ("urls", urls)]
        params += [("setting", f"{k}={v}") for k, v in settings.items()]
        return call("POST", "/schedule.json", params)

    blocker = unique("blocker")
    schedule(blocker, slow_urls(site, 2, 20))
    node.wait_status(blocker, "running")
    call("GET", "/jobstatus.json", {"job": blocker})
    pending = unique("pending")
    schedule(pending, f"{site}/sample/")
    call("GET", "/jobstatus.json", {"job": pending})
    call("GET", "/jobs.json")
    call("POST", "/jobcancel.json", {"job": pending})
    call("POST", "/jobcancel.json", {"job": pending})
    schedule("../bad", f"{site}/sample/")
    schedule(unique("slow"), f"{site}/sample/", JOBSTATUS_TIMEOUT="99999")
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
    for path in (
        "/jobstatus.json",
        "/jobs.json",
        "/jobcancel.json",
        "/joberrors.json",
        "/nodes.json",
        "/webhooks.json",
    ):
        for method, operation in spec["paths"][path].items():
            for code in operation["responses"]:
                assert (method, path, code) in checked, f"{method} {path} {code} never seen"


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = spec
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item
