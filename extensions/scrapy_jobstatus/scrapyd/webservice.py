"""The job services of a Scrapyd node (jobstatus.json, jobs.json,
jobcancel.json, jobpause.json, jobresume.json, joberrors.json, nodes.json),
and Scrapyd's cancel.json
extended to cancel a job that runs on another node of the cluster.

The job services answer with the HTTP codes of the contract (400 bad input,
404 unknown job, 202 cancellation under way), where Scrapyd's own services
answer every error with 200; the overrides keep Scrapyd's answers.
"""

from __future__ import annotations

import csv
import io
import re
import time
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from scrapyd import webservice
from scrapyd.webservice import WsResource, param
from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import error, http, resource, server
from zope.interface import implementer

from .._model import (
    InvalidJobId,
    JobState,
    pause_refusal,
    resume_refusal,
    validate_job_id,
)
from .._model import JobStatus as Status
from .._store import JobFilter, RequestResult, decode_cursor, error_batches
from ._node import node_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from twisted.web.server import Request

    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")

# Job ids are at most 200 bytes; nothing a service takes is longer than this,
# and a longer value is refused before anything reads it.
MAX_PARAM_BYTES = 1024
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
# Documents a listing renders in one turn of the reactor.
LISTING_SLICE = 10
MAX_OFFSET = 10**9
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# cancel.json's signals that stop a crawl at once (Scrapy takes INT and TERM
# as a graceful stop).
FORCE_SIGNALS = {"KILL", "SIGKILL", "9"}
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
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class ServiceError(error.Error):
    """An answer other than 200, with extra fields for its body."""

    def __init__(self, code: int, message: str, **payload: Any):
        super().__init__(code=code, message=message.encode())
        self.code = code
        self.payload = payload


class NodeResource(WsResource):
    """Scrapyd's WsResource, answering a refused request with one log line
    (Scrapyd logs a traceback for each), and the job services with the
    contract's HTTP codes.

    Scrapyd's ``@param`` reports a missing or undecodable parameter with a 200;
    a job service makes it a 400 (``client_error_code``), where Scrapyd's own
    services keep their 200. An unexpected error is a 500 without a traceback,
    unless Scrapyd's ``debug`` is on.
    """

    client_error_code: int | None = http.BAD_REQUEST
    # Nothing a job service takes is longer; Scrapyd's services take spider
    # arguments of any length.
    max_param_bytes: int | None = MAX_PARAM_BYTES

    def __init__(self, root: Any):
        super().__init__(root)
        self.node: JobStatusNode = node_of(root)

    def render(self, txrequest: Request) -> bytes | int:
        try:
            if txrequest.method == b"HEAD" and not hasattr(self, "render_GET"):
                raise resource.UnsupportedMethod([b"POST"])
            if self.max_param_bytes:
                _refuse_oversized(txrequest, self.max_param_bytes)
            data = resource.Resource.render(self, txrequest)
        except ServiceError as e:
            txrequest.setResponseCode(e.code)
            data = {"status": "error", "message": e.message.decode(), **e.payload}
            _log_refusal(txrequest, e.code, data["message"])
        except error.Error as e:
            code = int(e.status)
            if code == http.OK and self.client_error_code:
                code = self.client_error_code
            txrequest.setResponseCode(code)
            data = {"status": "error", "message": e.message.decode()}
            _log_refusal(txrequest, code, data["message"])
        except resource.UnsupportedMethod as e:
            txrequest.setResponseCode(http.NOT_ALLOWED)
            txrequest.setHeader("Allow", self.methods)
            allowed = ", ".join(
                m.decode() for m in e.allowedMethods if m not in (b"HEAD", b"OPTIONS")
            )
            data = {"status": "error", "message": f"method not allowed: use {allowed}"}
        except Exception:
            log.failure("Error in {path}", path=txrequest.path)
            txrequest.setResponseCode(http.INTERNAL_SERVER_ERROR)
            if self.root.debug:
                return traceback.format_exc().encode()
            data = {"status": "error", "message": "internal error"}
        else:
            if data is server.NOT_DONE_YET:  # streamed by the service
                return data
            if isinstance(data, bytes):  # a file: the service set its headers
                txrequest.setHeader("Content-Length", str(len(data)))
                return data
            if data is not None:
                data = {"status": "ok", **data}

        if data is None:  # render_OPTIONS
            content = b""
        else:
            data["node_name"] = self.root.node_name
            content = self.json_encoder.encode(data).encode() + b"\n"
            txrequest.setHeader("Content-Type", "application/json")
        self.cors_headers(txrequest)
        txrequest.setHeader("Content-Length", str(len(content)))
        return content

    def cors_headers(self, txrequest: Request) -> None:
        # Which origin may read the answer is the site guard's to say
        # (scrapy_jobstatus.scrapyd.guard): never every origin.
        txrequest.setHeader("Access-Control-Allow-Methods", self.methods)
        txrequest.setHeader("Access-Control-Allow-Headers", "X-Requested-With, Authorization")


