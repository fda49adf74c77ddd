"""The node on a network: one wrapper of the whole site Scrapyd serves (its
own services, the job services, the dashboard, logs and any service added
later), installed by ``application = scrapy_jobstatus.scrapyd.guard.application``
in the ``[scrapyd]`` section of scrapyd.conf.

- Cross-origin requests: a state-changing request (any method but GET, HEAD
  and OPTIONS) that a browser says comes from another origin is refused with
  403, before its body is read: the rule of Go's
  ``net/http.CrossOriginProtection``. Clients that are no browser send neither
  ``Sec-Fetch-Site`` nor ``Origin`` and pass.
- DNS rebinding: with the node's auth off, a ``Host`` that is a domain name
  the node does not know is refused with 421.
- CORS: no ``Access-Control-Allow-Origin`` (Scrapyd's services send ``*``)
  unless ``cors_origins`` lists the request's origin; then that one.
- Credentials: Scrapyd's, compared in constant time, may do everything;
  ``viewer_username`` and ``viewer_password`` may only read.

Options in the ``[jobstatus]`` section: ``trusted_origins``,
``allowed_hosts``, ``cors_origins``, ``viewer_username``, ``viewer_password``.
"""

from __future__ import annotations

import copy
import functools
import hmac
import io
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapyd import app as scrapyd_app
from scrapyd.basicauth import PublicHTMLRealm
from scrapyd.exceptions import ConfigError
from twisted.application.internet import TCPServer, UNIXServer
from twisted.application.service import IServiceCollection
from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import http, resource, server
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from zope.interface import implementer

if TYPE_CHECKING:
    from scrapyd.config import Config
    from twisted.application.service import Application

log = Logger(namespace="scrapy_jobstatus.scrapyd.guard")

SECTION = "jobstatus"
SUPPORTED_SCRAPYD = "1.6"
# The server is not the one the name is meant for (RFC 9110); Twisted
# knows no reason phrase for it.
MISDIRECTED_REQUEST = 421
REASON_PHRASES = {MISDIRECTED_REQUEST: b"Misdirected Request"}
# The port an origin has when it names none (browsers leave it out).
DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
# What a browser says of a request's origin that is the node's own page or
# the user's own action (typed address, bookmark).
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})
# Scrapyd's services allow every origin; the guard decides instead.
CORS_HEADERS = (
    b"Access-Control-Allow-Origin",
    b"Access-Control-Allow-Methods",
    b"Access-Control-Allow-Headers",
)
CORS_METHODS = "GET, HEAD, POST, OPTIONS"
CORS_REQUEST_HEADERS = "Authorization, Content-Type, X-Requested-With"
CORS_MAX_AGE = "600"
# One refusal line this often at most; those in between are counted in it.
REFUSAL_LOG_INTERVAL = 10.0
HOSTS_FILE = "/etc/hosts"
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class Role(Enum):
    """What credentials may do."""

    ADMIN = "admin"
    VIEWER = "viewer"


# -- the rules (pure functions) ---------------------------------------------------


def cross_origin_refusal(
    method: bytes,
    sec_fetch_site: str | None,
    origin: str | None,
    host: str | None,
    trusted_origins: frozenset[str] = frozenset(),
) -> str | None:
    """Why a request is a cross-origin state change, or None if it may pass:
    Go's ``CrossOriginProtection.Check``."""
    if method.upper() in SAFE_METHODS:
        return None
    if sec_fetch_site:
        if sec_fetch_site.strip().lower() in SAME_ORIGIN_SITES:
            return None
        if origin is not None and normal_origin(origin) in trusted_origins:
            return None
        return f"cross-origin request refused (Sec-Fetch-Site: {sec_fetch_site[:40]})"
    if origin is None:
        # Neither header: not a browser, or a browser's same-origin request.
        return None
    if host and urlsplit(origin.strip()).netloc.lower() == host.strip().lower():
        return None
    if normal_origin(origin) in trusted_origins:
        return None
    return "cross-origin request refused (Origin does not match Host)"


