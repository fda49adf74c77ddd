"""The parameters of a node's job services and their refusals, for every
service of the package: each reads its parameters with these, and a bad one
is refused with a 400 whose one-line message names it.

A message quotes a client's value cut short (``shown``): a client's text
never makes a long answer or log line.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web import error, http

from .._model import SHOWN_CHARS, InvalidJobId, JobStatus, shown, validate_job_id
from .._settings import parse_flag
from .._store import decode_cursor

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.web.server import Request

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")

# Job ids are at most 200 bytes; nothing a job service takes is longer than
# this, and a longer value is refused before anything reads it.
MAX_PARAM_BYTES = 1024
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
STATUSES = tuple(map(str, JobStatus))
# The code of the answer to a cancel, pause or resume request, by the job's
# status after it; any other is a 400: the request cannot apply.
CANCEL_CODES = {JobStatus.CANCELLED: http.OK, JobStatus.CANCELLING: http.ACCEPTED}
PAUSE_CODES = {JobStatus.PAUSED: http.OK, JobStatus.PAUSING: http.ACCEPTED}
# A job pending or running already is left as it is.
RESUME_CODES = {JobStatus.PENDING: http.OK, JobStatus.RUNNING: http.OK}


class ServiceError(error.Error):
    """An answer other than 200, with extra fields for its body."""

    def __init__(self, code: int, message: str, **payload: Any):
        super().__init__(code=code, message=message.encode())
        self.code = code
        self.payload = payload


def refused(message: str, **payload: Any) -> ServiceError:
    """A 400: the request is wrong; ``payload``: fields of the answer."""
    return ServiceError(http.BAD_REQUEST, message, **payload)


def read_flag(parameter: str, value: str) -> bool:
    try:
        return parse_flag(value)
    except ValueError:
        raise refused(f"{parameter}: {shown(value)} is not 0 or 1") from None


def read_job_id(value: str) -> str:
    try:
        return validate_job_id(value)
    except InvalidJobId as e:
        raise refused(f"job: {e}") from None


def read_name(parameter: str, value: str | None) -> str | None:
    """A project's or a spider's name, as Scrapyd names them."""
    if value is None or NAME_PATTERN.fullmatch(value):
        return value
    raise refused(
        f"{parameter}: {shown(value)} is not a valid name "
        "(1 to 128 letters, digits, '_', '.' or '-')"
    )


def read_choice(parameter: str, value: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value in choices:
        return value
    words = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
    raise refused(f"{parameter}: {shown(value)} is not {words}")


def read_whole(parameter: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise refused(f"{parameter}: {shown(value)} is not a whole number") from None
    if not low <= number <= high:
        raise refused(f"{parameter}: must be {low} to {high}, not {number}")
    return number


def read_seconds(parameter: str, value: str, high: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise refused(f"{parameter}: {shown(value)} is not a number of seconds") from None
    if math.isnan(seconds) or not 0 <= seconds <= high:
        raise refused(f"{parameter}: must be 0 to {high:g} seconds, not {shown(value)}")
    return seconds


def read_cursor(value: str | None) -> str | None:
    """jobs.json's ``cursor``: the ``next`` of an earlier page."""
    if value is not None:
        try:
            decode_cursor(value)
        except ValueError:
            raise refused(f"cursor: {shown(value)} is not a cursor of jobs.json") from None
    return value


def refuse_oversized(txrequest: Request, limit: int) -> None:
    for key, values in (txrequest.args or {}).items():
        if len(key) > limit or any(len(v) > limit for v in values):
            name = key[:SHOWN_CHARS].decode(errors="replace")
            raise refused(f"{name}: too long (at most {limit} bytes)")


def first_arg(txrequest: Request, name: str) -> str | None:
    """A parameter's first value, read without taking it from the request
    (Scrapyd's ``@param`` takes it later)."""
    values = (txrequest.args or {}).get(name.encode())
    return values[0].decode(errors="replace") if values else None


def log_refusal(txrequest: Request, code: int, message: str) -> None:
    # A client's error, not the node's: one line, no traceback.
    log.info(
        "Refused {method} {path} ({code}): {message}",
        method=txrequest.method.decode(errors="replace"),
        path=txrequest.path.decode(errors="replace"),
        code=code,
        message=message,
    )
