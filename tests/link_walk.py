"""An independent walk of a static website's files, written from the
documents job's contract, not from its code: what the documents spider must
find when it crawls the same files served over HTTP.

Breadth-first from a start page: every ``<a href>`` of a page is, in order, a
document (its path ends in a document extension), another page of the site
(an HTML file under the served directory) or neither.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

DOCUMENT_EXTENSIONS = (
    "pdf doc docx odt rtf epub xls xlsx ods csv ppt pptx odp txt zip rar 7z tar gz tgz bz2 xz"
).split()


@dataclass(frozen=True)
class FoundDocument:
    url: str
    link_text: str
    source_page: str
    file_type: str
    depth: int


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._open: list[list[str]] = []
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href.append(dict(attrs).get("href"))
            self._open.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            text = "".join(self._open.pop())
            href = self._href.pop()
            if href is not None:
                self.links.append((href, text))

    def handle_data(self, data: str) -> None:
        for parts in self._open:
            parts.append(data)


def _links(path: Path) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser.links


def walk(root: Path, base_url: str, start: str) -> tuple[list[str], list[FoundDocument]]:
    """The pages reached and the documents found (first sighting of each)
    by crawling ``root`` served at ``base_url`` from the page ``start``."""
    base = base_url.rstrip("/") + "/"
    host = urlsplit(base).netloc

    def local_file(url: str) -> Path | None:
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or parts.netloc != host
            or not url.startswith(base)
        ):
            return None
        relative = unquote(parts.path[len(urlsplit(base).path) :])
        path = root / relative
        if url.endswith("/"):
            path = path / "index.html"
        return path if path.is_file() else None

    start_url = urljoin(base, start)
    queue = deque([(start_url, 0)])
    seen_pages = {start_url}
    pages: list[str] = []
    documents: dict[str, FoundDocument] = {}
    while queue:
        page_url, depth = queue.popleft()
        path = local_file(page_url)
        if path is None or path.suffix.lower() not in (".html", ".htm"):
            continue
        pages.append(page_url)
        for href, text in _links(path):
            url = urljoin(page_url, href.strip()).partition("#")[0]
            if urlsplit(url).scheme not in ("http", "https", "ftp") or not urlsplit(url).hostname:
                continue
            lowered = urlsplit(url).path.lower()
            file_type = next(
                (
                    ext
                    for ext in sorted(DOCUMENT_EXTENSIONS, key=len, reverse=True)
                    if lowered.endswith("." + ext)
                ),
                None,
            )
            if file_type is not None:
                if url not in documents:
                    documents[url] = FoundDocument(
                        url, " ".join(text.split()), page_url, file_type, depth + 1
                    )
            elif urlsplit(url).netloc == host and url not in seen_pages:
                seen_pages.add(url)
                queue.append((url, depth + 1))
    return pages, list(documents.values())
