"""What the job commands share: options, the local store or a Scrapyd
node's job services, one-line errors."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.utils.project import inside_project

from .._defaults import default
from .._jobdir import remove_pruned_jobdirs
from .._location import InvalidLocation, check_location, display_location
from .._model import (
    InvalidJobId,
    JobStatus,
    pause_refusal,
    redact_url,
    resume_refusal,
    validate_job_id,
)
from .._retention import prune_ended
from .._settings import store_location
from .._store import (
    JobFilter,
    JobNotFound,
    JobStore,
    RequestResult,
    StoreError,
    is_postgres,
    open_store,
    process_alive,
)

if TYPE_CHECKING:
    import argparse

# Exit statuses: 1 for an unknown job or a job that did not complete, 2 for
# bad input (Scrapy's own usage errors exit with 2 as well).
EXIT_NOT_OK = 1
EXIT_BAD_INPUT = 2
# Seconds between two looks for dead jobs while a command keeps reading.
REAP_INTERVAL = 5.0


class CommandError(Exception):
    """Printed as one line on standard error; the command exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_NOT_OK):
        super().__init__(message)
        self.code = code


class NotAService(CommandError):
    """The node answered an HTTP error without a JSON body: it has no such
    service (Scrapyd's 404 page), or something else answered."""

    def __init__(self, message: str, http_status: int):
        super().__init__(message)
        self.http_status = http_status


@dataclass(frozen=True)
class Answer:
    """A pause or resume request: the job's status before and after, its
    document, and why the request was refused (None: it was not)."""

    before: JobStatus
    after: JobStatus
    job: dict[str, Any]
    refusal: str | None


