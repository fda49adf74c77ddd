"""The items the crawler's jobs produce."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PageOutcome:
    """What fetching one URL of a batch gave."""

    url: str
    status: int | None
    title: str | None = None
    error: str | None = None
