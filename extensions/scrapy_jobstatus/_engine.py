"""The one place that touches Scrapy's engine internals: the forced stop.

Scrapy's engine closes a spider only once its slot's in-progress set is
empty, and offers no public way to drop in-flight requests. This module
reaches into that slot; it is written for Scrapy 2.14 to 2.19 and checked
once at start-up, so that a Scrapy without those internals disables forced
stops with one clear log line instead of failing mid-crawl.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import scrapy
from scrapy.core.downloader import Downloader
from scrapy.utils.asyncio import call_later, is_asyncio_available

if TYPE_CHECKING:
    from types import CodeType

    from scrapy import Request
    from scrapy.core.engine import ExecutionEngine, _Slot

logger = logging.getLogger("scrapy_jobstatus.extension")

SUPPORTED_SCRAPY = "2.14 to 2.19"
# Marks a request dropped by a forced stop: its outcome is no page of the job.
DROPPED = "jobstatus_dropped"
# Seconds a dropped request the downloader does not hold gets to end.
LEFT_WAIT = 1.0


def unsupported_reason() -> str | None:
    """Why this Scrapy cannot force a stop, or None when it can."""
    try:
        from scrapy.core.engine import _Slot
    except ImportError:
        _Slot = None  # noqa: N806 (Scrapy's class name)
    if _Slot is None or not callable(getattr(_Slot, "_maybe_fire_closing", None)):
        return (
            f"forced stops need the engine internals of Scrapy {SUPPORTED_SCRAPY}, "
            f"not found in Scrapy {scrapy.__version__}: a cancel or timeout waits for "
            f"the in-flight requests instead"
        )
    return None


def closing_with_requests_in_flight(engine: ExecutionEngine | None) -> bool:
    """Whether the engine is closing the spider and waits for requests."""
    slot = getattr(engine, "_slot", None)
    return slot is not None and slot.closing is not None and not slot.closing.called


def requests_in_flight(engine: ExecutionEngine | None) -> int:
    """The requests the engine has sent and not yet seen the end of."""
    return len(getattr(getattr(engine, "_slot", None), "inprogress", ()))


def drop_in_flight_requests(engine: ExecutionEngine, requeue: bool = False) -> int:
    """Drop the engine's in-flight requests so that the close goes on;
    returns how many were dropped. With ``requeue`` (a pause), they go back
    to the scheduler's queue first, kept in the JOBDIR for the next run: the
    seen requests' filter would drop them, were they only sent again."""
    slot = engine._slot
    assert slot is not None
    dropped = set(slot.inprogress)
    for request in dropped:
        if requeue:
            slot.scheduler.enqueue_request(request.replace(dont_filter=True))
        # What still comes of the request is dropped: never sent again,
        # never made into items.
        request.meta["dont_retry"] = True
        request.meta[DROPPED] = True
        request.callback = request.errback = _discard
    if _cancel_downloads(engine.downloader, dropped):
        # The cancelled downloads fail through the engine while the spider
        # is open, each leaving the in-progress set, and the close goes on
        # once the last has. A request held elsewhere (a downloader
        # middleware awaiting something) is dropped after LEFT_WAIT.
        call_later(LEFT_WAIT, _drop_left, slot)
    else:
        slot.inprogress.clear()
        slot._maybe_fire_closing()
    return len(dropped)


def _cancel_downloads(downloader: Downloader, requests: set[Request]) -> bool:
    """Cancel the downloads of ``requests`` as Twisted cancels a Deferred:
    each download's Deferred fails at once with CancelledError (what fires
    it later is ignored) and its task stops. Whether the downloads could be
    reached (the asyncio loop's tasks, the downloader of Scrapy 2.14 to
    2.19): else they are left to end in their own time, after the close."""
    if not is_asyncio_available() or _WAIT_FOR_DOWNLOAD is None:
        return False
    # Queued in a download slot: never started.
    for download_slot in downloader.slots.values():
        queued = [entry for entry in download_slot.queue if entry[0] in requests]
        for entry in queued:
            download_slot.queue.remove(entry)
            entry[1].cancel()
    # Under way in a download handler: one task each.
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if getattr(coro, "cr_code", None) is not _WAIT_FOR_DOWNLOAD or frame is None:
            continue
        if frame.f_locals.get("request") in requests:
            frame.f_locals["queue_dfd"].cancel()
            task.cancel()
    return True


def _wait_for_download_code() -> CodeType | None:
    """The code of the coroutine that runs one download in Scrapy's
    downloader, when it holds the download's request and Deferred."""
    function = getattr(Downloader, "_wait_for_download", None)
    code = getattr(function, "__code__", None)
    if code is None or not {"request", "queue_dfd"} <= set(code.co_varnames):
        return None
    return code


_WAIT_FOR_DOWNLOAD = _wait_for_download_code()


def _drop_left(slot: _Slot) -> None:
    # A dropped request the downloader did not hold: the close goes on
    # without it.
    left = {request for request in slot.inprogress if request.meta.get(DROPPED)}
    if left and slot.closing is not None and not slot.closing.called:
        slot.inprogress.difference_update(left)
        slot._maybe_fire_closing()


def _discard(*_: object) -> None:
    return None


def unpause(engine: ExecutionEngine) -> None:
    """Unpause the engine, sending its next requests now rather than at its
    next heartbeat (5 s on)."""
    engine.unpause()
    nextcall = getattr(getattr(engine, "_slot", None), "nextcall", None)
    if nextcall is not None:
        nextcall.schedule()


def queued_requests(engine: ExecutionEngine | None) -> int:
    """The requests in the scheduler's queue (``engine.scheduler`` is
    public from Scrapy 2.19; before, it is the slot's)."""
    scheduler = getattr(engine, "scheduler", None)
    if scheduler is None:
        scheduler = getattr(getattr(engine, "_slot", None), "scheduler", None)
    try:
        return len(scheduler)  # type: ignore[arg-type]
    except TypeError:  # a scheduler without a length
        return 0


def responses_in_callbacks(engine: ExecutionEngine | None) -> int:
    """Responses downloaded whose callbacks have not ended (the scraper's
    slot): the requests they make are still to come."""
    slot = getattr(getattr(engine, "scraper", None), "slot", None)
    return len(getattr(slot, "active", ()))
