"""A crawl's hold on its job: the lease each of its writes renews.

On a store shared by several nodes (PostgreSQL), another node takes a job
over once its crawl's lease has run out by the store's clock. So a crawl
that could not renew its lease for ``node_timeout - 5`` seconds (cut off
from the store) pauses its engine: no new request, the in-flight ones
finish. It goes on once a write goes through again with the job still its
own; if another attempt holds the job by then, the crawl closes at once. At
most one attempt of a job crawls at any moment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._engine import unpause

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.crawler import Crawler

    from ._settings import Lease
    from ._store import SaveResult

logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_SUPERSEDED = "jobstatus_superseded"


class LeaseKeeper:
    def __init__(
        self, crawler: Crawler, lease: Lease, job_id: str, lost: Callable[[], None]
    ) -> None:
        self.crawler = crawler
        self.lease = lease
        self.job_id = job_id
        # Called once when the job turns out to be another attempt's.
        self._lost = lost
        # When the latest write that went through began: the lease holds
        # for ``lease.seconds`` from a moment after it. None until the first.
        self.renewed_at: float | None = None
        self.paused = False
        self.lost = False

    def written(self, result: SaveResult | None, started_at: float, now: float) -> None:
        """A write that began at ``started_at`` ended at ``now``: with
        ``result``, or None when it failed."""
        if result is None or self.lost:
            return
        if result.lost:
            self.lost = True
            logger.warning(
                "Job %(job)s is no longer this crawl's: another attempt holds it (its lease "
                "ran out while this crawl could not reach the job store), or another process "
                "ended it; closing at once",
                {"job": self.job_id},
            )
            self._lost()
            return
        self.renewed_at = max(self.renewed_at or started_at, started_at)
        if self.paused and not self._overdue(now):
            self.paused = False
            engine = self.crawler.engine
            if engine is not None:
                unpause(engine)
            logger.info(
                "Job %(job)s: the job store is reachable again and the job is still this "
                "crawl's; crawling on",
                {"job": self.job_id},
            )

    def check(self, now: float) -> None:
        """Pause the crawl if its lease may run out before it is renewed."""
        if self.paused or self.lost or not self.lease.shared or not self._overdue(now):
            return
        engine = self.crawler.engine
        if engine is None or engine.paused:
            return  # paused by someone else (the telnet console): left to them
        engine.pause()
        self.paused = True
        self.crawler.stats.inc_value("jobstatus/lease_pauses")
        logger.warning(
            "Job %(job)s could not renew its lease in the job store for %(seconds)g s: "
            "pausing the crawl (no new requests; in-flight ones finish) until the store is "
            "reachable, so that no other node's attempt crawls beside it",
            {"job": self.job_id, "seconds": self.lease.pause_after},
        )

    def _overdue(self, now: float) -> bool:
        return self.renewed_at is not None and now - self.renewed_at >= self.lease.pause_after
