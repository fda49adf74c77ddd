"""Scrapyd's cancel.json, extended to cancel a job that runs on another node
sharing the store; ``cancel.json = scrapy_jobstatus.scrapyd.webservice.Cancel``
in the ``[services]`` section of scrapyd.conf."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapyd import webservice
from scrapyd.webservice import param
from twisted.logger import Logger
from twisted.web import error, http

from .._model import InvalidJobId, JobState, JobStatus, validate_job_id
from ._resource import NodeResource

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.server import Request

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")

# Signals that stop a crawl at once (Scrapy takes INT and TERM as a graceful
# stop).
FORCE_SIGNALS = {"KILL", "SIGKILL", "9"}
# Scrapyd's default signal (21: SIGBREAK, which Twisted does not name).
DEFAULT_SIGNAL = "INT" if sys.platform != "win32" else "21"


@dataclass
class CancelRequest:
    """What cancel.json found and did in the store before the signal."""

    project: str
    job: str
    signal: str
    queue: Any
    state: JobState | None = None
    force: bool = False
    started: bool = False
    first: bool = False
    removed: bool = False


class Cancel(NodeResource, webservice.Cancel):
    """Scrapyd's cancel.json, which also cancels a job running on another
    node sharing the store: gracefully, or at once for ``signal=KILL``. A
    pending job is cancelled by the queue's removal (``SpiderQueue``).

    Its store calls run in the node's store pool (a store away answers 503,
    having changed nothing), the signal to a crawl of this node on the
    reactor, as Scrapyd's own cancel.json sends it."""

    client_error_code = None  # Scrapyd's answers
    max_param_bytes = None

    @param("project")
    @param("job")
    @param("signal", required=False, default=DEFAULT_SIGNAL)
    def render_POST(self, txrequest: Request, project: str, job: str, signal: str) -> int:
        # Read on the reactor: the projects are known while the store is away.
        if project not in self.root.poller.queues:
            raise error.Error(code=http.OK, message=b"project '%b' not found" % project.encode())
        request = CancelRequest(project, job, signal, self.root.poller.queues[project])
        d = self.node.calls.run(self._before_signal, request)
        d.addCallback(self._signal)
        return self.answer_when(txrequest, d)

    def _before_signal(self, request: CancelRequest) -> CancelRequest:
        """In the pool: the job's cancel recorded before Scrapyd's signal (a
        crawl with a JOBDIR pauses on a signal, and its job then ends
        cancelled, as asked; a paused job is cancelled at once, its crawl
        exiting or not), and a pending job removed from the queue."""
        store = self.node.store
        try:
            job_id: str | None = validate_job_id(request.job)
        except InvalidJobId:
            job_id = None
        state = store.get(job_id) if job_id is not None else None
        if state is not None and state.project != request.project:
            state = None
        request.state = state
        request.force = request.signal.upper() in FORCE_SIGNALS
        request.started = state is not None and state.status.is_active
        request.first = state is not None and (
            state.status is JobStatus.PAUSED
            or (request.started and state.status is not JobStatus.PENDING)
        )
        if request.first and state is not None:
            store.request_cancel(state.job_id, force=request.force)
        request.removed = bool(request.queue.remove(lambda message: message["_job"] == request.job))
        return request

    def _signal(self, request: CancelRequest) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """On the reactor: Scrapyd's signal to this node's crawl of the job."""
        prevstate = "pending" if request.removed else None
        signal: str | int = request.signal
        for process in self.root.launcher.processes.values():
            if process.project == request.project and process.job == request.job:
                if isinstance(signal, str) and signal.isdigit():
                    signal = int(signal)
                process.transport.signalProcess(signal)
                prevstate = "running"
        result: dict[str, Any] = {"prevstate": prevstate}
        state = request.state
        if state is None:
            return result
        if prevstate == "running":
            # A crawl that has not opened its job yet may die of the signal
            # before it can report: record the cancel, so that it reads
            # cancelled, not failed.
            if state.status is JobStatus.PENDING:
                return self._after_signal(result, state.job_id, force=False)
        elif prevstate is None and (request.started or request.first):
            # Claimed or running elsewhere (that crawl reads the request), or
            # paused (cancelled at once).
            result["prevstate"] = "running" if request.started else str(state.status)
            if not request.first:
                return self._after_signal(result, state.job_id, force=request.force)
        return result

    def _after_signal(
        self, result: dict[str, Any], job_id: str, *, force: bool
    ) -> Deferred[dict[str, Any]]:
        def failed(failure: Any) -> dict[str, Any]:
            # The signal is sent: the answer says so; the crawl's own end,
            # or the launcher's, records the job.
            log.warn(
                "Could not record the cancel of job {job}: {error}",
                job=job_id,
                error=failure.getErrorMessage(),
            )
            return result

        d = self.node.calls.run(lambda: self.node.store.request_cancel(job_id, force=force))
        d.addCallbacks(lambda _: result, failed)
        return d