class JobResource(NodeResource):
    """A job service."""

    def answer_request(
        self, txrequest: Request, job_id: str, result: RequestResult, code: int, refusal: str
    ) -> dict[str, Any]:
        """The answer to a cancel, pause or resume request: the job's document
        and its status before; a 400 says ``refusal``."""
        document = self.node.store.document(job_id, self.node.errors_kept)
        assert document is not None
        payload = {"job": document, "prevstate": str(result.before)}
        if code == http.BAD_REQUEST:
            raise ServiceError(http.BAD_REQUEST, refusal, **payload)
        txrequest.setResponseCode(code)
        return payload

    def find_job(self, job_id: str, project: str | None) -> JobState:
        """The job; 404 if unknown, or if it belongs to another project."""
        state = self.node.store.get(job_id)
        if state is None or (project is not None and state.project != project):
            where = f" in project '{project}'" if project is not None else ""
            raise ServiceError(http.NOT_FOUND, f"job '{job_id}' not found{where}")
        return state


class JobStatus(JobResource):
    """The status document; with ``series=1``, also the job's counters over
    its whole run (``series``: at most 500 points, the first and the latest
    always kept; none while the job is pending)."""

    @param("job")
    @param("project", required=False)
    @param("series", dest="with_series", required=False, default="0")
    def render_GET(
        self, txrequest: Request, job: str, project: str | None, with_series: str
    ) -> dict[str, Any]:
        job_id, project = _job_id(job), _name("project", project)
        wanted = _flag("series", with_series)
        store = self.node.store
        # The series is read before the document: its latest point is never
        # newer than the counters the document shows.
        series = store.series(job_id) if wanted else None
        # One read on the common path: the job is in the store.
        document = store.document(job_id, self.node.errors_kept)
        if document is None or (project is not None and document["project"] != project):
            document = self.find_job(job_id, project).to_document([], [], time.time())
        if series is not None:
            document["series"] = series
        return {"job": document}


