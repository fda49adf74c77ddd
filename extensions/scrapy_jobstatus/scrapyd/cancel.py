"""Scrapyd's cancel.json, extended to cancel a job that runs on another node
sharing the store; ``cancel.json = scrapy_jobstatus.scrapyd.webservice.Cancel``
in the ``[services]`` section of scrapyd.conf."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapyd import webservice

from .._model import InvalidJobId, JobStatus, validate_job_id
from ._params import first_arg
from ._resource import NodeResource

if TYPE_CHECKING:
    from twisted.web.server import Request

# Signals that stop a crawl at once (Scrapy takes INT and TERM as a graceful
# stop).
FORCE_SIGNALS = {"KILL", "SIGKILL", "9"}


class Cancel(NodeResource, webservice.Cancel):
    """Scrapyd's cancel.json, which also cancels a job running on another
    node sharing the store: gracefully, or at once for ``signal=KILL``. A
    pending job is cancelled by the queue's removal (``SpiderQueue``)."""

    client_error_code = None  # Scrapyd's answers
    max_param_bytes = None

    def render_POST(self, txrequest: Request) -> dict[str, Any]:
        store = self.node.store
        try:
            job_id: str | None = validate_job_id(first_arg(txrequest, "job"))
        except InvalidJobId:
            job_id = None
        state = store.get(job_id) if job_id is not None else None
        if state is not None and state.project != first_arg(txrequest, "project"):
            state = None
        force = (first_arg(txrequest, "signal") or "").upper() in FORCE_SIGNALS
        started = state is not None and state.status.is_active
        # Recorded before Scrapyd's signal: a crawl with a JOBDIR pauses on a
        # signal, and its job then ends cancelled, as asked; a paused job is
        # cancelled at once, its crawl exiting or not.
        first = state is not None and (
            state.status is JobStatus.PAUSED or (started and state.status is not JobStatus.PENDING)
        )
        if first and state is not None:
            store.request_cancel(state.job_id, force=force)
        result = super().render_POST(txrequest)
        if state is None:
            return result
        if result["prevstate"] == "running":
            # A crawl that has not opened its job yet may die of the signal
            # before it can report: record the cancel, so that it reads
            # cancelled, not failed.
            if state.status is JobStatus.PENDING:
                store.request_cancel(state.job_id)
        elif result["prevstate"] is None and (started or first):
            # Claimed or running elsewhere (that crawl reads the request), or
            # paused (cancelled at once).
            if not first:
                store.request_cancel(state.job_id, force=force)
            result["prevstate"] = "running" if started else str(state.status)
        return result