class LocalJobs:
    """The job store of this project, as the commands see it. Reading opens
    the store read-only, so a read-only or full disk is no obstacle; dead
    jobs are looked for first, where the store can be written."""

    def __init__(self, location: str, errors_kept: int):
        self.location = location
        self.errors_kept = errors_kept
        self._reader: JobStore | None = None
        self._reaped_at = 0.0

    @property
    def reader(self) -> JobStore:
        if self._reader is None:
            if not is_postgres(self.location) and not os.path.exists(self.location):
                # Opening it to write would make it: a read creates nothing.
                raise CommandError(
                    f"no job store at {display_location(self.location)}: no job has run with it yet"
                )
            self._reap_dead_jobs()
            self._reader = open_store(self.location, readonly=True)
        elif time.monotonic() - self._reaped_at >= REAP_INTERVAL:
            self._reap_dead_jobs()  # a job watched for long may die meanwhile
        return self._reader

    def _reap_dead_jobs(self) -> None:
        self._reaped_at = time.monotonic()
        writer = open_store(self.location)
        try:
            writer.reap_dead_jobs(writer.node, process_alive)
        except StoreError:
            pass  # a read-only store: its jobs are read as they are
        finally:
            writer.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def status(self, job_id: str) -> dict[str, Any]:
        document = self.reader.document(job_id, self.errors_kept)
        if document is None:
            raise CommandError(f"unknown job: {job_id}")
        return document

    def list(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        limit, offset = filters.pop("limit"), filters.pop("offset")
        page = self.reader.list_jobs(JobFilter(**filters), limit=limit, offset=offset)
        now = time.time()
        return [state.to_document([], [], now) for state in page.jobs], page.total

    def cancel(self, job_id: str, force: bool) -> tuple[JobStatus, dict[str, Any]]:
        """The job's status after the cancel request, and its document."""
        result = self._request(job_id, "request_cancel", force=force)
        return result.after, self.status(job_id)

    def pause(self, job_id: str) -> Answer:
        result = self._request(job_id, "request_pause")
        refused = result.after not in (JobStatus.PAUSED, JobStatus.PAUSING)
        refusal = pause_refusal(job_id, result.before) if refused else None
        return Answer(result.before, result.after, self.status(job_id), refusal)

    def resume(self, job_id: str) -> Answer:
        result = self._request(job_id, "request_resume")
        refused = result.after not in (JobStatus.PENDING, JobStatus.RUNNING)
        refusal = resume_refusal(job_id, result.before) if refused else None
        return Answer(result.before, result.after, self.status(job_id), refusal)

    def _request(self, job_id: str, method: str, **kwargs: Any) -> RequestResult:
        store = open_store(self.location)
        try:
            return getattr(store, method)(job_id, **kwargs)
        except JobNotFound:
            raise CommandError(f"unknown job: {job_id}") from None
        finally:
            store.close()

    def prune(
        self, keep: int | None, older_than: float | None, deliveries_for: float | None = None
    ) -> int:
        """Prune the ended jobs beyond the newest ``keep`` and those ended
        more than ``older_than`` seconds ago, with their JOBDIRs; deliveries
        made more than ``deliveries_for`` seconds ago too. None: no limit."""
        now = time.time()
        store = open_store(self.location)
        try:
            report = prune_ended(
                store,
                keep=keep,
                ended_before=None if older_than is None else now - older_than,
                deliveries_before=None if deliveries_for is None else now - deliveries_for,
                pruned=remove_pruned_jobdirs,
            )
        finally:
            store.close()
        return report.jobs


def origin(url: str) -> tuple[str, str, int | None]:
    """A URL's scheme, host and port (the default one for its scheme)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed within the node's origin only: urllib would send
    the node's ``Authorization`` header to any host a redirect names."""

    def __init__(self, base: str):
        super().__init__()
        self.base = base

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(self.base):
            fp.close()
            raise CommandError(
                f"{self.base}: redirected to {redact_url(newurl)}, another host:"
                " not followed (the node's credentials go to --url's host only)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class RemoteJobs:
    """A Scrapyd node's job services, with the interface of LocalJobs."""

    def __init__(self, url: str, auth: str | None = None, timeout: float = 30):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"--url: {url!r} is not an http(s) URL", EXIT_BAD_INPUT)
        if auth is None and parts.username is not None:
            password = urllib.parse.unquote(parts.password or "")
            auth = f"{urllib.parse.unquote(parts.username)}:{password}"
        if auth is not None and ":" not in auth:
            raise CommandError("--auth: give USER:PASSWORD", EXIT_BAD_INPUT)
        netloc = parts.netloc.rpartition("@")[2]  # credentials go in a header
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
        self.authorization = (
            "Basic " + base64.b64encode(auth.encode()).decode() if auth is not None else None
        )
        self.timeout = timeout
        self.opener = urllib.request.build_opener(SameOriginRedirects(self.base))

    def status(self, job_id: str) -> dict[str, Any]:
        code, body = self._call("GET", "jobstatus.json", {"job": job_id})
        self._raise_for(code, body, job_id)
        return body["job"]

    def list(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        params = {k: v for k, v in filters.items() if v is not None}
        code, body = self._call("GET", "jobs.json", params)
        self._raise_for(code, body)
        return body["jobs"], body["total"]

    def cancel(self, job_id: str, force: bool) -> tuple[JobStatus, dict[str, Any]]:
        params = {"job": job_id, "force": "1" if force else "0"}
        code, body = self._call("POST", "jobcancel.json", params)
        if code == 400 and isinstance(body.get("job"), dict):
            job = body["job"]  # it had ended already
            return JobStatus(job["status"]), job
        self._raise_for(code, body, job_id)
        return (JobStatus.CANCELLING if code == 202 else JobStatus.CANCELLED), body["job"]

    def pause(self, job_id: str) -> Answer:
        return self._request(job_id, "jobpause.json", JobStatus.PAUSING)

    def resume(self, job_id: str) -> Answer:
        return self._request(job_id, "jobresume.json", JobStatus.PENDING)

    def _request(self, job_id: str, endpoint: str, accepted: JobStatus) -> Answer:
        code, body = self._call("POST", endpoint, {"job": job_id})
        job = body.get("job")
        if code == 400 and isinstance(job, dict):
            before = JobStatus(body["prevstate"])
            return Answer(before, before, job, body.get("message") or f"HTTP {code}")
        self._raise_for(code, body, job_id)
        after = accepted if code == 202 else JobStatus(body["job"]["status"])
        return Answer(JobStatus(body["prevstate"]), after, body["job"], None)

    def events(
        self, since: int | None, job_id: str | None = None, wait: float = 0
    ) -> tuple[list[dict[str, Any]], int] | None:
        """The node's events after ``since`` (of the job ``job_id`` if given),
        waiting up to ``wait`` seconds for one, and the ``since`` of the next
        call; without ``since``, none and the node's latest event id. None if
        the node has no events.json (a scrapyd.conf without it)."""
        params: dict[str, Any] = {
            "since": since,
            "job": job_id,
            "wait": f"{wait:g}" if wait else None,
        }
        params = {k: v for k, v in params.items() if v is not None}
        try:
            code, body = self._call("GET", "events.json", params, timeout=self.timeout + wait)
        except NotAService as e:
            if e.http_status == 404:
                return None
            raise
        if code == 404:
            return None
        self._raise_for(code, body)
        return body["events"], body["last_id"]

    def _raise_for(self, code: int, body: dict[str, Any], job_id: str | None = None) -> None:
        if code in (200, 202):
            return
        message = body.get("message") or f"HTTP {code}"
        if code == 404 and job_id is not None:
            raise CommandError(f"unknown job: {job_id}")
        if code == 400:
            raise CommandError(message, EXIT_BAD_INPUT)
        raise CommandError(f"{self.base}: {message}")

    def _call(
        self, method: str, endpoint: str, params: dict[str, Any], timeout: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        query = urllib.parse.urlencode(params)
        url = self.base + endpoint
        data = None
        if method == "GET":
            url += f"?{query}" if query else ""
        else:
            data = query.encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http(s) only)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        try:
            with self.opener.open(request, timeout=timeout or self.timeout) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            with e:
                code, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CommandError(f"cannot reach {self.base}: {reason}") from None
        if code == 401:
            raise CommandError(f"{self.base}: unauthorized (give --auth USER:PASSWORD)")
        try:
            body = json.loads(raw)
        except ValueError:
            raise NotAService(
                f"{self.base}{endpoint}: not a job service (HTTP {code})", code
            ) from None
        if not isinstance(body, dict) or (code in (200, 202) and body.get("status") != "ok"):
            message = body.get("message") if isinstance(body, dict) else None
            message = message or f"unexpected answer (HTTP {code})"
            raise CommandError(f"{self.base}{endpoint}: {message}")
        return code, body


class JobCommand(ScrapyCommand):
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}
    _local: LocalJobs | None = None

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--db",
            metavar="LOCATION",
            help="the job store: a SQLite path, a postgresql:// URL or a keyword DSN"
            " (default: JOBSTATUS_DB)",
        )
        parser.add_argument(
            "--url",
            metavar="URL",
            help="a Scrapyd node's job services instead of the store, e.g. http://localhost:6800",
        )
        parser.add_argument(
            "--auth", metavar="USER:PASSWORD", help="basic auth for --url (or give it in the URL)"
        )

    def jobs(self, opts: argparse.Namespace) -> LocalJobs | RemoteJobs:
        if opts.url:
            if opts.db:
                raise CommandError("give --db or --url, not both", EXIT_BAD_INPUT)
            return RemoteJobs(opts.url, opts.auth)
        if opts.auth:
            raise CommandError("--auth goes with --url", EXIT_BAD_INPUT)
        assert self.settings is not None
        if not (opts.db or self.settings.get("JOBSTATUS_DB") or inside_project()):
            raise CommandError(
                "not inside a Scrapy project: give --db PATH or --url URL, or set JOBSTATUS_DB",
                EXIT_BAD_INPUT,
            )
        path = opts.db or store_location(self.settings)
        try:
            check_location(path)
        except InvalidLocation as e:
            raise CommandError(str(e), EXIT_BAD_INPUT) from None
        name = "JOBSTATUS_ERRORS_KEPT"
        errors_kept = self.settings.getint(name, default(name))
        if errors_kept < 0:
            raise CommandError(f"JOBSTATUS_ERRORS_KEPT must not be negative, got {errors_kept}")
        self._local = LocalJobs(path, errors_kept)
        return self._local

    def job_id(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError("give exactly one job id", EXIT_BAD_INPUT)
        try:
            return validate_job_id(args[0])
        except InvalidJobId as exc:
            raise CommandError(str(exc), EXIT_BAD_INPUT) from None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            self.exitcode = self.execute(args, opts) or 0
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = exc.code
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = EXIT_NOT_OK
        except UsageError:
            raise
        except Exception as exc:  # never a traceback for the user
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.exitcode = EXIT_NOT_OK
        finally:
            if self._local is not None:
                self._local.close()

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        raise NotImplementedError


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"
