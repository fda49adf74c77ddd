"""The resource every service of the node is: Scrapyd's ``WsResource``,
answering with the contract's HTTP codes."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from scrapyd.webservice import WsResource
from twisted.logger import Logger
from twisted.web import error, http, resource, server

from ._calls import RETRY_AFTER, StoreUnavailable
from ._node import node_of
from ._params import MAX_PARAM_BYTES, ServiceError, log_refusal, refuse_oversized, refused

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from .._model import JobState, JobStatus
    from .._store import RequestResult
    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")


class NodeResource(WsResource):
    """Scrapyd's WsResource, but for how it answers what is not a plain
    success, which Scrapyd's ``render`` answers with a 200 and a traceback
    in the log:

    - a refusal (``ServiceError``; Scrapyd's ``@param`` refusing a missing
      or undecodable parameter) has the contract's code, ``client_error_code``
      for ``@param``'s 200 (Scrapyd's own services keep their 200), and one
      log line;
    - a method the service lacks is a 405;
    - an unexpected error is a 500 without a traceback, unless Scrapyd's
      ``debug`` is on;
    - a service may stream its answer (``NOT_DONE_YET``) or answer bytes of
      a type of its own;
    - a service that reads the store (``uses_store``) answers 503 with
      ``Retry-After`` while the store is down, without trying it; one that
      runs ``in_thread`` is rendered in the node's store thread pool, and
      answers 503 if the store does not answer within 1.5 s. Such a render
      only reads the request's arguments and sets its code and headers;
      the answer is written on the reactor (a callable it returns is called
      there, to stream).

    Which origins may read an answer (CORS) is the site guard's to say
    (``scrapy_jobstatus.scrapyd.guard``), for every service alike.
    """

    client_error_code: int | None = http.BAD_REQUEST
    # Nothing a job service takes is longer; Scrapyd's services take spider
    # arguments of any length.
    max_param_bytes: int | None = MAX_PARAM_BYTES
    uses_store = True
    in_thread = False

    def __init__(self, root: Any):
        super().__init__(root)
        self.node: JobStatusNode = node_of(root)

    def render(self, txrequest: Request) -> bytes | int:
        try:
            if txrequest.method == b"HEAD" and not hasattr(self, "render_GET"):
                # Twisted's render_HEAD would call the missing render_GET.
                raise resource.UnsupportedMethod([b"POST"])
            if self.max_param_bytes:
                refuse_oversized(txrequest, self.max_param_bytes)
            if self.uses_store and not self.node.calls.up:
                raise StoreUnavailable(self.node.calls.down_message())
            if self.in_thread:
                return self.rendered_in_pool(txrequest)
            data = resource.Resource.render(self, txrequest)
        except Exception as e:
            return self.error_answer(txrequest, e)
        return self.answer(txrequest, data)

    def rendered_in_pool(self, txrequest: Request) -> int:
        return self.answer_when(
            txrequest, self.node.calls.run(resource.Resource.render, self, txrequest)
        )

    def answer_when(self, txrequest: Request, d: Deferred[Any]) -> int:
        """Answer with what ``d`` fires with (a dict, or a callable called
        on the reactor), or with the error it fails with; what a render
        returns."""
        gone: list[bool] = []
        txrequest.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(content: bytes | int) -> None:
            if not gone and content is not server.NOT_DONE_YET:
                txrequest.write(content)  # type: ignore[arg-type]
                txrequest.finish()

        def answered(data: Any) -> None:
            if gone:
                return
            try:
                content = self.answer(txrequest, data() if callable(data) else data)
            except Exception as e:
                content = self.error_answer(txrequest, e)
            write(content)

        def failed(failure: Failure) -> None:
            if gone:
                return
            try:
                failure.raiseException()
            except Exception as e:
                write(self.error_answer(txrequest, e))

        d.addCallbacks(answered, failed)
        return server.NOT_DONE_YET

    def answer(self, txrequest: Request, data: Any) -> bytes | int:
        if isinstance(data, dict):
            return self.json(txrequest, {"status": "ok", **data})
        # None: render_OPTIONS; else NOT_DONE_YET or bytes the service typed.
        return b"" if data is None else data

    def error_answer(self, txrequest: Request, e: Exception) -> bytes:
        """The answer to what a service raised (called while handling it)."""
        if isinstance(e, resource.UnsupportedMethod):
            txrequest.setResponseCode(http.NOT_ALLOWED)
            txrequest.setHeader("Allow", self.methods)
            allowed = [m.decode() for m in e.allowedMethods if m not in (b"HEAD", b"OPTIONS")]
            message = f"method not allowed: use {', '.join(allowed)}"
            return self.json(txrequest, {"status": "error", "message": message})
        if isinstance(e, StoreUnavailable):
            # The node's own state, logged once by the node, not per request.
            txrequest.setResponseCode(http.SERVICE_UNAVAILABLE)
            txrequest.setHeader("Retry-After", str(RETRY_AFTER))
            return self.json(txrequest, {"status": "error", "message": str(e)})
        if isinstance(e, error.Error):
            code = int(e.status)
            if code == http.OK and self.client_error_code:
                code = self.client_error_code
            message = e.message.decode()
            log_refusal(txrequest, code, message)
            txrequest.setResponseCode(code)
            if code == http.SERVICE_UNAVAILABLE and not txrequest.responseHeaders.hasHeader(
                b"Retry-After"
            ):
                # A plug point of Scrapyd's whose store did not answer (a
                # service that set its own Retry-After keeps it).
                txrequest.setHeader("Retry-After", str(RETRY_AFTER))
            payload = e.payload if isinstance(e, ServiceError) else {}
            return self.json(txrequest, {"status": "error", "message": message, **payload})
        log.failure("Error in {path}", path=txrequest.path)
        txrequest.setResponseCode(http.INTERNAL_SERVER_ERROR)
        if self.root.debug:
            return traceback.format_exc().encode()
        return self.json(txrequest, {"status": "error", "message": "internal error"})

    def json(self, txrequest: Request, data: dict[str, Any]) -> bytes:
        """``data`` as the body of an answer, with Scrapyd's ``node_name``."""
        content = self.json_encoder.encode({**data, "node_name": self.root.node_name}).encode()
        txrequest.setHeader("Content-Type", "application/json")
        txrequest.setHeader("Content-Length", str(len(content) + 1))
        return content + b"\n"


class JobResource(NodeResource):
    """A service of one job, rendered in the node's store thread pool."""

    in_thread = True

    def find_job(self, job_id: str, project: str | None) -> JobState:
        """The job; 404 if unknown, or if it belongs to another project."""
        state = self.node.store.get(job_id)
        if state is None or (project is not None and state.project != project):
            where = f" in project '{project}'" if project is not None else ""
            raise ServiceError(http.NOT_FOUND, f"job '{job_id}' not found{where}")
        return state

    def answer_request(
        self,
        txrequest: Request,
        job_id: str,
        result: RequestResult,
        codes: Mapping[JobStatus, int],
        refusal: str,
    ) -> dict[str, Any]:
        """The answer to a cancel, pause or resume request: the job's
        document and its status before. ``codes``: the answer's code by the
        job's status after the request; with any other, a 400 says
        ``refusal``."""
        document = self.node.store.document(job_id, self.node.errors_kept)
        assert document is not None
        payload = {"job": document, "prevstate": str(result.before)}
        code = codes.get(result.after)
        if code is None:
            raise refused(refusal, **payload)
        txrequest.setResponseCode(code)
        return payload
