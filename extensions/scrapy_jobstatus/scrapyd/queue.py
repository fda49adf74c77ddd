"""Scrapyd's queue in the job store: ``spiderqueue`` and ``poller`` in
scrapyd.conf.

schedule.json records a pending job with no node; a node with a free slot
claims the next one (priority first, then age), whatever node it was
scheduled on: the nodes sharing a store share one queue. cancel.json's
removal of a pending job is that job's cancel. Scrapyd's own services stay as
they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapyd.interfaces import IPoller, ISpiderQueue
from scrapyd.scheduler import SpiderScheduler
from scrapyd.utils import get_project_list
from twisted.internet.defer import DeferredQueue
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import error, http
from zope.interface import implementer

from .._model import (
    JOB_RETRY_DELAY,
    InvalidJobId,
    InvalidSetting,
    JobState,
    JobStatus,
    pending_job,
    shown,
    validate_job_id,
)
from .._settings import parse_retries, parse_timeout, setting_number
from .._store import JobStore, StoreError, open_store
from .._webhooks import InvalidWebhook, job_webhooks
from ._calls import StoreUnavailable, unavailable
from ._node import shared_node
from .metrics import timed_store_write

if TYPE_CHECKING:
    from scrapyd.config import Config
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.queue")

# Settings of the node, not of a job (a job's own webhook is the `webhook`
# argument, signed with its own key: `webhook_secret`).
NODE_SETTINGS = (
    "JOBSTATUS_DB",
    "JOBSTATUS_PROJECT",
    "JOBSTATUS_WEBHOOKS",
    "JOBSTATUS_WEBHOOK_SECRET",
    "JOBSTATUS_WEBHOOK_DELIVER",
    "JOBSTATUS_JOBDIR",
    "JOBDIR",
)
# schedule.json's argument of the job's own webhook URLs (space-separated),
# and of their key (whsec_...): stored to sign with, never a spider argument.
WEBHOOK_ARGUMENT = "webhook"
WEBHOOK_SECRET_ARGUMENT = "webhook_secret"  # noqa: S105 (a parameter name)
# Seconds a claim of the poller may wait for the store (off the reactor): more
# than the services' deadline, as crawls writing at once hold SQLite's lock
# in turns.
CLAIM_DEADLINE = 5.0
# schedule.json's argument of the job's automatic retries (JOBSTATUS_RETRIES).
RETRIES_ARGUMENT = "retries"
# schedule.json's overlap=skip: refused while a job of the same spider (and
# of the same overlap_key, if given) is active.
OVERLAP_ARGUMENT = "overlap"
OVERLAP_KEY_ARGUMENT = "overlap_key"


def message_of(state: JobState) -> dict[str, Any]:
    """A queued job as Scrapyd's queues give it: spider arguments, with the
    spider's ``name``, the ``_job`` id, its ``settings`` and egg ``_version``."""
    message = {**state.args, "name": state.spider, "_job": state.job_id, "settings": state.settings}
    if state.version is not None:
        message["_version"] = state.version
    return message


def refuse(message: str) -> error.Error:
    """A refusal as Scrapyd's schedule.json answers one: status "error"."""
    return error.Error(code=http.OK, message=message.encode())


@dataclass(frozen=True)
class JobOptions:
    """What a job's parameters say besides its spider's arguments (checked
    by ``job_options``)."""

    retries: int | None
    retry_delay: float | None
    webhooks: list[str]
    webhook_secret: str | None = field(repr=False)
    timeout: float | None


def job_options(
    node: JobStatusNode,
    settings: dict[str, str],
    retries: str | None,
    webhook: str | None,
    webhook_secret: str | None,
) -> JobOptions:
    """A job's settings, retries and own webhooks, as schedule.json (and
    addschedule.json) take them; a node setting, a timeout above the node's
    cap, bad retries or a bad webhook is refused, in one line."""
    timeout = _check_settings(node, settings)
    retry_count, retry_delay = _retries(retries, settings)
    try:
        own, key = job_webhooks(webhook, webhook_secret)
    except InvalidWebhook as e:
        raise refuse(str(e)) from None
    return JobOptions(retry_count, retry_delay, own, key, timeout)


