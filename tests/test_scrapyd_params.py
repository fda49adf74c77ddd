"""The parameters of the node's services, its [jobstatus] options and the
answers streamed a slice at a time, in this process: what a client may send,
the one-line refusal of anything else, and the defaults of every option."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapyd.config import Config
from scrapyd.exceptions import ConfigError
from twisted.python.components import Componentized
from twisted.web import http
from twisted.web.test.requesthelper import DummyRequest

from scrapy_jobstatus._model import shown
from scrapy_jobstatus.scrapyd._node import DEFAULTS, IJobStatusNode, JobStatusNode
from scrapy_jobstatus.scrapyd._params import (
    CANCEL_CODES,
    STATUSES,
    ServiceError,
    read_choice,
    read_flag,
    read_job_id,
    read_name,
    read_seconds,
    read_whole,
    refuse_oversized,
)
from scrapy_jobstatus.scrapyd._resource import JobResource
from scrapy_jobstatus.scrapyd._stream import attachment, csv_chunks, json_chunks
from scrapy_jobstatus.scrapyd.webservice import Cancel, JobStatus
from tests.helpers import render_answer

README = Path(__file__).parent.parent / "README.md"


def refusal(call, *args) -> str:
    with pytest.raises(ServiceError) as raised:
        call(*args)
    assert raised.value.code == http.BAD_REQUEST
    return raised.value.message.decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True)]
    + [("0", False), ("false", False), ("No", False), ("off", False), ("", False)],
)
def test_a_flag_is_one_of_its_words_in_any_case(value: str, expected: bool) -> None:
    assert read_flag("force", value) is expected


def test_any_other_flag_is_refused_naming_the_parameter() -> None:
    assert refusal(read_flag, "series", "2") == "series: '2' is not 0 or 1"
    assert refusal(read_flag, "force", " 1") == "force: ' 1' is not 0 or 1"


def test_a_value_is_quoted_cut_to_forty_characters() -> None:
    assert shown("abc") == "'abc'"
    assert shown(7) == "7"
    assert shown("x" * 1000) == repr("x" * 40) + "..."
    message = refusal(read_name, "project", "a b" * 500)
    assert len(message) < 200 and message.startswith("project: 'a ba b")


def test_names_ids_choices_and_numbers() -> None:
    assert read_name("spider", None) is None and read_name("spider", "a.b-c_1") == "a.b-c_1"
    assert read_job_id("caf\u00e9 #1") == "caf\u00e9 #1"
    assert refusal(read_job_id, "a/b").startswith("job: invalid job id 'a/b'")
    assert read_choice("status", "paused", STATUSES) == "paused"
    assert refusal(read_choice, "format", "xml", ("json", "csv")) == (
        "format: 'xml' is not json or csv"
    )
    assert refusal(read_choice, "status", "done", STATUSES).startswith(
        "status: 'done' is not one of pending, paused, running"
    )
    assert read_whole("limit", "50", 1, 1000) == 50
    assert refusal(read_whole, "limit", "0", 1, 1000) == "limit: must be 1 to 1000, not 0"
    assert refusal(read_whole, "since", "x", 0, 9) == "since: 'x' is not a whole number"
    assert read_seconds("wait", "2.5", 60) == 2.5
    assert refusal(read_seconds, "wait", "nan", 60) == "wait: must be 0 to 60 seconds, not 'nan'"


def test_an_oversized_parameter_is_refused_before_anything_reads_it() -> None:
    request = DummyRequest([b"jobstatus.json"])
    request.args = {b"job": [b"x" * 1025]}
    assert refusal(refuse_oversized, request, 1024) == "job: too long (at most 1024 bytes)"
    request.args = {b"job": [b"x" * 1024]}
    refuse_oversized(request, 1024)


def test_a_request_code_is_the_contracts() -> None:
    assert {str(status): code for status, code in CANCEL_CODES.items()} == {
        "cancelled": 200,
        "cancelling": 202,
    }


def test_a_streamed_json_object_is_one_document() -> None:
    encode = json.JSONEncoder().encode
    head = {"status": "ok", "node_name": "n"}
    chunks = list(json_chunks(encode, head, "errors", [[{"a": 1}], [], [{"a": 2}, {"a": 3}]], "n"))
    assert json.loads(b"".join(chunks)) == {
        **head,
        "errors": [{"a": 1}, {"a": 2}, {"a": 3}],
        "n": 3,
    }
    empty = b"".join(json_chunks(encode, head, "jobs", []))
    assert json.loads(empty) == {**head, "jobs": []}


def test_a_streamed_csv_report_has_its_header_and_no_formulas() -> None:
    rows = [[{"error_id": 1, "error_message": "=cmd()", "extra": "x"}]]
    text = b"".join(csv_chunks(("error_id", "error_message"), rows)).decode()
    assert list(csv.reader(io.StringIO(text))) == [["error_id", "error_message"], ["1", "'=cmd()"]]
    assert attachment("caf\u00e9 1.csv") == (
        "attachment; filename=\"caf__1.csv\"; filename*=UTF-8''caf%C3%A9%201.csv"
    )


def test_a_node_without_options_has_every_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Scrapyd reads ./scrapyd.conf
    conf = tmp_path / "scrapyd.conf"
    conf.write_text(f"[jobstatus]\ndb = {tmp_path / 'jobs.db'}\n")
    node = JobStatusNode.from_config(Config(extra_sources=[str(conf)]))
    try:
        assert node.timeout_max == DEFAULTS["timeout_max"]
        assert node.errors_kept == DEFAULTS["errors_kept"]
        assert node.node_timeout == DEFAULTS["node_timeout"]
        assert node.pending_timeout == DEFAULTS["pending_timeout"]
        assert node.pausable is DEFAULTS["pausable"]
        assert node.shutdown_wait == DEFAULTS["shutdown_wait"]
        assert node.jobdirs.endswith(DEFAULTS["jobdirs"])
        policy = node.webhook_policy
        assert (policy.timeout, policy.retry_delay, policy.max_age) == (
            DEFAULTS["webhook_timeout"],
            DEFAULTS["webhook_retry_delay"],
            DEFAULTS["webhook_max_age"],
        )
    finally:
        node.store.close()


def test_the_readme_gives_the_defaults_of_the_table() -> None:
    text = README.read_text()
    section = text[text.index("| option | default | meaning |") :]
    rows = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, default = line.split("|")[1:3]
        values = re.findall(r"`([^`]*)`", default)
        for name, value in zip(re.findall(r"`(\w+)`", names), values, strict=False):
            rows[name] = value
    for name, value in DEFAULTS.items():
        if name == "timeout_max":
            continue  # the README gives the shipped scrapyd.conf's 1800
        if isinstance(value, bool):
            value = "on" if value else "off"
        assert rows[name] == (f"{value:g}" if isinstance(value, float) else str(value)), name


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("pausable = maybe", "[jobstatus] pausable must be on or off, not 'maybe'"),
        ("node_timeout = 5", "[jobstatus] node_timeout must be 10 seconds or more"),
        ("errors_kept = x", "[jobstatus] errors_kept must be a number, not 'x'"),
        (
            "keep_finished = 1.5",
            "[jobstatus] keep_finished must be a whole number, 0 or more, not '1.5'",
        ),
        ("keep_days = -1", "[jobstatus] keep_days must be a finite number, 0 or more, not '-1'"),
    ],
)
def test_a_bad_option_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "scrapyd.conf"
    conf.write_text(f"[jobstatus]\ndb = {tmp_path / 'jobs.db'}\n{option}\n")
    with pytest.raises(ConfigError) as raised:
        JobStatusNode.from_config(Config(extra_sources=[str(conf)]))
    assert str(raised.value) == message


# -- the resource's answers, rendered in this process ------------------------------


class Root:
    """What a service needs of Scrapyd's web root."""

    node_name = "node-1"

    def __init__(self, node: JobStatusNode, debug: bool = False):
        self.debug = debug
        self.app = Componentized()
        self.app.setComponent(IJobStatusNode, node)


