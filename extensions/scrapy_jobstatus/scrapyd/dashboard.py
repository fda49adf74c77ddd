"""The jobs dashboard of a Scrapyd node (``GET dashboard``), and Scrapyd's web
root with a home page that links to it.

The page is static HTML, CSS and JavaScript shipped in this package (native
ES modules): no build step, nothing fetched from elsewhere. It reads the node's own job services
(jobs.json, jobstatus.json, jobcancel.json, jobpause.json, jobresume.json,
joberrors.json, events.json, webhooks.json, nodes.json, and the schedules'
addschedule.json, listschedules.json, delschedule.json, runschedule.json)
with relative URLs, so Scrapyd's basic auth and a proxy's path prefix apply
to it as to every other resource of the node.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any

from scrapyd import website
from scrapyd.interfaces import ISpiderScheduler
from twisted.web import pages, resource
from twisted.web.util import Redirect

from .guard import is_read_only
from .queue import Scheduler

if TYPE_CHECKING:
    from twisted.web.server import Request

STATIC = resources.files(__package__) / "static"
JAVASCRIPT = "text/javascript; charset=utf-8"
# Nothing but the page's own files runs or loads: text planted in a crawled
# page or an error message cannot become script, even through a mistake.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _send(txrequest: Request, content: bytes, content_type: str) -> bytes:
    txrequest.setHeader("Content-Type", content_type)
    for name, value in SECURITY_HEADERS.items():
        txrequest.setHeader(name, value)
    txrequest.setHeader("Content-Length", str(len(content)))
    return content


class Asset(resource.Resource):
    """One of the page's static files."""

    isLeaf = True

    def __init__(self, content: bytes, content_type: str):
        super().__init__()
        self.content = content
        self.content_type = content_type

    def render_GET(self, txrequest: Request) -> bytes:
        return _send(txrequest, self.content, self.content_type)


class Modules(resource.Resource):
    """The modules the page's script imports, ``dashboard/js/<name>.js``: the
    package's static/js/*.js files, read once; any other name is not found
    (the folder's package.json only tells Node.js, which runs the modules'
    unit tests, that they are ES modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.names = sorted(f.name for f in (STATIC / "js").iterdir() if f.name.endswith(".js"))
        for name in self.names:
            self.putChild(name.encode(), Asset((STATIC / "js" / name).read_bytes(), JAVASCRIPT))

    def getChild(self, path: bytes, request: Request) -> resource.IResource:  # noqa: N802 (Twisted's name)
        return pages.notFound()

    def render(self, txrequest: Request) -> object:
        # The folder itself is no file.
        return pages.notFound().render(txrequest)


class Dashboard(resource.Resource):
    """The jobs page: ``dashboard``, with its script, style sheet and icon at
    ``dashboard/app.js``, ``dashboard/app.css`` and ``dashboard/icon.svg``,
    and the modules its script imports under ``dashboard/js/``."""

    def __init__(self, root: Any):
        super().__init__()
        self.root = root
        self.template = Template(_read("dashboard.html").decode())
        self.putChild(b"app.js", Asset(_read("dashboard.js"), JAVASCRIPT))
        modules = Modules()
        self.putChild(b"js", modules)
        # Each module asked for at once, not as the imports are read.
        self.preload = "\n".join(
            f'<link rel="modulepreload" href="dashboard/js/{escape(name)}">'
            for name in modules.names
        )
        self.putChild(b"app.css", Asset(_read("dashboard.css"), "text/css; charset=utf-8"))
        self.putChild(b"icon.svg", Asset(_read("dashboard.svg"), "image/svg+xml"))

    def getChild(self, path: bytes, request: Request) -> resource.Resource:  # noqa: N802 (Twisted's name)
        if path == b"":
            # The page's links are relative to "dashboard", not "dashboard/".
            return Redirect(b"../dashboard")
        return super().getChild(path, request)

    def render_GET(self, txrequest: Request) -> bytes:
        page = self.template.substitute(
            node_name=escape(self.root.node_name),
            logs="1" if self.root.logs_dir else "",
            items="1" if self.root.local_items else "",
            # Read-only credentials: no button the node would refuse.
            role="viewer" if is_read_only(txrequest) else "admin",
            preload=self.preload,
        )
        return _send(txrequest, page.encode(), "text/html; charset=utf-8")


class Home(website.Home):
    """Scrapyd's home page, with a link to the jobs dashboard."""

    def render_GET(self, txrequest: Request) -> bytes:
        content = super().render_GET(txrequest)
        if b"dashboard" not in self.root.children:
            return content
        base_path = self.get_base_path(txrequest)
        jobs = f'<li><a href="{base_path}/jobs">Jobs</a></li>'.encode()
        link = f'<li><a href="{escape(base_path)}/dashboard">Jobs dashboard</a></li>'.encode()
        content = content.replace(jobs, link + b"\n        " + jobs, 1)
        txrequest.setHeader("Content-Length", str(len(content)))
        return content


class Root(website.Root):
    """Scrapyd's web root, whose home page links to the jobs dashboard:
    ``webroot = scrapy_jobstatus.scrapyd.dashboard.Root`` in scrapyd.conf.

    It installs the scheduler that knows every project of the store
    (Scrapyd's knows those deployed to this node since it started)."""

    def __init__(self, config: Any, app: Any):
        app.setComponent(ISpiderScheduler, Scheduler(config))
        super().__init__(config, app)
        self.putChild(b"", Home(self))