def parse_origins(option: str, value: str | None) -> frozenset[str]:
    """The exact origins ``scheme://host[:port]`` an option lists (comma or
    space separated); a ConfigError names the first that is not one."""
    origins = set()
    for entry in _entries(value):
        parts = urlsplit(entry)
        try:
            parts.port  # noqa: B018 (a bad port raises)
        except ValueError:
            parts = parts._replace(netloc="")
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
            or parts.path
            or parts.query
            or parts.fragment
            or entry.endswith(("?", "#"))
        ):
            raise ConfigError(
                f"[{SECTION}] {option}: {entry!r} is not an origin such as https://host:port"
            )
        origins.add(normal_origin(entry))
    return frozenset(origins)


def normal_origin(origin: str) -> str:
    """An origin as it is compared: lower case, without the default port of
    its scheme (``https://h:443`` is ``https://h``, as browsers send it)."""
    value = origin.strip().lower()
    scheme, sep, rest = value.partition("://")
    port = DEFAULT_PORTS.get(scheme)
    if sep and port is not None and rest.endswith(f":{port}"):
        return f"{scheme}://{rest[: -len(str(port)) - 1]}"
    return value


def host_of(header: str) -> str:
    """The host name or address of a ``Host`` header, lower case, without
    its port, brackets or final dot."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".") if value not in (".", "") else value


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class KnownHosts:
    """The host names a node answers to: its own, ``localhost`` and those
    ``allowed_hosts`` lists (``*.example.com``: any name under example.com).
    IP literals are always known: a page that rebinds a name of its own to
    the node still sends that name."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()

    def knows(self, header: str) -> bool:
        host = host_of(header)
        if is_ip_literal(host) or host == "localhost" or host.endswith(".localhost"):
            # RFC 6761: browsers resolve *.localhost to the loopback address.
            return True
        return host in self.names or host.endswith(self.suffixes)

    @classmethod
    def from_options(
        cls, allowed_hosts: str | None, node_name: str, node_url: str | None
    ) -> KnownHosts:
        names = {name.lower().rstrip(".") for name in machine_names()}
        names.add(node_name.lower().rstrip("."))
        if node_url:
            url_host = urlsplit(node_url).hostname
            if url_host:
                names.add(url_host.rstrip("."))
        suffixes = []
        for entry in _entries(allowed_hosts):
            name = entry.lower().rstrip(".")
            wildcard = name.startswith("*.")
            if wildcard:
                name = name[2:]
            if not _is_host_name(name):
                raise ConfigError(
                    f"[{SECTION}] allowed_hosts: {entry!r} is not a host name "
                    "(such as scrapyd.example.com or *.example.com, without a port)"
                )
            if wildcard:
                suffixes.append("." + name)
            else:
                names.add(name)
        return cls(frozenset(names), tuple(suffixes))


def machine_names(hosts_file: str | None = None) -> set[str]:
    """This machine's host names, without a DNS query: its host name, the
    short one, and the names ``/etc/hosts`` gives it (where
    ``socket.getfqdn()`` usually finds its full name)."""
    hostname = socket.gethostname().lower()
    names = {hostname, hostname.split(".", 1)[0]}
    try:
        with open(hosts_file or HOSTS_FILE, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) > 1 and hostname in (name.lower() for name in fields[1:]):
                    names.update(name.lower() for name in fields[1:])
    except OSError:
        pass
    return {name for name in names if name}


def _is_host_name(name: str) -> bool:
    return bool(name) and len(name) <= 253 and all(map(_HOST_LABEL.fullmatch, name.split(".")))


def _entries(value: str | None) -> list[str]:
    return [entry for entry in re.split(r"[\s,]+", value or "") if entry]


# -- credentials ----------------------------------------------------------------------


