"""The job services of a Scrapyd node: jobstatus.json, jobs.json,
jobcancel.json, jobpause.json, jobresume.json, joberrors.json and nodes.json;
Scrapyd's cancel.json extended to cancel a job that runs on another node
of the cluster (``Cancel``, from ``cancel``); and Scrapyd's schedule.json,
addversion.json, delproject.json and delversion.json with their store calls
off the reactor (``Schedule``, ``AddVersion``, ``DeleteProject``,
``DeleteVersion``, from ``deploy``).

The job services answer with the HTTP codes of the contract (400 bad input,
404 unknown job, 202 a request under way), where Scrapyd's own services
answer every error with 200. Each class is named after its endpoint, as
Scrapyd names its own (status.json: ``Status``), and ``[services]`` of
scrapyd.conf names it here (``scrapy_jobstatus.scrapyd.webservice.JobStatus``
for jobstatus.json, ...). The statuses a service checks come with their
codes from ``_params``; the model's own ``JobStatus`` is ``_model.JobStatus``
here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from scrapyd.webservice import param

from .._model import errors_not_recorded, pause_refusal, resume_refusal
from .._store import JobFilter, error_batches
from ._calls import ThreadStore
from ._params import (
    CANCEL_CODES,
    PAUSE_CODES,
    RESUME_CODES,
    STATUSES,
    read_choice,
    read_cursor,
    read_flag,
    read_job_id,
    read_name,
    read_whole,
)
from ._resource import JobResource, NodeResource
from ._stream import attachment, csv_chunks, json_chunks, stream
from .cancel import Cancel
from .deploy import AddVersion, DeleteProject, DeleteVersion, Schedule

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from twisted.web.server import Request

    from .. import _model
    from .._store import RequestResult

__all__ = [
    "AddVersion",
    "Cancel",
    "DeleteProject",
    "DeleteVersion",
    "JobCancel",
    "JobErrors",
    "JobPause",
    "JobResume",
    "JobStatus",
    "Jobs",
    "Nodes",
    "Schedule",
]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_OFFSET = 10**9
# Documents a listing renders in one turn of the reactor.
LISTING_SLICE = 10
# Errors a report writes in one turn of the reactor (about 0.3 ms of work).
REPORT_SLICE = 25
# The error report's header: how many of the job's errors were counted but
# not recorded (JOBSTATUS_PENDING_ERRORS).
NOT_RECORDED_HEADER = "Errors-Not-Recorded"
# The error object of the contract, in its order: the CSV report's columns.
ERROR_FIELDS = (
    "error_id",
    "stage",
    "error_type",
    "error_message",
    "page_url",
    "http_status",
    "timestamp",
    "is_recoverable",
)


class JobStatus(JobResource):
    """The status document; with ``series=1``, also the job's counters over
    its whole run (``series``: at most 500 points, the first and the latest
    always kept; none while the job is pending)."""

    @param("job")
    @param("project", required=False)
    @param("series", required=False, default="0")
    def render_GET(
        self, txrequest: Request, job: str, project: str | None, series: str
    ) -> dict[str, Any]:
        job_id, project = read_job_id(job), read_name("project", project)
        store = self.node.store
        # The series is read before the document: its latest point is never
        # newer than the counters the document shows.
        points = store.series(job_id) if read_flag("series", series) else None
        # One read on the common path: the job is in the store.
        document = store.document(job_id, self.node.errors_kept)
        if document is None or (project is not None and document["project"] != project):
            document = self.find_job(job_id, project).to_document([], [], time.time())
        if points is not None:
            document["series"] = points
        return {"job": document}


class Jobs(JobResource):
    """The jobs, newest first, a page at a time; streamed, a few documents
    per turn of the reactor."""

    @param("project", required=False)
    @param("spider", required=False)
    @param("status", required=False)
    @param("limit", required=False, default=str(DEFAULT_LIMIT))
    @param("offset", required=False, default="0")
    @param("cursor", required=False)
    @param("schedule", required=False)
    def render_GET(
        self,
        txrequest: Request,
        project: str | None,
        spider: str | None,
        status: str | None,
        limit: str,
        offset: str,
        cursor: str | None,
        schedule: str | None,
    ) -> Callable[[], int]:
        where = JobFilter(
            read_name("project", project),
            read_name("spider", spider),
            None if status is None else read_choice("status", status, STATUSES),
            read_name("schedule", schedule),
        )
        count = read_whole("limit", limit, 1, MAX_LIMIT)
        skip = read_whole("offset", offset, 0, MAX_OFFSET)
        page = self.node.store.list_jobs(
            where, limit=count, offset=skip, cursor=read_cursor(cursor)
        )
        now = time.time()
        slices = (
            [state.to_document([], [], now) for state in page.jobs[start : start + LISTING_SLICE]]
            for start in range(0, len(page.jobs), LISTING_SLICE)
        )
        head = {"status": "ok", "node_name": self.root.node_name, "total": page.total}
        head |= {"limit": count, "offset": skip, "next": page.next_cursor}
        chunks = json_chunks(self.json_encoder.encode, head, "jobs", slices)
        # Streamed from the reactor, the page read.
        return lambda: stream(txrequest, "application/json", chunks)


class JobCancel(JobResource):
    """A pending job is cancelled at once (200): no node claims it, and a
    crawl started meanwhile finds it cancelled. A running one, on this node
    or another, reads the request within one interval (202)."""

    @param("job")
    @param("project", required=False)
    @param("force", required=False, default="0")
    def render_POST(
        self, txrequest: Request, job: str, project: str | None, force: str
    ) -> dict[str, Any]:
        job_id, project = read_job_id(job), read_name("project", project)
        forced = read_flag("force", force)
        self.find_job(job_id, project)
        result = self.node.store.request_cancel(job_id, force=forced)
        refusal = f"job '{job_id}' is {result.before} already: nothing to cancel"
        return self.answer_request(txrequest, job_id, result, CANCEL_CODES, refusal)


class JobRequest(JobResource):
    """A pause or resume request: the store takes it (``request``), the
    answer's code says what it did (``codes``), or why it cannot apply
    (``refusal``)."""

    codes: ClassVar[Mapping[_model.JobStatus, int]]

    def request(self, job_id: str) -> RequestResult:
        raise NotImplementedError

    def refusal(self, job_id: str, before: _model.JobStatus) -> str:
        raise NotImplementedError

    @param("job")
    @param("project", required=False)
    def render_POST(self, txrequest: Request, job: str, project: str | None) -> dict[str, Any]:
        job_id = read_job_id(job)
        self.find_job(job_id, read_name("project", project))
        result = self.request(job_id)
        refusal = self.refusal(job_id, result.before)
        return self.answer_request(txrequest, job_id, result, self.codes, refusal)


class JobPause(JobRequest):
    """Pause a job: a pending one at once (200), a running one with a JOBDIR
    once its in-flight requests are done (202, ``pausing``)."""

    codes = PAUSE_CODES

    def request(self, job_id: str) -> RequestResult:
        return self.node.store.request_pause(job_id)

    def refusal(self, job_id: str, before: _model.JobStatus) -> str:
        return pause_refusal(job_id, before)


class JobResume(JobRequest):
    """Resume a paused job: it goes back to the queue with its JOBDIR (200);
    a job pending or running already is left as it is (200)."""

    codes = RESUME_CODES

    def request(self, job_id: str) -> RequestResult:
        return self.node.store.request_resume(job_id)

    def refusal(self, job_id: str, before: _model.JobStatus) -> str:
        return resume_refusal(job_id, before)


class JobErrors(JobResource):
    """The full error report, streamed from the store a batch at a time as
    the client takes it: other requests are served between two batches, and
    the node's memory does not grow with the number of errors nor with a
    slow client."""

    @param("job")
    @param("project", required=False)
    @param("format", dest="fmt", required=False, default="json")
    def render_GET(
        self, txrequest: Request, job: str, project: str | None, fmt: str
    ) -> Callable[[], int]:
        job_id, project = read_job_id(job), read_name("project", project)
        read_choice("format", fmt, ("json", "csv"))
        state = self.find_job(job_id, project)
        summary = state.to_document([], [], time.time())
        # Errors counted while the crawl's store was unreachable, beyond
        # JOBSTATUS_PENDING_ERRORS: in the report's JSON, and a header of its
        # CSV.
        not_recorded = errors_not_recorded(state.warnings)
        txrequest.setHeader(NOT_RECORDED_HEADER, str(not_recorded))

        def report() -> int:
            # Its batches are read as the client takes them, each in the
            # node's store pool, by whichever thread's store.
            store = ThreadStore(self.node.calls)
            batches = (
                [error.to_dict() for error in errors]
                for errors in error_batches(store, job_id, REPORT_SLICE)  # type: ignore[arg-type]
            )
            content_type = "application/json"
            if fmt == "csv":
                content_type, chunks = "text/csv; charset=utf-8", csv_chunks(ERROR_FIELDS, batches)
            else:
                head = {"status": "ok", "node_name": self.root.node_name, "job": summary}
                head["errors_not_recorded"] = not_recorded
                chunks = json_chunks(
                    self.json_encoder.encode, head, "errors", batches, "error_count"
                )
            return stream(txrequest, content_type, chunks, self.node.calls)

        if fmt == "csv":
            txrequest.setHeader("Content-Disposition", attachment(f"{job_id}-errors.csv"))
        return report


class Nodes(NodeResource):
    """The nodes sharing the store, from their heartbeats."""

    in_thread = True

    def render_GET(self, txrequest: Request) -> dict[str, Any]:
        store = self.node.store
        nodes, timeout = store.nodes(), self.node.node_timeout
        # Heartbeats are times of the store's clock: judged by it.
        now = store.clock()
        return {"nodes": [n.to_dict(now, timeout) for n in nodes]}
