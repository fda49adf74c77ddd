"""The site guard's rules, without a connection: Go's cross-origin rule, the
host names a node answers to with its auth off, the origins of the options,
the credentials compared in constant time, and a refused request whose body
is never parsed."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pytest
from scrapyd.config import Config
from scrapyd.exceptions import ConfigError
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import Portal
from twisted.web import resource, server
from twisted.web.guard import HTTPAuthSessionWrapper
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from scrapy_jobstatus.scrapyd import guard
from scrapy_jobstatus.scrapyd.guard import (
    CredentialsChecker,
    GuardedRequest,
    GuardedSite,
    KnownHosts,
    RefusalLog,
    Role,
    SiteGuard,
    cross_origin_refusal,
    host_of,
    machine_names,
    parse_origins,
)

HOST = "127.0.0.1:6800"
TRUSTED = frozenset({"https://ops.example.com"})


# -- Go's CrossOriginProtection -------------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"OPTIONS", b"get"])
def test_safe_methods_always_pass(method: bytes) -> None:
    assert cross_origin_refusal(method, "cross-site", "https://evil.example", HOST) is None


@pytest.mark.parametrize("site", ["same-origin", "none", "Same-Origin"])
def test_a_browser_saying_same_origin_or_none_passes(site: str) -> None:
    assert cross_origin_refusal(b"POST", site, "https://evil.example", HOST) is None


@pytest.mark.parametrize("site", ["cross-site", "same-site", "whatever"])
@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"post"])
def test_a_browser_saying_another_site_is_refused(method: bytes, site: str) -> None:
    # Even with an Origin matching the Host: Sec-Fetch-Site decides.
    refusal = cross_origin_refusal(method, site, f"http://{HOST}", HOST)
    assert refusal is not None and "Sec-Fetch-Site" in refusal


def test_a_trusted_origin_passes_whatever_the_browser_says() -> None:
    for site in ("cross-site", None):
        assert cross_origin_refusal(b"POST", site, "https://ops.example.com", HOST, TRUSTED) is None
    assert cross_origin_refusal(
        b"POST", "cross-site", "https://ops.example.com:8443", HOST, TRUSTED
    )


def test_a_request_without_either_header_passes() -> None:
    # scrapyd-client, python-scrapyd-api, curl: no browser, no Origin.
    assert cross_origin_refusal(b"POST", None, None, HOST) is None
    assert cross_origin_refusal(b"POST", "", None, HOST) is None


@pytest.mark.parametrize("origin", [f"http://{HOST}", f"https://{HOST}", "HTTP://127.0.0.1:6800"])
def test_an_origin_matching_the_host_passes(origin: str) -> None:
    # Go's rule: the Host has no scheme; a browser old enough to send no
    # Sec-Fetch-Site is trusted for it.
    assert cross_origin_refusal(b"POST", None, origin, HOST) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:6800",
        "http://127.0.0.1:6801",
        "http://127.0.0.1",
        "null",
        "",
        "http://evil.example",
        "http://127.0.0.1:6800.evil.example",
    ],
)
def test_an_origin_not_matching_the_host_is_refused(origin: str) -> None:
    refusal = cross_origin_refusal(b"POST", None, origin, HOST)
    assert refusal is not None and "Origin" in refusal
    assert cross_origin_refusal(b"POST", None, origin, None) is not None


# -- options ----------------------------------------------------------------------------


def test_origins_are_exact_and_lower_case() -> None:
    assert parse_origins(
        "trusted_origins", " https://A.example.com, http://b:8080  http://[::1]:1"
    ) == {
        "https://a.example.com",
        "http://b:8080",
        "http://[::1]:1",
    }
    assert parse_origins("cors_origins", "") == frozenset()
    assert parse_origins("cors_origins", None) == frozenset()


def test_an_origin_with_its_schemes_default_port_is_the_origin_without() -> None:
    # Browsers never send a default port in Origin.
    listed = "https://trusted.example:443 http://plain.example:80 https://other.example:8443"
    trusted = parse_origins("trusted_origins", listed)
    assert trusted == {
        "https://trusted.example",
        "http://plain.example",
        "https://other.example:8443",
    }
    for origin in (
        "https://trusted.example",
        "https://trusted.example:443",
        "http://plain.example",
    ):
        assert cross_origin_refusal(b"POST", "cross-site", origin, HOST, trusted) is None
        assert cross_origin_refusal(b"POST", None, origin, HOST, trusted) is None
    for origin in ("http://trusted.example", "https://plain.example", "https://other.example"):
        assert cross_origin_refusal(b"POST", "cross-site", origin, HOST, trusted) is not None
    site_guard = SiteGuard("node-1", cors_origins=parse_origins("cors_origins", listed))
    for origin in (b"https://trusted.example", b"https://trusted.example:443"):
        headers = {b"Host": b"n:1", b"Origin": origin, b"Sec-Fetch-Site": b"cross-site"}
        _, _, written = _send(site_guard, headers, b"GET")
        # The origin echoed as the browser sent it.
        assert b"Access-Control-Allow-Origin: " + origin + b"\r\n" in written


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "example.com",
        "https://example.com/",
        "https://example.com/app",
        "https://example.com?x",
        "https://example.com#x",
        "ftp://example.com",
        "https://user:pw@example.com",
        "https://example.com:99999",
        "https://",
    ],
)
def test_a_bad_origin_refuses_to_start_with_one_line(entry: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_origins("trusted_origins", f"https://ok.example {entry}")
    message = str(e.value)
    assert "\n" not in message and "trusted_origins" in message and repr(entry) in message


# -- host names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:6800", "127.0.0.1"),
        ("[::1]:6800", "::1"),
        ("[::1]", "::1"),
        ("LocalHost.:80", "localhost"),
        ("Node-1", "node-1"),
    ],
)
def test_host_of_a_header(header: str, host: str) -> None:
    assert host_of(header) == host


@pytest.fixture
def known() -> KnownHosts:
    return KnownHosts.from_options(
        "scrapyd.example.com, *.nodes.example.org", "worker-7", "http://front.example.net:6800/"
    )


@pytest.mark.parametrize(
    "header",
    [
        "127.0.0.1:6800",
        "10.1.2.3",
        "[::1]:6800",
        "[fe80::1]",
        "localhost:6800",
        "app.localhost:6800",
        "LOCALHOST",
        "worker-7:6800",
        "front.example.net",
        "scrapyd.example.com:6800",
        "scrapyd.example.com.",
        "a.nodes.example.org",
        "b.c.nodes.example.org:1",
    ],
)
def test_known_hosts_are_answered(known: KnownHosts, header: str) -> None:
    assert known.knows(header)


@pytest.mark.parametrize(
    "header",
    [
        "rebind.example:6800",
        "nodes.example.org",
        "evilnodes.example.org",
        "scrapyd.example.com.evil.example",
        "2130706433",
        "localhost.evil.example",
        "",
    ],
)
def test_unknown_hosts_are_refused(known: KnownHosts, header: str) -> None:
    assert not known.knows(header)


def test_the_machines_own_names_are_known(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n127.0.1.1 box.corp.example box  # this machine\n"
        "10.0.0.9 other.corp.example other\n"
    )
    monkeypatch.setattr(guard.socket, "gethostname", lambda: "box")
    assert machine_names(str(hosts)) == {"box", "box.corp.example"}
    assert machine_names(str(tmp_path / "missing")) == {"box"}
    assert KnownHosts.from_options(None, "n", "http://[::]:6800/").knows("n")
    monkeypatch.setattr(guard, "HOSTS_FILE", str(hosts))
    known = KnownHosts.from_options(None, "box", None)
    assert known.knows("box.corp.example:6800") and not known.knows("other.corp.example")


@pytest.mark.parametrize(
    "entry", ["scrapyd.example.com:6800", "http://x.example", "*", "a..b", "-a.b"]
)
def test_a_bad_allowed_host_refuses_to_start_with_one_line(entry: str) -> None:
    with pytest.raises(ConfigError) as e:
        KnownHosts.from_options(f"ok.example {entry}", "node", None)
    assert "\n" not in str(e.value) and repr(entry) in str(e.value)


def test_refusals_are_logged_once_a_while() -> None:
    now = [100.0]
    refusals = RefusalLog(interval=10, clock=lambda: now[0])
    assert refusals.refused("first") == "first"
    assert refusals.refused("second") is None
    assert refusals.refused("third") is None
    now[0] += 10
    assert refusals.refused("fourth") == "fourth (2 more refused since the last line)"
    assert refusals.refused("fifth") is None


# -- credentials ------------------------------------------------------------------------


def test_credentials_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", compare)
    checker = CredentialsChecker({Role.ADMIN: ("admin", "s3cret"), Role.VIEWER: ("eve", "look")})

    def role(username: str, password: str) -> Role | None:
        results: list[Any] = []
        deferred = checker.requestAvatarId(UsernamePassword(username.encode(), password.encode()))
        deferred.addCallbacks(results.append, lambda failure: results.append(None))
        return results[0]

    assert role("admin", "s3cret") is Role.ADMIN
    assert role("eve", "look") is Role.VIEWER
    assert role("admin", "look") is None
    assert role("eve", "s3cret") is None
    assert role("admin", "s3cre") is None
    assert role("", "") is None
    # Every username and every password compared, whichever matched.
    assert len(compared) == 6 * 4
    assert (b"s3cret", b"s3cret") in compared


def _config(tmp_path: Path, scrapyd: str = "", jobstatus: str = "") -> Config:
    path = tmp_path / "scrapyd.conf"
    path.write_text(f"[scrapyd]\n{scrapyd}\n[jobstatus]\n{jobstatus}\n")
    return Config(extra_sources=[str(path)])


@pytest.mark.parametrize(
    ("scrapyd", "jobstatus", "says"),
    [
        ("", "viewer_username = v\nviewer_password = p", "need Scrapyd's username"),
        ("username = a\npassword = b", "viewer_username = v", "go together"),
        ("username = a\npassword = b", "viewer_username = a\nviewer_password = p", "must differ"),
        ("username = a\npassword = b", "viewer_username = v:w\nviewer_password = p", "':'"),
        ("", "trusted_origins = example.com", "trusted_origins"),
        ("", "cors_origins = *", "cors_origins"),
        ("", "allowed_hosts = http://x", "allowed_hosts"),
        ("username = a\npassword = b", "allowed_hosts = x:80", "allowed_hosts"),
    ],
)
def test_bad_options_refuse_to_start_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scrapyd: str, jobstatus: str, says: str
) -> None:
    monkeypatch.delenv("SCRAPYD_USERNAME", raising=False)
    monkeypatch.delenv("SCRAPYD_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as e:
        guard.application(_config(tmp_path, scrapyd, jobstatus))
    assert says in str(e.value) and "\n" not in str(e.value)


# -- the guard in front of a site -------------------------------------------------------


class Recorder(resource.Resource):
    """A site that keeps what reached it, at any path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[bytes, list[bytes]]] = []

    def getChild(self, path: bytes, request: Any) -> resource.Resource:  # noqa: N802 (Twisted's name)
        return self

    def render(self, request: Any) -> bytes:
        self.seen.append(dict(request.args))
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        return b"done"