@implementer(ICredentialsChecker)
class CredentialsChecker:
    """Scrapyd's credentials (everything) and the read-only ones, compared
    in constant time; the avatar id is the role."""

    credentialInterfaces = (IUsernamePassword,)  # noqa: N815 (Twisted's name)

    def __init__(self, accounts: dict[Role, tuple[str, str]]):
        self.accounts = {
            role: (username.encode(), password.encode())
            for role, (username, password) in accounts.items()
        }

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Role]:  # noqa: N802 (Twisted's name)
        found = None
        for role, (username, password) in self.accounts.items():
            # Both compared, whatever the first says: no early way out to time.
            same_user = hmac.compare_digest(credentials.username, username)
            same_password = hmac.compare_digest(credentials.password, password)
            if same_user & same_password and found is None:
                found = role
        if found is None:
            return defer.fail(cred_error.UnauthorizedLogin())
        return defer.succeed(found)


@implementer(IRealm)
class NodeRealm:
    """The site for Scrapyd's credentials; a read-only view of it for the
    viewer's."""

    def __init__(self, webroot: resource.Resource, node_name: str):
        self.webroot = webroot
        self.node_name = node_name

    def requestAvatar(self, avatar_id: Role, mind: Any, *interfaces: Any) -> Any:  # noqa: N802 (Twisted's name)
        if resource.IResource not in interfaces:
            raise NotImplementedError
        if avatar_id is Role.VIEWER:
            return resource.IResource, ReadOnly(self.webroot, self.node_name), lambda: None
        return resource.IResource, self.webroot, lambda: None


class ReadOnly(resource.Resource):
    """The site as the viewer's credentials see it: any state change is
    refused with 403."""

    def __init__(self, site: resource.Resource, node_name: str):
        super().__init__()
        self.site = site
        self.node_name = node_name

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802 (Twisted's name)
        request.read_only = True
        if request.method.upper() not in SAFE_METHODS:
            return Refusal(http.FORBIDDEN, "these credentials may only read (GET)", self.node_name)
        return self.site.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        request.read_only = True
        return self.site.render(request)


def is_read_only(request: Any) -> bool:
    """Whether the request's credentials may only read (the dashboard hides
    what they may not do)."""
    return bool(getattr(request, "read_only", False))


# -- the wrapper ----------------------------------------------------------------------


class Refusal(resource.Resource):
    """An error answer in the shape of Scrapyd's services."""

    isLeaf = True

    def __init__(self, code: int, message: str, node_name: str):
        super().__init__()
        self.code = code
        self.message = message
        self.node_name = node_name

    def render(self, request: Any) -> bytes:
        request.setResponseCode(self.code, REASON_PHRASES.get(self.code))
        body = {"status": "error", "message": self.message, "node_name": self.node_name}
        content = json.dumps(body).encode() + b"\n"
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(content)))
        return content


