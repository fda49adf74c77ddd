"""Long answers (a page of jobs, an error report) written a slice at a time:
Scrapyd serves every request on one reactor, and a status request waiting
behind a long answer waits for one slice of it, not for all of it."""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from zope.interface import implementer

from ._calls import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from twisted.web.server import Request

    from ._calls import StoreCalls

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")


def stream(
    txrequest: Request,
    content_type: str,
    chunks: Iterator[bytes],
    calls: StoreCalls | None = None,
) -> int:
    """Answer with ``chunks``, one per turn of the reactor; what a service's
    render returns. With ``calls``, each chunk is made in the node's store
    pool: chunks read from the store."""
    txrequest.setHeader("Content-Type", content_type)
    ChunkProducer(txrequest, chunks, calls).start()
    return server.NOT_DONE_YET


@implementer(IPushProducer)
class ChunkProducer:
    """Writes one chunk per turn of the reactor, so that other requests are
    served between two, and stops while the connection's buffer is full
    (Twisted pauses it), so that a slow client costs no memory. Chunks read
    from the store are made in the node's store pool (``calls``), one at a
    time: the reactor never waits for the store."""

    def __init__(
        self, txrequest: Request, chunks: Iterator[bytes], calls: StoreCalls | None = None
    ):
        self.txrequest = txrequest
        self.chunks = chunks
        self.calls = calls
        self.paused = False
        self.stopped = False
        self._call: Any = None
        self._pulling = False

    def start(self) -> None:
        self.txrequest.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and not self._pulling and not self.stopped:
            self._call = reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._call = None
        if self.calls is not None:
            self._pulling = True
            d = self.calls.run(next, self.chunks, None)
            d.addCallbacks(self._pulled, self._failed)
            return
        try:
            chunk = next(self.chunks, None)
        except Exception:
            self._failed(Failure())
            return
        self._write(chunk)

    def _pulled(self, chunk: bytes | None) -> None:
        self._pulling = False
        if not self.stopped:
            self._write(chunk)

    def _write(self, chunk: bytes | None) -> None:
        if chunk is None:
            self.txrequest.unregisterProducer()
            self.txrequest.finish()
            return
        self.txrequest.write(chunk)
        self._schedule()

    def _failed(self, failure: Failure) -> None:
        self._pulling = False
        if self.stopped:
            return
        # The answer has begun: nothing can be said but a cut connection.
        if failure.check(StoreUnavailable):
            # The node says once that its store is away.
            log.info(
                "{path} cut short: {error}",
                path=self.txrequest.path,
                error=failure.getErrorMessage(),
            )
        else:
            log.failure("Error while streaming {path}", failure, path=self.txrequest.path)
        self.stopped = True
        self.txrequest.unregisterProducer()
        self.txrequest.loseConnection()

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
        self.stopped = True
        self.chunks = iter(())


def json_chunks(
    encode: Callable[[Any], str],
    head: dict[str, Any],
    key: str,
    batches: Iterable[Iterable[Any]],
    count_key: str | None = None,
) -> Iterator[bytes]:
    """A JSON object: the fields of ``head``, then the array ``key``, a chunk
    per batch, then the number of its items as ``count_key``."""
    fields = "".join(f"{encode(name)}: {encode(value)}, " for name, value in head.items())
    yield f"{{{fields}{encode(key)}: [".encode()
    count = 0
    for batch in batches:
        items = [encode(item) for item in batch]
        if items:
            yield ((", " if count else "") + ", ".join(items)).encode()
        count += len(items)
    count_field = f", {encode(count_key)}: {count}" if count_key else ""
    yield f"]{count_field}}}\n".encode()


def csv_chunks(
    fields: Sequence[str], batches: Iterable[Iterable[dict[str, Any]]]
) -> Iterator[bytes]:
    """CSV rows with a header: a chunk per batch."""
    yield _csv_rows(fields, [], header=True)
    for batch in batches:
        yield _csv_rows(fields, batch)


def attachment(filename: str) -> str:
    """A Content-Disposition for any job id: an ASCII fallback name and the
    exact one encoded as RFC 6266 says."""
    fallback = re.sub(r"[^A-Za-z0-9_.-]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _csv_rows(fields: Sequence[str], rows: Iterable[dict[str, Any]], header: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\r\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue().encode()


def _cell(value: Any) -> Any:
    # Text from crawled pages must not run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