class Jobs(JobResource):
    @param("project", required=False)
    @param("spider", required=False)
    @param("status", required=False)
    @param("limit", required=False, default=DEFAULT_LIMIT, type=int)
    @param("offset", required=False, default=0, type=int)
    @param("cursor", required=False)
    def render_GET(
        self,
        txrequest: Request,
        project: str | None,
        spider: str | None,
        status: str | None,
        limit: int,
        offset: int,
        cursor: str | None,
    ) -> int:
        project, spider = _name("project", project), _name("spider", spider)
        if status is not None and status not in set(Status):
            raise ServiceError(
                http.BAD_REQUEST, f"status: {_shown(status)} is not one of {', '.join(Status)}"
            )
        if not 1 <= limit <= MAX_LIMIT:
            raise ServiceError(http.BAD_REQUEST, f"limit: must be 1 to {MAX_LIMIT}, not {limit}")
        if not 0 <= offset <= MAX_OFFSET:
            raise ServiceError(http.BAD_REQUEST, f"offset: must be 0 to {MAX_OFFSET}, not {offset}")
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except ValueError:
                raise ServiceError(
                    http.BAD_REQUEST, f"cursor: {_shown(cursor)} is not a cursor of jobs.json"
                ) from None
        self.cors_headers(txrequest)
        txrequest.setHeader("Content-Type", "application/json")
        where = JobFilter(project, spider, status)
        ChunkProducer(txrequest, self._json(where, limit, offset, cursor)).start()
        return server.NOT_DONE_YET

    def _json(
        self, where: JobFilter, limit: int, offset: int, cursor: str | None
    ) -> Iterator[bytes]:
        # In slices, a few documents each: a status request waiting behind a
        # listing waits for one slice, not for the whole page.
        page = self.node.store.list_jobs(where, limit=limit, offset=offset, cursor=cursor)
        encode = self.json_encoder.encode
        yield (
            f'{{"status": "ok", "node_name": {encode(self.root.node_name)}, '
            f'"total": {page.total}, "limit": {limit}, "offset": {offset}, '
            f'"next": {encode(page.next_cursor)}, "jobs": ['
        ).encode()
        now = time.time()
        for start in range(0, len(page.jobs), LISTING_SLICE):
            documents = [
                s.to_document([], [], now) for s in page.jobs[start : start + LISTING_SLICE]
            ]
            yield (", " if start else "").encode() + ", ".join(map(encode, documents)).encode()
        yield b"]}\n"


class JobCancel(JobResource):
    @param("job")
    @param("project", required=False)
    @param("force", required=False, default="0")
    def render_POST(
        self, txrequest: Request, job: str, project: str | None, force: str
    ) -> dict[str, Any]:
        job_id, project = _job_id(job), _name("project", project)
        force_stop = _flag("force", force)
        self.find_job(job_id, project)
        store = self.node.store
        # A pending job is cancelled at once: no node claims it, and a crawl
        # started meanwhile finds it cancelled. A running one, on this node or
        # another, reads the request within one interval.
        result = store.request_cancel(job_id, force=force_stop)
        refusal = f"job '{job_id}' is {result.before} already: nothing to cancel"
        return self.answer_request(txrequest, job_id, result, cancel_code(result), refusal)


class JobRequest(JobResource):
    """A pause or resume request: the store takes it, the answer's code
    says what it did."""

    def request(self, job_id: str) -> RequestResult:
        raise NotImplementedError

    def code(self, result: RequestResult) -> int:
        raise NotImplementedError

    def refusal(self, job_id: str, before: Status) -> str:
        raise NotImplementedError

    @param("job")
    @param("project", required=False)
    def render_POST(self, txrequest: Request, job: str, project: str | None) -> dict[str, Any]:
        job_id, project = _job_id(job), _name("project", project)
        self.find_job(job_id, project)
        result = self.request(job_id)
        refusal = self.refusal(job_id, result.before)
        return self.answer_request(txrequest, job_id, result, self.code(result), refusal)


class JobPause(JobRequest):
    """Pause a job: a pending one at once (200), a running one with a JOBDIR
    once its in-flight requests are done (202, ``pausing``)."""

    def request(self, job_id: str) -> RequestResult:
        return self.node.store.request_pause(job_id)

    def code(self, result: RequestResult) -> int:
        if result.after is Status.PAUSED:
            return http.OK
        return http.ACCEPTED if result.after is Status.PAUSING else http.BAD_REQUEST

    def refusal(self, job_id: str, before: Status) -> str:
        return pause_refusal(job_id, before)