class Preflight(resource.Resource):
    """The answer to a CORS preflight from a listed origin, given before
    the credentials are asked for (a browser sends none with it); the guard
    adds its headers."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(http.NO_CONTENT)
        return b""


class RefusalLog:
    """One log line per refusal, at most one every ``interval`` seconds: a
    page trying again and again does not fill the log."""

    def __init__(
        self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self.interval = interval
        self.clock = clock
        self.last = -float("inf")
        self.skipped = 0

    def refused(self, line: str) -> str | None:
        """The line written, or None if it was only counted."""
        now = self.clock()
        if now - self.last < self.interval:
            self.skipped += 1
            return None
        if self.skipped:
            line += f" ({self.skipped} more refused since the last line)"
        self.last, self.skipped = now, 0
        log.warn("{line}", line=line)
        return line


class SiteGuard:
    """The rules of the whole site, and the answers it gives before the site
    sees a request."""

    def __init__(
        self,
        node_name: str,
        *,
        trusted_origins: frozenset[str] = frozenset(),
        cors_origins: frozenset[str] = frozenset(),
        known_hosts: KnownHosts | None = None,
        refusal_log: RefusalLog | None = None,
    ):
        self.node_name = node_name
        self.trusted_origins = trusted_origins
        self.cors_origins = cors_origins
        # None: the Host is not checked (the node's auth is on).
        self.known_hosts = known_hosts
        self.refusal_log = refusal_log or RefusalLog()

    @classmethod
    def from_config(cls, config: Config, *, auth: bool) -> SiteGuard:
        options = dict(config.items(SECTION, default=[]))
        node_name = config.get("node_name", socket.gethostname())
        cors_origins = parse_origins("cors_origins", options.get("cors_origins"))
        # Checked either way: a bad entry refuses to start, auth on or off.
        # The node's URL, as nodes.json shows it (from bind_address unless
        # node_url is set).
        bind_address = os.getenv("SCRAPYD_BIND_ADDRESS") or config.get("bind_address", "127.0.0.1")
        if ":" in bind_address:
            bind_address = f"[{bind_address}]"
        node_url = options.get("node_url") or f"http://{bind_address}/"
        known_hosts = KnownHosts.from_options(options.get("allowed_hosts"), node_name, node_url)
        return cls(
            node_name,
            trusted_origins=parse_origins("trusted_origins", options.get("trusted_origins")),
            cors_origins=cors_origins,
            # With auth on, a rebound page has no credentials: any Host.
            known_hosts=None if auth else known_hosts,
        )

    def answer(self, request: Any) -> resource.Resource | None:
        """The guard's own answer to a request (a refusal, a preflight), or
        None if the site answers it. Only the headers are read."""
        host = _header(request, b"host")
        if self.known_hosts is not None and host is not None and not self.known_hosts.knows(host):
            self.refusal_log.refused(f"Refused a request for the unknown host {host[:100]!r}")
            return Refusal(
                MISDIRECTED_REQUEST,
                "unknown host name: add it to allowed_hosts in [jobstatus] of scrapyd.conf",
                self.node_name,
            )
        origin = _header(request, b"origin")
        refusal = cross_origin_refusal(
            request.method,
            _header(request, b"sec-fetch-site"),
            origin,
            host,
            self.trusted_origins,
        )
        if refusal is not None:
            # The path alone: a query string may hold a secret.
            path = request.uri.split(b"?", 1)[0][:200].decode(errors="replace")
            self.refusal_log.refused(
                f"Refused {request.method[:10].decode(errors='replace')} {path!r} from origin "
                f"{(origin or '?')[:100]!r}: {refusal}"
            )
            return Refusal(http.FORBIDDEN, refusal, self.node_name)
        if (
            request.method == b"OPTIONS"
            and self.cors_origin(request) is not None
            and request.getHeader(b"access-control-request-method") is not None
        ):
            return Preflight()
        return None

    def cors_origin(self, request: Any) -> str | None:
        origin = _header(request, b"origin")
        if origin is not None and normal_origin(origin) in self.cors_origins:
            return origin
        return None

    def set_cors_headers(self, request: Any) -> None:
        """Before the answer's headers go: only a listed origin is allowed,
        that one alone."""
        for name in CORS_HEADERS:
            request.responseHeaders.removeHeader(name)
        if not self.cors_origins:
            return
        request.responseHeaders.addRawHeader(b"Vary", b"Origin")
        origin = self.cors_origin(request)
        if origin is None:
            return
        request.setHeader(b"Access-Control-Allow-Origin", origin.encode())
        if request.method == b"OPTIONS":
            request.setHeader(b"Access-Control-Allow-Methods", CORS_METHODS.encode())
            request.setHeader(b"Access-Control-Allow-Headers", CORS_REQUEST_HEADERS.encode())
            request.setHeader(b"Access-Control-Max-Age", CORS_MAX_AGE.encode())


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


class GuardedSite(resource.Resource):
    """The resource a node's web server serves: the guard's answer, or the
    site (behind the node's credentials)."""

    def __init__(self, guard: SiteGuard, site: Any):
        super().__init__()
        self.guard = guard
        self.site = site

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802 (Twisted's name)
        answer = self.answer(request)
        if answer is not None:
            return answer
        return self.site.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        answer = self.answer(request)
        if answer is not None:
            return answer.render(request)
        return self.site.render(request)

    def answer(self, request: Any) -> resource.Resource | None:
        if isinstance(request, GuardedRequest):  # asked when it came
            return request.guard_answer
        return self.guard.answer(request)


class GuardedRequest(server.Request):
    """A request to the node: one the guard answers itself is answered
    without its body being parsed, and every answer gets the guard's CORS
    headers."""

    guard_answer: resource.Resource | None = None
    read_only = False

    def __init__(self, *args: Any, guard: SiteGuard, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.guard = guard

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.method, self.uri = command, path
        self.guard_answer = self.guard.answer(self)
        if self.guard_answer is not None:
            # Nothing of a refused request's body is read: no form parsed, no
            # upload kept.
            self.content.close()
            self.content = io.BytesIO()
        super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            self.guard.set_cors_headers(self)
        super().write(data)


# -- the application --------------------------------------------------------------------


def application(config: Config) -> Application:
    """Scrapyd's application, its web server serving the site through the
    guard: ``application = scrapy_jobstatus.scrapyd.guard.application`` in
    the ``[scrapyd]`` section of scrapyd.conf."""
    username = os.getenv("SCRAPYD_USERNAME") or config.get("username", "")
    password = os.getenv("SCRAPYD_PASSWORD") or config.get("password", "")
    auth = bool(username and password)
    accounts = {Role.ADMIN: (username, password)}
    options = dict(config.items(SECTION, default=[]))
    viewer = (options.get("viewer_username") or "", options.get("viewer_password") or "")
    if any(viewer):
        _check_viewer(viewer, username, auth)
        accounts[Role.VIEWER] = viewer
    guard = SiteGuard.from_config(config, auth=auth)
    app = scrapyd_app.application(config)
    sites = list(_web_sites(app))
    if not sites:
        raise ConfigError(_unsupported("no web server in Scrapyd's application"))
    for service, site in sites:
        site_guard = guard
        if isinstance(service, UNIXServer):
            # No browser reaches a UNIX socket, whose clients send any Host.
            site_guard = copy.copy(guard)
            site_guard.known_hosts = None
        webroot = _webroot(site.resource)
        served: Any = webroot
        if auth:
            portal = Portal(NodeRealm(webroot, guard.node_name), [CredentialsChecker(accounts)])
            served = HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(b"Scrapyd")])
        site.resource = GuardedSite(site_guard, served)
        site.requestFactory = functools.partial(GuardedRequest, guard=site_guard)
    if Role.VIEWER in accounts:
        log.info("Read-only credentials enabled for {user}", user=viewer[0])
    if guard.known_hosts is not None:
        names = ", ".join(sorted(guard.known_hosts.names))
        log.info("Host names answered besides IP addresses and localhost: {names}", names=names)
    return app


def _check_viewer(viewer: tuple[str, str], username: str, auth: bool) -> None:
    if not all(viewer):
        raise ConfigError(f"[{SECTION}] viewer_username and viewer_password go together")
    if ":" in viewer[0]:
        raise ConfigError(f"[{SECTION}] viewer_username may not contain ':'")
    if not auth:
        raise ConfigError(
            f"[{SECTION}] read-only credentials need Scrapyd's username and password "
            "(without them, anyone may do everything)"
        )
    if viewer[0] == username:
        raise ConfigError(f"[{SECTION}] viewer_username must differ from Scrapyd's username")


def _web_sites(app: Application) -> Iterable[tuple[Any, server.Site]]:
    """The web servers of Scrapyd's application (TCP, UNIX socket), and the
    site each serves."""
    for service in IServiceCollection(app):
        if isinstance(service, TCPServer | UNIXServer) and len(service.args) > 1:
            if isinstance(service.args[1], server.Site):
                yield service, service.args[1]


def _webroot(served: Any) -> resource.Resource:
    """Scrapyd's web root, behind the basic auth Scrapyd wrapped it in (the
    guard checks the credentials instead)."""
    if isinstance(served, HTTPAuthSessionWrapper):
        realm = getattr(getattr(served, "_portal", None), "realm", None)
        if not isinstance(realm, PublicHTMLRealm):
            raise ConfigError(_unsupported("its basic auth is not the one expected"))
        return realm.resource
    return served


def _unsupported(why: str) -> str:
    import scrapyd

    return (
        f"scrapy-jobstatus's application supports Scrapyd {SUPPORTED_SCRAPYD}; "
        f"with Scrapyd {scrapyd.__version__}, {why}"
    )
