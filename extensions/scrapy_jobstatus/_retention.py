"""Retention: how many ended jobs a store keeps, and for how long.

A pruned job goes whole (its row, errors, events, series points and webhook
deliveries with their attempts); the files beside it (a JOBDIR, a node's log
and items files) are its caller's to remove, from the ``PrunedJob`` records.
Only ended jobs go, the oldest to end first; an active or paused job never
does. Pruning runs in small transactions (``ROWS_PER_BATCH`` rows at most),
with a pause between them twice as long as the last one took, so the crawls
writing meanwhile wait for it no longer than for one batch. Pure Python
over the store's contract: no Scrapy, no Twisted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._store import JobStore

DAY = 86400.0
# Rows one transaction deletes at most (jobs, and the rows of their errors,
# events, series, deliveries and attempts): a few milliseconds of SQLite's
# write lock.
ROWS_PER_BATCH = 500
# Jobs one transaction looks at: short jobs have ten rows or more each.
JOBS_PER_BATCH = 50
# Seconds between two transactions of a prune at least; else twice as long
# as the last one took, so that writers waiting for the lock get it in
# between, and a prune takes a third of the store's writing time at most.
MIN_PAUSE = 0.005
PAUSE_FACTOR = 2.0
# Delivered (or given up) webhook deliveries stay this long past their
# maximum age, for the job's webhook log.
DELIVERIES_KEPT_PAST_MAX_AGE = DAY
# Tick records kept per periodic schedule (its history); older ones go with
# keep_days too. Its counts of fired, skipped and missed ticks stay.
TICKS_KEPT = 1000


@dataclass(frozen=True)
class Retention:
    """``keep_finished`` ended jobs at most, none ended more than
    ``keep_days`` days ago (0: no such limit); deliveries made (or given up)
    more than ``deliveries_for`` seconds ago go too (0: kept)."""

    keep_finished: int
    keep_days: float
    deliveries_for: float = 0.0

    @property
    def limited(self) -> bool:
        return bool(self.keep_finished or self.keep_days or self.deliveries_for)

    def ended_before(self, now: float) -> float | None:
        return now - self.keep_days * DAY if self.keep_days else None

    def describe(self) -> str:
        finished = f"{self.keep_finished}" if self.keep_finished else "no limit"
        days = f"{self.keep_days:g}" if self.keep_days else "no limit"
        return f"keep_finished {finished}, keep_days {days}"


@dataclass(frozen=True)
class PrunedJob:
    """A job pruned, for the files beside it."""

    job_id: str
    project: str | None
    spider: str | None
    jobdir: str | None
    # Attempts after the first write items files of their own.
    attempt: int = 1


@dataclass(frozen=True)
class PruneBatch:
    """One transaction of a prune: the jobs it deleted whole, the rows it
    deleted in all, and whether nothing is left to prune (``done``) or
    another process is pruning the store (``busy``)."""

    jobs: list[PrunedJob] = field(default_factory=list)
    rows: int = 0
    done: bool = True
    busy: bool = False


@dataclass
class PruneReport:
    jobs: int = 0
    deliveries: int = 0
    ticks: int = 0
    batches: int = 0
    busy: bool = False


def prune(
    store: JobStore,
    retention: Retention,
    *,
    now: float | None = None,
    batches: int | None = None,
    pruned: Callable[[list[PrunedJob]], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    pause: Callable[[float], None] = time.sleep,
) -> PruneReport:
    """Prune ``store`` to ``retention``, a batch at a time, up to
    ``batches`` transactions (None: until done); ``pruned`` gets each
    batch's jobs, after their transaction. Stops when another process is
    pruning, or at ``stopping()``."""
    now = time.time() if now is None else now
    return prune_ended(
        store,
        keep=retention.keep_finished or None,
        ended_before=retention.ended_before(now),
        deliveries_before=now - retention.deliveries_for if retention.deliveries_for else None,
        ticks_before=retention.ended_before(now),
        batches=batches,
        pruned=pruned,
        stopping=stopping,
        pause=pause,
    )


def prune_ended(
    store: JobStore,
    *,
    keep: int | None,
    ended_before: float | None,
    deliveries_before: float | None = None,
    ticks_before: float | None = None,
    batches: int | None = None,
    pruned: Callable[[list[PrunedJob]], None] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    pause: Callable[[float], None] = time.sleep,
) -> PruneReport:
    """The ended jobs beyond the newest ``keep`` (0: all of them) and those
    that ended before ``ended_before``; then the deliveries made or given up
    before ``deliveries_before``; then the schedules' tick records beyond
    ``TICKS_KEPT`` each or recorded before ``ticks_before``. None: no such
    limit."""
    report = PruneReport()

    def run(batch: Callable[[], PruneBatch]) -> bool:
        """The batches of one kind until done; False to stop pruning."""
        while batches is None or report.batches < batches:
            if stopping():
                return False
            started = time.monotonic()
            result = batch()
            held = time.monotonic() - started
            report.batches += 1
            if result.busy:
                report.busy = True
                return False
            if result.jobs:
                report.jobs += len(result.jobs)
                if pruned is not None:
                    pruned(result.jobs)
            if result.done:
                return True
            pause(max(MIN_PAUSE, PAUSE_FACTOR * held))
        return False

    cutoff = store.prune_cutoff(keep, ended_before)
    if cutoff is not None and not run(
        lambda: store.prune_jobs(cutoff, JOBS_PER_BATCH, ROWS_PER_BATCH)
    ):
        return report
    if deliveries_before is not None:

        def deliveries() -> PruneBatch:
            result = store.prune_deliveries(deliveries_before, ROWS_PER_BATCH)
            report.deliveries += result.rows
            return result

        if not run(deliveries):
            return report

    def ticks() -> PruneBatch:
        result = store.prune_ticks(ticks_before, TICKS_KEPT, ROWS_PER_BATCH)
        report.ticks += result.rows
        return result

    run(ticks)
    return report
