"""The one place that touches Scrapy's engine internals: the forced stop.

Scrapy's engine closes a spider only once its slot's in-progress set is
empty, and offers no public way to drop in-flight requests. This module
reaches into that slot; it is written for Scrapy 2.14 to 2.19 and checked
once at start-up, so that a Scrapy without those internals disables forced
stops with one clear log line instead of failing mid-crawl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import scrapy

if TYPE_CHECKING:
    from scrapy.core.engine import ExecutionEngine

SUPPORTED_SCRAPY = "2.14 to 2.19"


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
    if requeue:
        for request in slot.inprogress:
            slot.scheduler.enqueue_request(request.replace(dont_filter=True))
    slot.inprogress.clear()
    slot._maybe_fire_closing()
    return dropped


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