class JobResume(JobRequest):
    """Resume a paused job: it goes back to the queue with its JOBDIR (200);
    a job pending or running already is left as it is (200)."""

    def request(self, job_id: str) -> RequestResult:
        return self.node.store.request_resume(job_id)

    def code(self, result: RequestResult) -> int:
        return http.OK if result.after in (Status.PENDING, Status.RUNNING) else http.BAD_REQUEST

    def refusal(self, job_id: str, before: Status) -> str:
        return resume_refusal(job_id, before)


def cancel_code(result: RequestResult) -> int:
    """The contract's code: 200 cancelled (now or before), 202 cancellation
    under way, 400 the job had already ended otherwise."""
    if result.after is Status.CANCELLED:
        return http.OK
    if result.after is Status.CANCELLING:
        return http.ACCEPTED
    return http.BAD_REQUEST


class JobErrors(JobResource):
    """The full error report, streamed from the store a batch at a time as
    the client takes it: other requests are served between two batches, and
    the node's memory does not grow with the number of errors nor with a
    slow client."""

    # Errors a report writes in one turn of the reactor (about 0.3 ms of work).
    batch = 25

    @param("job")
    @param("project", required=False)
    @param("format", dest="fmt", required=False, default="json")
    def render_GET(self, txrequest: Request, job: str, project: str | None, fmt: str) -> int:
        job_id, project = _job_id(job), _name("project", project)
        if fmt not in ("json", "csv"):
            raise ServiceError(http.BAD_REQUEST, f"format: {_shown(fmt)} is not json or csv")
        state = self.find_job(job_id, project)
        self.cors_headers(txrequest)
        if fmt == "csv":
            txrequest.setHeader("Content-Type", "text/csv; charset=utf-8")
            txrequest.setHeader("Content-Disposition", _attachment(f"{job_id}-errors.csv"))
            chunks = self._csv(job_id)
        else:
            txrequest.setHeader("Content-Type", "application/json")
            chunks = self._json(state)
        ChunkProducer(txrequest, chunks).start()
        return server.NOT_DONE_YET

    def _json(self, state: JobState) -> Iterator[bytes]:
        encode = self.json_encoder.encode
        summary = encode(state.to_document([], [], time.time()))
        yield (
            f'{{"status": "ok", "node_name": {encode(self.root.node_name)}, '
            f'"job": {summary}, "errors": ['
        ).encode()
        count = 0
        for errors in error_batches(self.node.store, state.job_id, self.batch):
            rows = ", ".join(encode(e.to_dict()) for e in errors)
            yield (", " if count else "").encode() + rows.encode()
            count += len(errors)
        yield f'], "error_count": {count}}}\n'.encode()

    def _csv(self, job_id: str) -> Iterator[bytes]:
        yield _csv_rows([], header=True)
        for errors in error_batches(self.node.store, job_id, self.batch):
            yield _csv_rows([e.to_dict() for e in errors])


@implementer(IPushProducer)
class ChunkProducer:
    """Writes one chunk per turn of the reactor, so that other requests are
    served between two, and stops while the connection's buffer is full
    (Twisted pauses it), so that a slow client costs no memory."""

    def __init__(self, txrequest: Request, chunks: Iterator[bytes]):
        self.txrequest = txrequest
        self.chunks = chunks
        self.paused = False
        self._call: Any = None

    def start(self) -> None:
        self.txrequest.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused:
            self._call = reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.txrequest.unregisterProducer()
            self.txrequest.finish()
            return
        except Exception:
            # The answer has begun: nothing can be said but a cut connection.
            log.failure("Error while streaming {path}", path=self.txrequest.path)
            self.txrequest.unregisterProducer()
            self.txrequest.loseConnection()
            return
        self.txrequest.write(chunk)
        self._schedule()

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self.paused = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted's name)
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:  # noqa: N802 (Twisted's name)
        # The client went away.
        self.pauseProducing()
        self.chunks = iter(())


