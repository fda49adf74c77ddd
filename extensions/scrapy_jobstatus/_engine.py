"""The one place that touches Scrapy's engine internals: the forced stop.

Scrapy's engine closes a spider only once its slot's in-progress set is
empty, and offers no public way to drop in-flight requests. This module
reaches into that slot; it is written for Scrapy 2.14 to 2.19 and checked
once at start-up, so that a Scrapy without those internals disables forced
stops with one clear log line instead of failing mid-crawl.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import scrapy
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_from_coro

from ._loop import installed_reactor

if TYPE_CHECKING:
    from scrapy.core.engine import ExecutionEngine, _Slot
    from twisted.python.failure import Failure

logger = logging.getLogger("scrapy_jobstatus.extension")

SUPPORTED_SCRAPY = "2.14 to 2.19"
# Marks a request dropped by a forced stop: its outcome is no page of the job.
DROPPED = "jobstatus_dropped"
# Seconds the downloads of closed download handlers get to fail.
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


def drop_in_flight_requests(engine: ExecutionEngine, requeue: bool = False) -> int:
    """Empty the engine's in-progress set so that the close goes on; returns
    how many requests were dropped. With ``requeue`` (a pause), they go back
    to the scheduler's queue first, kept in the JOBDIR for the next run: the
    seen requests' filter would drop them, were they only sent again."""
    slot = engine._slot
    assert slot is not None
    dropped = len(slot.inprogress)
    for request in slot.inprogress:
        if requeue:
            slot.scheduler.enqueue_request(request.replace(dont_filter=True))
        # What still comes of the request is dropped: never sent again,
        # never made into items.
        request.meta["dont_retry"] = True
        request.meta[DROPPED] = True
        request.callback = request.errback = _discard
    close_handlers = getattr(engine.downloader.handlers, "_close", None)
    if installed_reactor() is None and callable(close_handlers):
        # Without a reactor, the download handlers fail the downloads under
        # way when they close: the engine handles those failures while the
        # spider is open, and the close goes on once the last is handled.
        # (Left in flight, they would fail after the close, into a closed
        # engine.)
        d = deferred_from_coro(close_handlers())
        d.addCallback(lambda _: call_later(LEFT_WAIT, _drop_left, slot))
        d.addErrback(_log_failure)
    else:
        slot.inprogress.clear()
        slot._maybe_fire_closing()
    return dropped


def _drop_left(slot: _Slot) -> None:
    # A download handler that left its downloads under way when closed: the
    # close goes on without them.
    left = {request for request in slot.inprogress if request.meta.get(DROPPED)}
    if left and slot.closing is not None and not slot.closing.called:
        slot.inprogress.difference_update(left)
        slot._maybe_fire_closing()


def _discard(*_: object) -> None:
    return None


def _log_failure(failure: Failure) -> None:
    logger.error(
        "Could not end the in-flight downloads: %(error)s", {"error": failure.getErrorMessage()}
    )


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
