"""The documents and listings fixtures of the local test site.

- ``/docsite/``: a small website with nested pages (to depth 4), documents of
  every default type linked in many ways (upper-case extensions, query
  strings, fragments, percent-encoded names, duplicates, another host) and
  traps (mailto/javascript/tel/data links, malformed hrefs, 404s, a redirect
  loop, non-HTML pages linked as pages, pages in a legacy encoding, a page on
  another host). "Another host" is this same server under the name
  ``localhost``: another registered domain than ``127.0.0.1``.
  ``/docsite/files/NAME`` answers a small file (``document_body(NAME)``);
  ``missing.pdf`` answers 404.
- ``/listing/``: ``products?page=N`` (3 pages of products, the last without
  a next link, "7 results"), ``product/ID`` detail pages (``product/13``
  answers 404), ``endless?page=N`` (always a next page).
- ``/corpus/``: the real-world corpus (``CORPUS``), served as static files.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from twisted.web import resource, server, static
from twisted.web.util import Redirect

# The pages of /docsite/: their links, written with {other} for the base URL
# of the other host (http://localhost:PORT).
DOCSITE_PAGES: dict[str, str] = {
    "index.html": """
        <h1>Documentation</h1>
        <a href="a.html">Section A</a> <a href="b.html">Section B</a>
        <a href="a.html#part-2">Section A, part 2</a>
        <a href="a.html?utm_source=newsletter&amp;utm_medium=email">Section A again</a>
        <a href="/docsite/b.html?fbclid=XYZ">Section B again</a>
        <a href="files/report.pdf">Annual report</a>
        <a href="files/report.pdf">Annual report (same link)</a>
        <a href="files/report.pdf#page=2">Annual report, page 2</a>
        <a href="files/report.pdf?utm_campaign=spring">Annual report (tracked)</a>
        <a href="files/REPORT-2024.PDF">Report 2024</a>
        <a href="files/data.csv?version=2&amp;lang=en">Data <b>(CSV)</b></a>
        <a href="files/annual%20summary.docx">Summary</a>
        <a href="files/r%C3%A9sum%C3%A9.odt">R\u00e9sum\u00e9</a>
        <a href="{other}/docsite/files/offsite-budget.xlsx">Budget on the file server</a>
        <a href="  files/padded.rtf  ">Padded link</a>
        <a href="files/missing.pdf">A document that is gone</a>
        <a href="mailto:docs@example.com">Mail us</a>
        <a href="javascript:void(0)">Script</a>
        <a href="tel:+15555550100">Call us</a>
        <a href="data:text/plain;base64,SGVsbG8=">Inline data</a>
        <a href="http://[::1">Broken host</a>
        <a href="https://">No host</a>
        <a href="http://127.0.0.1:99999/files/bad-port.pdf">Bad port</a>
        <a>No href</a>
        <a href="missing.html">Missing page</a>
        <a href="loop-a">Redirect loop</a>
        <a href="feed.json">A JSON feed</a>
        <a href="blob">A binary without extension</a>
        <a href="legacy.html">Legacy page</a>
        <a href="mislabelled.html">Mislabelled page</a>
        <a href="{other}/docsite/elsewhere.html">A page on another host</a>
        <img src="files/picture.pdf">
    """,
    "a.html": """
        <a href="a1.html">A.1</a> <a href="index.html">Home</a>
        <a href="files/slides.pptx">Slides</a>
        <a href="files/report.pdf">The annual report again</a>
        <a href="/docsite/files/sheet.XLSX?download=1#top">Sheet</a>
    """,
    "a1.html": """
        <a href="a2.html">A.2</a>
        <a href="files/notes.txt">Notes</a> <a href="files/archive.zip">Archive</a>
    """,
    "a2.html": """
        <a href="a3.html">A.3</a>
        <a href="files/deep.7z">Deep archive</a> <a href="files/old-letter.doc">Old letter</a>
    """,
    "a3.html": """
        <a href="a.html">Back to A</a>
        <a href="files/book.epub">Book</a> <a href="files/budget.ods">Budget</a>
        <a href="files/talk.odp">Talk</a> <a href="files/letter.rtf">Letter</a>
        <a href="files/old.xls">Old sheet</a> <a href="files/old.ppt">Old slides</a>
        <a href="files/pack.rar">RAR</a> <a href="files/pack.tar">TAR</a>
        <a href="files/pack.tar.gz">TAR.GZ</a> <a href="files/pack.tgz">TGZ</a>
        <a href="files/pack.bz2">BZ2</a> <a href="files/pack.xz">XZ</a>
    """,
    "b.html": """
        <a href="{other}/docsite/files/cdn-guide.pdf">Guide (CDN)</a>
        <a href="files/Presentation.PPTX">Presentation</a>
        <a href="files/summary.DOCX">Summary (upper case)</a>
    """,
    # Only reachable through the other host: never crawled.
    "elsewhere.html": """
        <a href="files/never.pdf">Never reported</a>
    """,
    # A small site for download jobs.
    "dl.html": """
        <a href="dl2.html">More</a>
        <a href="files/report.pdf">Report</a>
        <a href="{other}/docsite/files/cdn-guide.pdf">Guide (CDN)</a>
        <a href="files/missing.pdf">Gone</a>
    """,
    "dl2.html": """
        <a href="files/notes.txt">Notes</a>
    """,
}

# Bytes in windows-1252 ("Résumé", "Café menu"), one page declaring no
# encoding at all, one declaring a wrong one.
LEGACY_PAGE = (
    b"<html><head><title>Legacy</title></head><body>"
    b"<p>Caf\xe9 cr\xe8me \x96 na\xefve</p><a href='files/cv.pdf'>R\xe9sum\xe9</a>"
    b"</body></html>"
)
MISLABELLED_PAGE = (
    b"<html><head><meta charset='utf-8'><title>Mislabelled</title></head><body>"
    b"<a href='files/menu.pdf'>Caf\xe9 menu</a>"
    b"</body></html>"
)


def document_body(name: str) -> bytes:
    """What ``/docsite/files/NAME`` answers."""
    return f"fixture document {name}\n".encode()


def _html(title: str, body: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body>{body}</body></html>"
    ).encode()


def _other_host(request: server.Request) -> str:
    return f"http://localhost:{request.getHost().port}"


class DocSite(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        path = b"/".join(request.postpath).decode()
        if path.startswith("files/"):
            name = path[len("files/") :]
            if name == "missing.pdf":
                request.setResponseCode(404)
                return _html("Not found", "")
            request.setHeader(b"Content-Type", b"application/octet-stream")
            return document_body(name)
        if path in ("", "index.html") or path in DOCSITE_PAGES:
            body = DOCSITE_PAGES[path or "index.html"].replace("{other}", _other_host(request))
            return _html(path or "index.html", body)
        if path == "loop-a":
            return Redirect(b"/docsite/loop-b").render(request)
        if path == "loop-b":
            return Redirect(b"/docsite/loop-a").render(request)
        if path == "feed.json":
            request.setHeader(b"Content-Type", b"application/json")
            return b'{"links": ["files/feed.pdf"]}'
        if path == "blob":
            request.setHeader(b"Content-Type", b"application/octet-stream")
            return b"\x00\x01<a href='files/blob.pdf'>x</a>"
        if path == "legacy.html":
            request.setHeader(b"Content-Type", b"text/html")
            return LEGACY_PAGE
        if path == "mislabelled.html":
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            return MISLABELLED_PAGE
        request.setResponseCode(404)
        return _html("Not found", "")


PRODUCTS = {
    # id: (name, price, page)
    11: ("Teapot", "12.50", 1),
    12: ("Kettle", "30.00", 1),
    13: ("Mug", "4.20", 1),
    21: ("Spoon", "1.10", 2),
    22: ("Sugar bowl", "8.00", 2),
    23: ("Tray", "15.75", 2),
    31: ("Strainer", "3.30", 3),
}
LAST_PAGE = 3


class Listing(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        path = b"/".join(request.postpath).decode()
        try:
            page = int(request.args.get(b"page", [b"1"])[0])
        except ValueError:
            page = 1
        if path == "products":
            return self._products(page)
        if path.startswith("product/"):
            return self._product(request, path[len("product/") :])
        if path == "endless":
            items = "".join(
                f"<li class='row'><span class='name'>Row {page}.{n}</span></li>" for n in (1, 2)
            )
            return _html(
                f"Endless {page}",
                f"<ul>{items}</ul><a class='next' href='endless?page={page + 1}'>more</a>",
            )
        request.setResponseCode(404)
        return _html("Not found", "")

    def _products(self, page: int) -> bytes:
        rows = []
        for product_id, (name, price, on_page) in PRODUCTS.items():
            if on_page != page:
                continue
            # Product 23 has no detail page link.
            title = (
                f"<h2>{html.escape(name)}</h2>"
                if product_id == 23
                else f"<h2><a href='/listing/product/{product_id}'>{html.escape(name)}</a></h2>"
            )
            rows.append(
                f"<div class='product'>{title}<span class='price'>\u20ac {price}</span></div>"
            )
        pager = (
            f"<a class='next' href='products?page={page + 1}'>Next \u00bb</a>"
            if page < LAST_PAGE
            else ""
        )
        count = f"<p class='count'>{len(PRODUCTS)} results</p>"
        return _html(f"Products, page {page}", count + "".join(rows) + pager)

    def _product(self, request: server.Request, product_id: str) -> bytes:
        if product_id == "13" or not product_id.isdigit() or int(product_id) not in PRODUCTS:
            request.setResponseCode(404)
            return _html("Not found", "")
        name, _, _ = PRODUCTS[int(product_id)]
        return _html(
            name,
            f"<h1>{html.escape(name)}</h1>"
            f"<dl><dt>SKU</dt><dd class='sku'>SKU-{product_id}</dd></dl>"
            f"<p class='desc'>A fine {html.escape(name.lower())}.</p>",
        )


# The real-world corpus: the Debian Policy Manual as Debian's debian-policy
# package installs it (Sphinx HTML with links to its sources, PDF, EPUB...).
# The benchmark may serve another directory instead.
CORPUS = Path(os.environ.get("JOBSTATUS_TEST_CORPUS") or "/usr/share/doc/debian-policy")
CORPUS_START = "policy.html/index.html"


def corpus() -> resource.Resource:
    # An unknown extension is not taken for HTML (Twisted's default type).
    return static.File(str(CORPUS), defaultType="application/octet-stream")
