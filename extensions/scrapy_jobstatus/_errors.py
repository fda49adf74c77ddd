"""Typing a failed request: which error kind, and whether a retry later could
succeed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from scrapy import exceptions as scrapy_errors
from twisted.internet import error as twisted_errors
from twisted.internet.defer import TimeoutError as DeferTimeoutError
from twisted.web._newclient import ResponseFailed

from ._model import ErrorType, JobError

if TYPE_CHECKING:
    from scrapy.http import Response


def _scrapy_errors(*names: str) -> tuple[type[BaseException], ...]:
    """Scrapy's download exceptions of these names that this Scrapy has:
    they came with Scrapy 2.15; before, a download raises Twisted's own,
    which the kinds below name too."""
    return tuple(getattr(scrapy_errors, name) for name in names if hasattr(scrapy_errors, name))


_KINDS: list[tuple[tuple[type[BaseException], ...], ErrorType, bool]] = [
    (
        (*_scrapy_errors("CannotResolveHostError"), twisted_errors.DNSLookupError),
        ErrorType.DNS_ERROR,
        False,
    ),
    (
        (
            *_scrapy_errors("DownloadTimeoutError"),
            twisted_errors.TimeoutError,
            twisted_errors.TCPTimedOutError,
            DeferTimeoutError,
            TimeoutError,
        ),
        ErrorType.TIMEOUT,
        True,
    ),
    (
        (
            *_scrapy_errors(
                "DownloadConnectionRefusedError", "DownloadFailedError", "ResponseDataLossError"
            ),
            twisted_errors.ConnectError,
            twisted_errors.ConnectionDone,
            twisted_errors.ConnectionLost,
            ResponseFailed,
            ConnectionError,
        ),
        ErrorType.CONNECTION_ERROR,
        True,
    ),
]


_FAILURE_REPR = re.compile(r"<twisted\.python\.failure\.Failure (?:[\w]+\.)*([\w]+: [^>]*)>")


def classify_exception(exception: BaseException, url: str) -> JobError:
    kind, recoverable = next(
        ((k, r) for classes, k, r in _KINDS if isinstance(exception, classes)),
        (ErrorType.OTHER, False),
    )
    # Twisted failures inside the message are shown as "Class: message".
    message = _FAILURE_REPR.sub(r"\1", str(exception)) or type(exception).__name__
    return JobError(
        error_type=kind,
        error_message=" ".join(f"{type(exception).__name__}: {message}".split())[:1000],
        page_url=url,
        is_recoverable=recoverable,
    )


def classify_response(response: Response) -> JobError | None:
    """An HTTP error response is a failed outcome; 429 and 5xx may succeed
    later, other 4xx will not."""
    status = response.status
    if status < 400:
        return None
    return JobError(
        error_type=ErrorType.HTTP_ERROR,
        error_message=f"HTTP {status}",
        page_url=response.url,
        http_status=status,
        is_recoverable=status == 429 or status >= 500,
    )
