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
from twisted.web import server
from zope.interface import implementer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from twisted.web.server import Request

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")


def stream(txrequest: Request, content_type: str, chunks: Iterator[bytes]) -> int:
    """Answer with ``chunks``, one per turn of the reactor; what a service's
    render returns."""
    txrequest.setHeader("Content-Type", content_type)
    ChunkProducer(txrequest, chunks).start()
    return server.NOT_DONE_YET


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