MULTIPART = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="project"\r\n\r\n'
    b"crawler\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="egg"; filename="x.egg"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
    b"PK-not-really\r\n"
    b"--XyZ--\r\n"
)


def _send(
    site_guard: SiteGuard, headers: dict[bytes, bytes], method: bytes = b"POST"
) -> tuple[GuardedRequest, Recorder, bytes]:
    """A request to the guarded site through Twisted's own request
    machinery, on a channel that goes nowhere."""
    recorder = Recorder()
    channel = DummyChannel()
    channel.site = server.Site(GuardedSite(site_guard, recorder))
    request = GuardedRequest(channel, guard=site_guard)
    for name, value in {b"Content-Type": b"multipart/form-data; boundary=XyZ", **headers}.items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.gotLength(len(MULTIPART))
    request.handleContentChunk(MULTIPART)
    request.requestReceived(method, b"/addversion.json", b"HTTP/1.1")
    return request, recorder, channel.transport.written.getvalue()


def test_a_refused_request_is_answered_before_its_body_is_parsed() -> None:
    site_guard = SiteGuard("node-1")
    request, recorder, written = _send(
        site_guard, {b"Host": b"127.0.0.1:6800", b"Sec-Fetch-Site": b"cross-site"}
    )
    assert recorder.seen == [] and request.args == {}
    assert written.startswith(b"HTTP/1.1 403 ")
    assert b'{"status": "error", "message": "cross-origin request refused' in written
    assert b'"node_name": "node-1"' in written and b"Access-Control" not in written