class Nodes(NodeResource):
    """The nodes sharing the store, from their heartbeats."""

    def render_GET(self, txrequest: Request) -> dict[str, Any]:
        now = time.time()
        timeout = self.node.node_timeout
        nodes = [n.to_dict(now, timeout) for n in self.node.store.nodes()]
        return {"nodes": nodes}


# -- Scrapyd's services, extended ---------------------------------------------


class Cancel(NodeResource, webservice.Cancel):
    """Scrapyd's cancel.json, which also cancels a job running on another
    node sharing the store: gracefully, or at once for ``signal=KILL``. A
    pending job is cancelled by the queue's removal (``SpiderQueue``)."""

    client_error_code = None  # Scrapyd's answers
    max_param_bytes = None

    def render_POST(self, txrequest: Request) -> dict[str, Any]:
        given = {key: list(values) for key, values in txrequest.args.items()}
        store = self.node.store
        try:
            job_id: str | None = validate_job_id(_first(given, "job"))
        except InvalidJobId:
            job_id = None
        state = store.get(job_id) if job_id is not None else None
        if state is not None and state.project != _first(given, "project"):
            state = None
        force = (_first(given, "signal") or "").upper() in FORCE_SIGNALS
        started = state is not None and state.status.is_active
        # Recorded before Scrapyd's signal: a crawl with a JOBDIR pauses on a
        # signal, and its job then ends cancelled, as asked; a paused job is
        # cancelled at once, its crawl exiting or not.
        first = state is not None and (
            state.status is Status.PAUSED or (started and state.status is not Status.PENDING)
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
            if state.status is Status.PENDING:
                store.request_cancel(state.job_id)
        elif result["prevstate"] is None and (started or first):
            # Claimed or running elsewhere (that crawl reads the request), or
            # paused (cancelled at once).
            if not first:
                store.request_cancel(state.job_id, force=force)
            result["prevstate"] = "running" if started else str(state.status)
        return result


def _log_refusal(txrequest: Request, code: int, message: str) -> None:
    # A client's error, not the node's: one line, no traceback.
    log.info(
        "Refused {method} {path} ({code}): {message}",
        method=txrequest.method.decode(errors="replace"),
        path=txrequest.path.decode(errors="replace"),
        code=code,
        message=message,
    )


# -- parameters -----------------------------------------------------------------


def _refuse_oversized(txrequest: Request, limit: int) -> None:
    for key, values in (txrequest.args or {}).items():
        if len(key) > limit or any(len(v) > limit for v in values):
            name = key[:40].decode(errors="replace")
            raise ServiceError(http.BAD_REQUEST, f"{name}: too long (at most {limit} bytes)")


def _job_id(value: str) -> str:
    try:
        return validate_job_id(value)
    except InvalidJobId as e:
        raise ServiceError(http.BAD_REQUEST, f"job: {e}") from None


def _name(parameter: str, value: str | None) -> str | None:
    if value is None or NAME_PATTERN.fullmatch(value):
        return value
    raise ServiceError(
        http.BAD_REQUEST,
        f"{parameter}: {_shown(value)} is not a valid name "
        f"(1 to 128 letters, digits, '_', '.' or '-')",
    )


def _flag(parameter: str, value: str) -> bool:
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ServiceError(http.BAD_REQUEST, f"{parameter}: {_shown(value)} is not 0 or 1")


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."


def _first(given: dict[bytes, list[bytes]], name: str) -> str | None:
    values = given.get(name.encode())
    return values[0].decode(errors="replace") if values else None


def _attachment(filename: str) -> str:
    """A Content-Disposition for any job id: an ASCII fallback name and the
    exact one encoded as RFC 6266 says."""
    fallback = re.sub(r"[^A-Za-z0-9_.-]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _csv_rows(errors: list[dict[str, Any]], header: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=ERROR_FIELDS, extrasaction="ignore", lineterminator="\r\n"
    )
    if header:
        writer.writeheader()
    for row in errors:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue().encode()


def _cell(value: Any) -> Any:
    # Text from crawled pages must not run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