class Broken(JobResource):
    def render_GET(self, txrequest: DummyRequest) -> dict[str, Any]:
        raise RuntimeError("a bug")


@pytest.fixture
def local(tmp_path: Path) -> Iterator[JobStatusNode]:
    node = JobStatusNode(str(tmp_path / "jobs.db"), "node-1")
    yield node
    node.calls.stop()
    node.store.close()


async def render(resource: Any, method: bytes, **args: str) -> tuple[int, bytes, DummyRequest]:
    request = DummyRequest([b""])
    request.method, request.path = method, b"/service.json"
    request.args = {k.encode(): [v.encode()] for k, v in args.items()}
    body = await render_answer(resource, request)
    return request.responseCode or http.OK, body, request


@deferred_f_from_coro_f
async def test_a_job_service_answers_the_contracts_codes(local: JobStatusNode) -> None:
    service = JobStatus(Root(local))
    code, body, _ = await render(service, b"GET")
    assert code == http.BAD_REQUEST
    assert json.loads(body) == {
        "status": "error",
        "message": "'job' parameter is required",
        "node_name": "node-1",
    }
    code, body, _ = await render(service, b"GET", job="nope")
    assert code == http.NOT_FOUND and json.loads(body)["message"] == "job 'nope' not found"
    code, body, request = await render(service, b"POST", job="nope")
    assert code == http.NOT_ALLOWED and request.responseHeaders.getRawHeaders(b"allow")
    assert json.loads(body)["message"] == "method not allowed: use GET"


@deferred_f_from_coro_f
async def test_scrapyd_s_cancel_keeps_its_200_for_a_missing_parameter(local: JobStatusNode) -> None:
    code, body, _ = await render(Cancel(Root(local)), b"POST", job="x")
    assert code == http.OK
    assert json.loads(body)["message"] == "'project' parameter is required"


@deferred_f_from_coro_f
async def test_an_unexpected_error_is_a_500_with_its_traceback_only_in_debug(
    local: JobStatusNode,
) -> None:
    code, body, _ = await render(Broken(Root(local)), b"GET")
    assert code == http.INTERNAL_SERVER_ERROR
    assert json.loads(body)["message"] == "internal error" and b"a bug" not in body
    code, body, _ = await render(Broken(Root(local, debug=True)), b"GET")
    assert code == http.INTERNAL_SERVER_ERROR and b"RuntimeError: a bug" in body