def _check_settings(node: JobStatusNode, settings: dict[str, str]) -> float | None:
    for name in NODE_SETTINGS:
        if name in settings:
            raise refuse(f"{name} is set by the node, not by a job")
    cap = node.timeout_max
    raw = settings.get("JOBSTATUS_TIMEOUT")
    try:
        timeout = parse_timeout(raw, cap, f"this node's maximum of {cap:g} seconds")
    except InvalidSetting as e:
        raise refuse(str(e)) from None
    return None if raw is None else timeout


def _retries(given: str | None, settings: dict[str, str]) -> tuple[int | None, float | None]:
    """The job's retries (the argument, else its JOBSTATUS_RETRIES
    setting, else the project's, known when its crawl opens) and their
    delay, known to the queue before any crawl runs: a crawl may die
    before it opens its job."""
    raw = given if given is not None else settings.get("JOBSTATUS_RETRIES")
    try:
        retries = None if raw is None else parse_retries(raw)
        delay = settings.get("JOBSTATUS_RETRY_DELAY")
        retry_delay = (
            None
            if delay is None
            else setting_number("JOBSTATUS_RETRY_DELAY", delay, JOB_RETRY_DELAY)
        )
    except InvalidSetting as e:
        message = str(e)
        if given is not None:
            message = message.replace("JOBSTATUS_RETRIES", RETRIES_ARGUMENT, 1)
        raise refuse(message) from None
    if retry_delay is not None and retry_delay < 0:
        raise refuse(f"JOBSTATUS_RETRY_DELAY must not be negative, got {retry_delay:g}")
    return retries, retry_delay


@implementer(ISpiderQueue)
class SpiderQueue:
    """The pending jobs of one project."""

    def __init__(self, config: Config, project: str):
        self.node = shared_node(config)
        self.project = project

    def add(self, name: str, priority: float = 0.0, **spider_args: Any) -> None:
        """Record the pending job; a bad job id, a node setting or a timeout
        above the node's cap is refused before anything is written."""
        job = spider_args.pop("_job")
        settings = spider_args.pop("settings", None) or {}
        version = spider_args.pop("_version", None)
        try:
            validate_job_id(job)
        except InvalidJobId as e:
            raise refuse(str(e)) from None
        options = job_options(
            self.node,
            settings,
            spider_args.pop(RETRIES_ARGUMENT, None),
            spider_args.pop(WEBHOOK_ARGUMENT, None),
            spider_args.pop(WEBHOOK_SECRET_ARGUMENT, None),
        )
        overlap = spider_args.pop(OVERLAP_ARGUMENT, None)
        overlap_key = spider_args.pop(OVERLAP_KEY_ARGUMENT, None)
        if overlap not in (None, "allow", "skip"):
            raise refuse(f"overlap: {shown(overlap)} is not allow or skip")
        if overlap_key is not None and overlap != "skip":
            raise refuse("overlap_key goes with overlap=skip")
        state = pending_job(
            job,
            project=self.project,
            spider=name,
            node=None,  # queued: the first node with a free slot claims it
            args=spider_args,
            settings=settings,
            priority=priority,
            version=version,
            webhooks=self.node.webhooks,
            job_webhooks=options.webhooks,
            job_webhook_secret=options.webhook_secret,
            retries=options.retries,
            retry_delay=options.retry_delay,
        )
        state.overlap_key = overlap_key
        # Scrapyd's schedule.json answers what it raises in one line; a
        # store that did not take the job in time queued nothing (its
        # transaction rolled back): 503.
        try:
            if overlap == "skip":
                result = self.node.calls.bounded(self.node.store.add_alone, state)
                added, active = result.added, result.active
            else:
                added, active = self.node.calls.bounded(self.node.store.add_pending, state), None
        except StoreUnavailable as e:
            raise unavailable(f"the job is not queued: {e}") from None
        if active is not None:
            raise refuse(f"job {active} of spider '{name}' is still active (overlap=skip)")
        if not added:
            raise refuse(f"job id '{job}' is already used")

    # Scrapyd calls these on its reactor (daemonstatus.json, listjobs.json,
    # the website): while the store is down they give their last answer.

    def pop(self) -> dict[str, Any] | None:
        # A claim is never answered from memory: none while the store is
        # away (Scrapyd's poller takes None for "claimed elsewhere").
        try:
            state = self.node.calls.bounded(self.node.store.claim_job, self.node.name, self.project)
        except StoreUnavailable:
            return None
        return None if state is None else message_of(state)

    def list(self) -> list[dict[str, Any]]:
        store, key = self.node.store, ("queued", self.project)
        states = self.node.calls.sync(key, store.queued_jobs, self.project, default=[])
        return [message_of(s) for s in states]

    def count(self) -> int:
        store, key = self.node.store, ("count", self.project)
        return self.node.calls.sync(key, store.count_queued, self.project, default=0)

    def remove(self, func: Callable[[dict[str, Any]], bool]) -> int:
        """Cancel the pending jobs ``func`` selects: they stay in the store,
        ``cancelled``, and no node claims them. cancel.json calls it in the
        node's store pool; on the reactor, its waits are the store's
        deadline."""
        return self.node.calls.bounded(self._remove, func)

    def _remove(self, func: Callable[[dict[str, Any]], bool]) -> int:
        store = self.node.store
        removed = 0
        for state in store.queued_jobs(self.project):
            if (
                func(message_of(state))
                and store.request_cancel(state.job_id).before is JobStatus.PENDING
            ):
                removed += 1
        return removed

    def clear(self) -> None:
        self.remove(lambda message: True)


