"""End to end, a node's site guard over HTTP: host names with the node's auth
off (DNS rebinding), CORS headers, the cross-origin rule for clients that are
no browser, no GET or HEAD of any service changing anything, and the
clients the README names still working.

Every request goes to the node on 127.0.0.1; a ``Host`` header naming
another host is only a header.
"""

from __future__ import annotations

import configparser
import http.client
import socket
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from scrapy.utils.misc import load_object
from scrapyd_api import ScrapydAPI

from tests.helpers import ROOT
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique

AUTH = ("admin", "s3cret")
LISTED = "http://ops.example:8080"
TRUSTED = "https://deploy.example"
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods")
# The services of the shipped scrapyd.conf that only read (GET), and those
# that change things (POST only): no GET changes anything.
READ_SERVICES = {
    "status.json",
    "listprojects.json",
    "listversions.json",
    "listspiders.json",
    "listjobs.json",
    "daemonstatus.json",
    "jobstatus.json",
    "jobs.json",
    "joberrors.json",
    "nodes.json",
    "webhooks.json",
    "events.json",
    "listschedules.json",
    "metrics",
    "dashboard",
}
CHANGE_SERVICES = {
    "schedule.json",
    "cancel.json",
    "addversion.json",
    "delproject.json",
    "delversion.json",
    "jobcancel.json",
    "jobpause.json",
    "jobresume.json",
    "addschedule.json",
    "delschedule.json",
    "runschedule.json",
}


def shipped_services() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "scrapyd.conf")
    return dict(config["services"])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """Auth off: the Host is checked."""
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-open"),
        options={"poll_interval": "0.2", "max_proc": "4"},
        jobstatus={
            "allowed_hosts": "scrapyd.example.com *.nodes.example.org",
            "cors_origins": LISTED,
            "trusted_origins": TRUSTED,
        },
    )


@pytest.fixture(scope="module")
def auth_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """Auth on, nothing deployed, the guard's options left out."""
    node = ScrapydNode(tmp_path_factory.mktemp("scrapyd-auth-hosts"), auth=AUTH)
    try:
        yield node.start()
    finally:
        node.stop()


def raw_get(node: ScrapydNode, path: str, host: str | None) -> tuple[int, bytes]:
    """A GET with exactly this Host header, or none at all."""
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


# -- host names -------------------------------------------------------------------------


def test_an_unknown_host_is_refused_while_auth_is_off(node: ScrapydNode, site: str) -> None:
    host = {"Host": f"rebind.example:{node.port}"}
    before = node.get("jobs.json").json()["total"]
    for method, path in (("GET", "jobs.json"), ("GET", "dashboard"), ("GET", "")):
        answer = node.request(method, path, headers=host)
        assert answer.code == 421, path
        body = answer.json()
        assert body["status"] == "error" and "allowed_hosts" in body["message"]
        assert body["node_name"] == node.get("daemonstatus.json").json()["node_name"]
    job = unique("rebound")
    answer = node.post(
        "schedule.json",
        {"project": PROJECT, "spider": "batch", "jobid": job, "urls": f"{site}/sample/"},
        headers=host,
    )
    assert answer.code == 421
    assert node.get("jobs.json").json()["total"] == before
    assert "unknown host 'rebind.example:" in node.log.read_text()
    # The status line's reason phrase, which Twisted does not know for 421.
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        connection.request("GET", "/jobs.json", headers=host)
        answer_line = connection.getresponse()
        assert (answer_line.status, answer_line.reason) == (421, "Misdirected Request")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "127.0.0.1",
        "[::1]:{port}",
        "localhost:{port}",
        "localhost",
        "scrapyd.example.com:{port}",
        "a.nodes.example.org",
        socket.gethostname(),
        None,
    ],
)
def test_known_hosts_and_ip_literals_are_answered(node: ScrapydNode, host: str | None) -> None:
    code, body = raw_get(node, "/daemonstatus.json", host and host.format(port=node.port))
    assert code == 200, body


def test_the_host_is_not_checked_with_auth_on(auth_node: ScrapydNode) -> None:
    host = {"Host": f"rebind.example:{auth_node.port}"}
    assert auth_node.get("daemonstatus.json", headers=host, auth=None).code == 401
    assert auth_node.get("daemonstatus.json", headers=host).code == 200


# -- CORS -------------------------------------------------------------------------------


def test_no_answer_allows_another_origin_by_default(auth_node: ScrapydNode) -> None:
    paths = ["", "jobs", "logs/", "dashboard/app.js", "no-such-path", *shipped_services()]
    origin = {"Origin": "http://evil.example"}
    for path in paths:
        for method in ("GET", "OPTIONS"):
            answer = auth_node.request(method, path, headers=origin)
            assert answer.code not in (401, 500), (method, path, answer.code)
            assert not any(name in answer.headers for name in CORS_HEADERS), (method, path)
            assert "Vary" not in answer.headers
    assert auth_node.get("jobs.json", headers=origin, auth=None).code == 401


