"""The items the crawler's jobs produce. The listings job yields plain dicts:
its fields are the ones its arguments name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PageOutcome:
    """What fetching one URL of a batch gave."""

    url: str
    status: int | None
    title: str | None = None
    error: str | None = None


@dataclass
class Document:
    """A document linked from a crawled page."""

    url: str
    link_text: str
    source_page: str
    file_type: str
    depth: int


@dataclass
class DownloadedDocument(Document):
    """A document that was also fetched and stored (``download=1``)."""

    file_path: str | None = None
    file_size: int | None = None
    file_checksum: str | None = None
    download_error: str | None = None