class ProjectQueues(Mapping[str, SpiderQueue]):
    """The queue of every project, read from the store at each use: a
    project deployed through any node of the cluster is known to all."""

    def __init__(self, config: Config):
        self.config = config

    def _projects(self) -> list[str]:
        return get_project_list(self.config)

    def __getitem__(self, project: str) -> SpiderQueue:
        if project not in self._projects():
            raise KeyError(project)
        return SpiderQueue(self.config, project)

    def __contains__(self, project: object) -> bool:
        return project in self._projects()

    def __iter__(self) -> Iterator[str]:
        return iter(self._projects())

    def __len__(self) -> int:
        return len(self._projects())


@implementer(IPoller)
class Poller:
    """Scrapyd's poller, claiming from the shared queue one job per free
    slot of this node, of any project, the highest priority first.

    Claims are made in a thread, with a store of its own: a store that is
    slow or down never holds up the node's reactor."""

    def __init__(self, config: Config):
        self.node = shared_node(config)
        self.queues = ProjectQueues(config)
        self.dq: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self._store: JobStore | None = None

    def poll(self) -> Deferred[None] | None:
        # The launcher waits on next() once per free slot; Scrapyd's timer
        # waits for the claims before it polls again.
        free = len(self.dq.waiting)
        if not free:
            return None
        d = deferToThread(self._claim, free)
        d.addCallbacks(self._claimed, self._failed)
        return d

    def _claim(self, free: int) -> list[JobState]:
        if self._store is None:
            # Its waits bounded: the poller's timer waits for it, and the
            # claims go on soon after an outage.
            self._store = open_store(self.node.db, node=self.node.name, deadline=CLAIM_DEADLINE)
        claimed: list[JobState] = []
        try:
            while len(claimed) < free and self._store.count_queued():
                with timed_store_write():
                    state = self._store.claim_job(self.node.name)
                if state is None:  # claimed by another node meanwhile
                    break
                claimed.append(state)
        except StoreError:
            # Opened afresh at the next poll: a PostgreSQL pool that failed
            # waits ever longer before it connects again.
            store, self._store = self._store, None
            with contextlib.suppress(Exception):  # a pool of a server gone
                store.close()
            if not claimed:
                raise
        return claimed

    def _claimed(self, claimed: list[JobState]) -> None:
        for state in claimed:
            message = message_of(state)
            message["_project"] = state.project
            message["_spider"] = message.pop("name")
            self.dq.put(message)

    def _failed(self, failure: Failure) -> None:
        # Scrapyd's timer stops for good on an error: say why, poll again.
        if failure.check(StoreError):
            # While the store is down, the node's one line says it.
            if self.node.calls.up:
                log.error("Could not read the queue: {error}", error=failure.getErrorMessage())
                self.node.calls.check()
        else:
            log.failure("Could not read the queue", failure)

    def next(self) -> Any:
        return self.dq.get()

    def update_projects(self) -> None:
        """Nothing to refresh: the projects are read at each use."""


class Scheduler(SpiderScheduler):
    """Scrapyd's scheduler with the projects of the whole store. Scrapyd has
    no option for it: the web root (``dashboard.Root``) installs it."""

    def update_projects(self) -> None:
        self.queues = ProjectQueues(self.config)
