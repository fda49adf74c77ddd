"""scrapy-jobstatus: a real job lifecycle for every Scrapy crawl.

A spider imports the small progress API from here (``set_stage``,
``set_expected_total``, ...): that import loads neither the job store nor
Scrapyd, so a spider module imports wherever Scrapy does. The extension and
the store load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._addon import Addon
from ._model import (
    CompletionReason,
    ErrorType,
    InvalidJobId,
    JobError,
    JobState,
    JobStatus,
    validate_job_id,
)
from ._progress import (
    set_current_page,
    set_expected_total,
    set_pagination_complete,
    set_stage,
)

if TYPE_CHECKING:
    from ._backends import open_store
    from ._extension import JobStatusExtension
    from ._middleware import (
        DownloadOutcomeMiddleware,
        ResumedStartMiddleware,
        StartErrorMiddleware,
    )
    from ._store import JobNotFound, JobStore

# Public names whose modules load on first use: name -> module.
_LAZY = {
    "DownloadOutcomeMiddleware": "._middleware",
    "JobNotFound": "._store",
    "JobStatusExtension": "._extension",
    "JobStore": "._store",
    "ResumedStartMiddleware": "._middleware",
    "StartErrorMiddleware": "._middleware",
    "open_store": "._backends",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Addon",
    "CompletionReason",
    "DownloadOutcomeMiddleware",
    "ErrorType",
    "InvalidJobId",
    "JobError",
    "JobNotFound",
    "JobState",
    "JobStatus",
    "JobStatusExtension",
    "JobStore",
    "ResumedStartMiddleware",
    "StartErrorMiddleware",
    "set_current_page",
    "set_expected_total",
    "set_pagination_complete",
    "set_stage",
    "open_store",
    "validate_job_id",
]