def test_an_allowed_request_reaches_the_site_without_a_cors_header() -> None:
    request, recorder, written = _send(SiteGuard("node-1"), {b"Host": b"127.0.0.1:6800"})
    assert recorder.seen == [{b"project": [b"crawler"], b"egg": [b"PK-not-really"]}]
    assert written.startswith(b"HTTP/1.1 200 ") and b"Access-Control" not in written


def test_an_unknown_host_is_misdirected_while_auth_is_off() -> None:
    site_guard = SiteGuard("node-1", known_hosts=KnownHosts(frozenset({"node-1"})))
    for method in (b"GET", b"POST"):
        _, recorder, written = _send(site_guard, {b"Host": b"rebind.example:6800"}, method)
        assert recorder.seen == [] and written.startswith(b"HTTP/1.1 421 Misdirected Request\r\n")
        assert b"allowed_hosts" in written
    # HTTP/1.0 without a Host header: answered.
    _, recorder, written = _send(site_guard, {}, b"GET")
    assert written.startswith(b"HTTP/1.1 200 ")


def test_a_listed_origin_alone_may_read_answers() -> None:
    site_guard = SiteGuard("node-1", cors_origins=frozenset({"https://ops.example.com"}))
    listed = {
        b"Host": b"n:1",
        b"Origin": b"https://ops.example.com",
        b"Sec-Fetch-Site": b"cross-site",
    }
    _, _, written = _send(site_guard, listed, b"GET")
    assert b"Access-Control-Allow-Origin: https://ops.example.com\r\n" in written
    assert b"Vary: Origin\r\n" in written
    other = {**listed, b"Origin": b"https://evil.example"}
    _, _, written = _send(site_guard, other, b"GET")
    assert b"Access-Control-Allow-Origin" not in written and b"Vary: Origin\r\n" in written
    # A preflight of a listed origin: answered before any credentials.
    preflight = {**listed, b"Access-Control-Request-Method": b"POST"}
    _, recorder, written = _send(site_guard, preflight, b"OPTIONS")
    assert recorder.seen == [] and written.startswith(b"HTTP/1.1 204 ")
    assert b"Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS\r\n" in written
    assert b"Access-Control-Allow-Headers: Authorization" in written
    # Allowed to read is not allowed to change: that is trusted_origins.
    _, recorder, written = _send(site_guard, listed, b"POST")
    assert recorder.seen == [] and written.startswith(b"HTTP/1.1 403 ")


def test_guard_in_front_of_a_plain_request() -> None:
    # The guarded site answers a request that did not come through the
    # guard's own request class the same way.
    site_guard = SiteGuard("node-1")
    recorder = Recorder()
    request = DummyRequest([b"schedule.json"])
    request.method = b"POST"
    request.requestHeaders.setRawHeaders(b"Sec-Fetch-Site", [b"cross-site"])
    child = GuardedSite(site_guard, recorder).getChildWithDefault(b"schedule.json", request)
    assert child.render(request).startswith(b'{"status": "error"')
    assert request.responseCode == 403 and recorder.seen == []


def test_a_scrapyd_whose_site_is_built_otherwise_refuses_to_start() -> None:
    class OtherRealm:
        resource = resource.Resource()

    wrapped = HTTPAuthSessionWrapper(Portal(OtherRealm()), [])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"supports Scrapyd 1\.6; with Scrapyd \S+, its basic"):
        guard._webroot(wrapped)
    site = resource.Resource()
    assert guard._webroot(site) is site