def test_a_listed_origin_alone_may_read(node: ScrapydNode) -> None:
    listed = node.get("jobs.json", headers={"Origin": LISTED, "Sec-Fetch-Site": "cross-site"})
    assert listed.code == 200
    assert listed.headers["Access-Control-Allow-Origin"] == LISTED
    assert listed.headers["Vary"] == "Origin"
    other = node.get("jobs.json", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers and other.headers["Vary"] == "Origin"
    preflight = node.request(
        "OPTIONS",
        "jobcancel.json",
        headers={"Origin": LISTED, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == LISTED
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    # Reading is not changing: a listed origin's POST is refused unless it
    # is trusted too.
    cancel = node.post(
        "jobcancel.json", {"job": "x"}, headers={"Origin": LISTED, "Sec-Fetch-Site": "cross-site"}
    )
    assert cancel.code == 403 and "cross-origin" in cancel.json()["message"]


# -- the cross-origin rule for what is no browser -------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 404),
        ({"Origin": "http://127.0.0.1:{port}"}, 404),
        ({"Origin": "http://localhost:{port}"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}, 404),
        ({"Sec-Fetch-Site": "none"}, 404),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site", "Origin": TRUSTED}, 404),
        ({"Origin": TRUSTED}, 404),
    ],
)
def test_the_cross_origin_rule_over_http(
    node: ScrapydNode, headers: dict[str, str], code: int
) -> None:
    headers = {name: value.format(port=node.port) for name, value in headers.items()}
    answer = node.post("jobcancel.json", {"job": "no-such-job"}, headers=headers)
    assert answer.code == code, answer.body
    assert answer.json()["status"] == "error"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_every_method_but_get_head_options_is_checked(node: ScrapydNode, method: str) -> None:
    answer = node.request(method, "delproject.json", headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.code == 403
    assert PROJECT in node.get("listprojects.json").json()["projects"]


# -- no GET changes anything ----------------------------------------------------------------


def test_the_services_that_read_and_those_that_change_are_known() -> None:
    services = shipped_services()
    assert set(services) == READ_SERVICES | CHANGE_SERVICES
    for name, path in services.items():
        with warnings.catch_warnings():
            # Twisted's static module makes a deprecated error page at import.
            warnings.simplefilter("ignore", DeprecationWarning)
            cls = load_object(path)
        if name in READ_SERVICES:
            assert hasattr(cls, "render_GET") and not hasattr(cls, "render_POST"), name
        else:
            assert hasattr(cls, "render_POST") and not hasattr(cls, "render_GET"), name


def test_no_get_or_head_changes_anything(node: ScrapydNode, site: str) -> None:
    running = unique("running")
    node.schedule(job=running, urls=slow_urls(site, 2, 60))
    node.wait_status(running, "running")
    versions = node.get("listversions.json", {"project": PROJECT}).json()["versions"]
    total = node.get("jobs.json").json()["total"]
    job = unique("by-get")
    params = {
        "project": PROJECT,
        "spider": "batch",
        "jobid": job,
        "job": running,
        "version": versions[0],
        "urls": f"{site}/sample/",
        "force": "1",
        "signal": "KILL",
    }
    try:
        for name in shipped_services():
            for method in ("GET", "HEAD"):
                answer = node.request(method, name, params, timeout=60)
                if name in READ_SERVICES:
                    assert answer.code in (200, 400, 404), (method, name, answer.code)
                elif answer.code == 200 and method == "GET":
                    # Scrapyd's own services answer a wrong method with a 200.
                    assert "UnsupportedMethod" in answer.json()["message"], name
                else:
                    assert answer.code in (200, 405), (method, name, answer.code)
        assert node.status(running)["status"] == "running"
        assert node.get("jobs.json").json()["total"] == total
        assert node.get("listversions.json", {"project": PROJECT}).json()["versions"] == versions
    finally:
        node.post("jobcancel.json", {"job": running, "force": "1"})
        node.wait_status(running, "cancelled")


# -- the clients the README names ---------------------------------------------------------


def test_python_scrapyd_api_and_requests_still_work(
    node: ScrapydNode, auth_node: ScrapydNode, site: str
) -> None:
    api = ScrapydAPI(node.url.rstrip("/"))
    assert PROJECT in api.list_projects()
    job = api.schedule(PROJECT, "batch", jobid=unique("api"), urls=slow_urls(site, 2, 60))
    node.wait_status(job, "running")
    assert api.cancel(PROJECT, job) == "running"
    node.wait_status(job, "cancelled")
    answer: Any = requests.post(
        node.url + "schedule.json",
        data={"project": PROJECT, "spider": "batch", "urls": f"{site}/sample/"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    node.wait_status(answer.json()["jobid"], "completed")
    # With the node's credentials.
    api = ScrapydAPI(auth_node.url.rstrip("/"), auth=AUTH)
    assert api.list_projects() == []
    answer = requests.post(
        auth_node.url + "cancel.json", data={"project": "p", "job": "j"}, auth=AUTH, timeout=30
    )
    assert answer.status_code == 200 and "not found" in answer.json()["message"]
    wrong = requests.get(auth_node.url + "listjobs.json", auth=("admin", "s3cre"), timeout=30)
    assert wrong.status_code == 401
