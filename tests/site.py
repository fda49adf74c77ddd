"""A local website for the tests, the benchmarks and the demo.

Run as ``python -m tests.site [--port N]``: it listens on 127.0.0.1 and prints
its base URL on the first line of standard output.

Resources:
- ``/pages/N?links=K&size=B&broken=D&docs=F&delay=S``: an HTML page linking
  to pages N*K+1 .. N*K+K (a tree, so every page is reached once), to D pages
  that answer 404 and to F documents (``/pages/N-I.pdf``, I from 0 to F-1, and
  the tree's first document, linked from every page), padded to about B
  bytes, answered after S seconds; pages above ``max`` (default 1000000) are
  not linked and answer 404.
- ``/status/CODE``: an HTML page answered with that HTTP status.
- ``/slow?delay=S``: a page answered after S seconds; with ``TEST_SITE_ACCESS_LOG``
  naming a file in the environment, each one's URL, arrival and end (epoch
  seconds) is appended to it as a JSON line once it ends.
- ``/drop``: the connection is closed without an answer.
- ``/title?t=TEXT``: a page whose title is TEXT.
- ``/sample/``: the demo's small site: a few pages with titles, one 404.
- ``/docsite/``, ``/listing/``, ``/corpus/``: see ``tests/fixture_site.py``.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time

from twisted.internet import reactor
from twisted.web import pages, resource, server
from twisted.web.util import Redirect

from tests.fixture_site import DocSite, Listing, corpus


def _page(title: str, body: str = "") -> bytes:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


def _arg(request: server.Request, name: str, default: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode() if values else default


class Pages(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        try:
            number = int(request.postpath[0])
        except (IndexError, ValueError):
            number = 0
        links = int(_arg(request, "links", "3"))
        size = int(_arg(request, "size", "0"))
        maximum = int(_arg(request, "max", "1000000"))
        if number > maximum:
            request.setResponseCode(404)
            return _page("Not found")
        query = request.uri.decode().partition("?")[2]
        suffix = f"?{query}" if query else ""
        children = range(number * links + 1, number * links + links + 1)
        body = "".join(
            f"<a href='/pages/{child}{suffix}'>page {child}</a> "
            for child in children
            if child <= maximum
        )
        broken = int(_arg(request, "broken", "0"))
        body += "".join(
            f"<a href='/status/404?from={number}&n={i}'>gone</a> " for i in range(broken)
        )
        docs = int(_arg(request, "docs", "0"))
        body += "".join(f"<a href='/pages/{number}-{i}.pdf'>document</a> " for i in range(docs))
        if docs:
            body += "<a href='/pages/0-0.pdf'>the first document again</a>"
        padding = "<p>" + "lorem ipsum " * max(0, size // 12) + "</p>"
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        page = _page(f"Page {number}", body + padding)
        delay = float(_arg(request, "delay", "0"))
        if not delay:
            return page
        reactor.callLater(delay, lambda: (request.write(page), request.finish()))
        return server.NOT_DONE_YET


class Status(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        try:
            code = int(request.postpath[0])
        except (IndexError, ValueError):
            code = 400
        request.setResponseCode(code)
        return _page(f"Status {code}")


class Slow(resource.Resource):
    isLeaf = True

    def __init__(self, access_log: str | None = None) -> None:
        super().__init__()
        self.access_log = access_log

    def render_GET(self, request: server.Request) -> int:
        delay = float(_arg(request, "delay", "1"))
        call = reactor.callLater(delay, self._finish, request)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        if self.access_log:
            arrived = time.time()
            request.notifyFinish().addBoth(lambda _: self._log(request, arrived))
        return server.NOT_DONE_YET

    def _log(self, request: server.Request, arrived: float) -> None:
        line = {"url": request.uri.decode(), "start": arrived, "end": time.time()}
        assert self.access_log is not None
        with open(self.access_log, "a") as f:
            f.write(json.dumps(line) + "\n")

    def _finish(self, request: server.Request) -> None:
        request.write(_page(f"Slow {request.uri.decode()}"))
        request.finish()


class Drop(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> int:
        request.transport.abortConnection()
        return server.NOT_DONE_YET


class Title(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        return _page(_arg(request, "t", "untitled"))


class Sample(resource.Resource):
    """The demo's site: an index and a handful of pages about fruit."""

    isLeaf = True
    PAGES = {
        "": "Fruit index",
        "apple": "Apples",
        "banana": "Bananas",
        "cherry": "Cherries",
        "damson": "Damsons",
        "elderberry": "Elderberries",
        "fig": "Figs",
        "grape": "Grapes",
    }

    def render_GET(self, request: server.Request) -> bytes:
        name = request.postpath[0].decode() if request.postpath else ""
        if name not in self.PAGES:
            request.setResponseCode(404)
            return _page("Not found")
        delay = float(_arg(request, "delay", "0"))
        if delay:
            reactor.callLater(
                delay, lambda: (request.write(_page(self.PAGES[name])), request.finish())
            )
            return server.NOT_DONE_YET
        return _page(self.PAGES[name])


class Root(resource.Resource):
    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"pages", Pages())
        self.putChild(b"status", Status())
        self.putChild(b"slow", Slow(os.environ.get("TEST_SITE_ACCESS_LOG")))
        self.putChild(b"drop", Drop())
        self.putChild(b"title", Title())
        self.putChild(b"sample", Sample())
        self.putChild(b"redirect", Redirect(b"/title?t=redirected"))
        self.putChild(b"robots.txt", pages.notFound())
        # The documents and listings fixtures, and the real-world corpus.
        self.putChild(b"docsite", DocSite())
        self.putChild(b"listing", Listing())
        self.putChild(b"corpus", corpus())

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if path == b"":
            return self
        return super().getChild(path, request)

    def render_GET(self, request: server.Request) -> bytes:
        return _page("Test site", "<a href='/sample/'>sample</a>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    site = server.Site(Root())
    site.noisy = False
    port = reactor.listenTCP(args.port, site, interface="127.0.0.1")
    print(f"http://127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
