"""The dashboard's files as the node serves them, rendered in process: the
page's main script and every module it imports, as JavaScript under the
page's security headers, and nothing else from the modules' folder."""

from __future__ import annotations

import re
from importlib import resources
from types import SimpleNamespace

import pytest
from twisted.web.http_headers import Headers
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from scrapy_jobstatus.scrapyd.dashboard import SECURITY_HEADERS, Dashboard

STATIC = resources.files("scrapy_jobstatus.scrapyd") / "static"
IMPORT = re.compile(r'^import .* from "\./(?:js/)?([\w-]+\.js)";$', re.MULTILINE)


def get(path: str) -> tuple[int, Headers, bytes]:
    """GET dashboard/<path> from the dashboard resource: its code, headers, body."""
    request = DummyRequest(path.encode().split(b"/"))
    child = getChildForRequest(Dashboard(root=None), request)
    body = child.render(request)
    if body == NOT_DONE_YET:
        # Twisted's error pages write as they are rendered.
        assert request.finished
        body = b"".join(request.written)
    assert isinstance(body, bytes)
    return request.responseCode or 200, request.responseHeaders, body


def imported() -> set[str]:
    """The modules the page's script imports, and those they import."""
    names: set[str] = set()
    sources = [(STATIC / "dashboard.js").read_text()]
    while sources:
        for name in IMPORT.findall(sources.pop()):
            if name not in names:
                names.add(name)
                sources.append((STATIC / "js" / name).read_text())
    return names


def test_the_page_s_script_imports_modules_of_the_package() -> None:
    names = imported()
    assert {"api.js", "chart.js", "poll.js", "table.js", "details.js", "nodes.js"} <= names
    on_disk = {f.name for f in (STATIC / "js").iterdir() if f.name.endswith(".js")}
    assert names == on_disk


@pytest.mark.parametrize("name", sorted(imported()))
def test_each_module_is_served_as_javascript_under_the_page_s_headers(name: str) -> None:
    code, headers, body = get(f"js/{name}")
    assert code == 200
    assert body == (STATIC / "js" / name).read_bytes()
    assert headers.getRawHeaders("Content-Type") == ["text/javascript; charset=utf-8"]
    for header, value in SECURITY_HEADERS.items():
        assert headers.getRawHeaders(header) == [value], header


def test_the_page_loads_its_main_script_as_a_module_and_asks_for_the_others_at_once() -> None:
    _, headers, body = get("app.js")
    assert headers.getRawHeaders("Content-Type") == ["text/javascript; charset=utf-8"]
    assert body == (STATIC / "dashboard.js").read_bytes()
    root = SimpleNamespace(node_name="node-1", logs_dir="logs", local_items=False)
    request = DummyRequest([b""])
    page = Dashboard(root).render_GET(request).decode()
    assert '<script type="module" src="dashboard/app.js"></script>' in page
    preloaded = set(
        re.findall(r'<link rel="modulepreload" href="dashboard/js/([\w-]+\.js)">', page)
    )
    assert preloaded == imported()


@pytest.mark.parametrize(
    "path",
    ["js", "js/", "js/package.json", "js/../app.js", "js/%2e%2e/app.js", "js/CHART.js", "js/x.js"],
)
def test_nothing_else_is_served_from_the_modules_folder(path: str) -> None:
    code, _, body = get(path)
    assert code == 404
    assert b"import " not in body and b"export " not in body
