"""scrapy-jobstatus: a real job lifecycle for every Scrapy crawl."""

from ._addon import Addon
from ._extension import JobStatusExtension
from ._middleware import DownloadOutcomeMiddleware
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
from ._store import JobNotFound, JobStore

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
    "set_current_page",
    "set_expected_total",
    "set_pagination_complete",
    "set_stage",
    "validate_job_id",
]
