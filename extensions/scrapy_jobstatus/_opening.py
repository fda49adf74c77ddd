"""Opening a crawl's job: which job it is, its first state, its record in
the store.

The job id is Scrapyd's ``_job`` argument, else the job its JOBDIR names
(``scrapy crawl`` run again with its JOBDIR goes on with that job), else a
new one. A job id names one job: a job that ran, runs, or was cancelled is
not run again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._defaults import default
from ._model import (
    TERMINAL_STATUSES,
    InvalidJobId,
    JobState,
    JobStatus,
    new_job_id,
    validate_job_id,
)
from ._retention import DELIVERIES_KEPT_PAST_MAX_AGE, Retention
from ._settings import crawl_lease, store_location
from ._store import NODE_VARIABLE, StoreError, node_name
from ._tracker import JobTracker
from ._writer import StoreWriter

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

    from ._jobdir import JobDirSession
    from ._settings import JobSettings
    from ._webhooks import WebhookSettings

logger = logging.getLogger("scrapy_jobstatus.extension")

CLOSE_INVALID_ID = "jobstatus_invalid_job_id"
CLOSE_STORE_UNAVAILABLE = "jobstatus_store_unavailable"
# The job id names a job that cannot run again (it ran, runs, or was cancelled).
CLOSE_NOT_STARTABLE = "jobstatus_job_not_startable"


@dataclass
class OpenedJob:
    """The job a crawl tracks, or why it has none (its close reason); a
    refused job's writer is stopped."""

    tracker: JobTracker | None
    writer: StoreWriter | None
    refusal: str | None = None


def job_id_for(spider: Spider, session: JobDirSession) -> str:
    job_id = getattr(spider, "_job", None)
    if job_id is None:
        job_id = session.job_id
    if job_id is None:
        job_id = new_job_id()
        logger.info("Job id: %(job)s", {"job": job_id}, extra={"spider": spider})
    return job_id


def new_job_state(
    job_id: str,
    crawler: Crawler,
    config: JobSettings,
    webhooks: WebhookSettings | None,
    session: JobDirSession,
) -> JobState:
    now = time.time()
    assert crawler.spider is not None
    return JobState(
        job_id=job_id,
        spider=crawler.spider.name,
        project=crawler.settings.get("JOBSTATUS_PROJECT"),
        node=node_name(),
        status=JobStatus.RUNNING,
        created_at=now,
        started_at=now,
        attempt_started_at=now,
        updated_at=now,
        timeout=config.timeout,
        pid=os.getpid(),
        interval=config.interval,
        webhooks=list(webhooks.urls) if webhooks else [],
        jobdir=str(session.path) if session.path is not None else None,
        retries=config.retries,
        retry_delay=config.retry_delay,
    )


def crawl_retention(config: JobSettings, webhooks: WebhookSettings | None) -> Retention | None:
    """What the crawl prunes at its end: nothing on a Scrapyd node (the
    node prunes its store, files and all), else its settings' retention."""
    if os.environ.get(NODE_VARIABLE):
        return None
    max_age = (
        webhooks.policy.max_age if webhooks is not None else default("JOBSTATUS_WEBHOOK_MAX_AGE")
    )
    retention = Retention(
        config.keep_finished, config.keep_days, max_age + DELIVERIES_KEPT_PAST_MAX_AGE
    )
    return retention if retention.limited else None


async def open_job(
    crawler: Crawler,
    config: JobSettings,
    webhooks: WebhookSettings | None,
    session: JobDirSession,
    failing: bool,
) -> OpenedJob:
    """``failing``: the job fails at once (a bad setting): its JOBDIR is
    not checked."""
    spider = crawler.spider
    assert spider is not None
    job_id = job_id_for(spider, session)
    try:
        validate_job_id(job_id)
    except InvalidJobId as exc:
        logger.error("%(error)s", {"error": exc}, extra={"spider": spider})
        return OpenedJob(None, None, CLOSE_INVALID_ID)
    if not failing:
        session.check(job_id)
    # A plain crawl delivers its webhooks; under Scrapyd, the node does.
    deliver = webhooks if webhooks and webhooks.deliver else None
    location = store_location(crawler.settings)
    retention = crawl_retention(config, webhooks)
    writer = StoreWriter(location, config.interval, deliver, crawl_lease(location), retention)
    state = new_job_state(job_id, crawler, config, webhooks, session)
    tracker = JobTracker(
        state,
        failure_ratio=config.failure_ratio,
        stall_timeout=config.stall_timeout,
        stall_action=config.stall_action,
        pending_errors=config.pending_errors,
    )
    crawler.stats.set_value("jobstatus/job_id", job_id)
    writer.start()
    try:
        refusal = await _start(writer, state, config, session)
    except BaseException:
        await _stop_quietly(writer)
        raise
    if refusal is not None:
        await writer.stop()
        return OpenedJob(None, None, refusal)
    crawler.stats.set_value("jobstatus/job_id", state.job_id)
    return OpenedJob(tracker, writer)


async def _start(
    writer: StoreWriter, state: JobState, config: JobSettings, session: JobDirSession
) -> str | None:
    """Record the job as started; the close reason when it cannot start."""
    marked = session.job_id
    try:
        started = await writer.start_job(state, session.resuming)
        if not started.started and state.job_id == marked and not session.resuming:
            # The JOBDIR's job ended: this is a new crawl, a new job.
            state.job_id = new_job_id()
            logger.info("Job id: %(job)s", {"job": state.job_id})
            started = await writer.start_job(state)
    except StoreError as exc:
        if config.required:
            logger.error("%(error)s: not crawling (JOBSTATUS_REQUIRED is set)", {"error": exc})
            return CLOSE_STORE_UNAVAILABLE
        logger.error(
            "%(error)s; the crawl goes on unmonitored and the store is retried with backoff",
            {"error": exc},
        )
        return None
    if started.started:
        return None
    # A cancelled pending job never starts, and a finished or running one is
    # not run again.
    hint = ""
    if state.job_id == marked and started.job.status in TERMINAL_STATUSES:
        hint = f" (its JOBDIR {session.path}: remove it to crawl anew)"
    logger.error(
        "Job %(job)s is %(status)s already: not crawling%(hint)s",
        {"job": state.job_id, "status": started.job.status, "hint": hint},
    )
    return CLOSE_NOT_STARTABLE


async def _stop_quietly(writer: StoreWriter) -> None:
    try:
        await writer.stop()
    except Exception:  # the writer failed to start: nothing to stop
        return
