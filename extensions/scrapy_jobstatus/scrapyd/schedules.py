"""Periodic schedules on a Scrapyd node: addschedule.json,
listschedules.json, delschedule.json and runschedule.json, and the firing
of due ticks (``ScheduleFiring``, started by the launcher).

Every node fires: each looks for due ticks in a thread of its own and claims
them in the store, where a tick is claimed once whatever the nodes trying
(``_sqlstore.fire_schedules``). A node sleeps until the next tick of any
schedule, by the store's clock, and looks again at least every
``POLL_INTERVAL`` seconds for schedules added or changed elsewhere.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from scrapyd.webservice import param, spider_list
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import http, server

from .._model import shown
from .._schedule import (
    CatchUp,
    InvalidSchedule,
    Overlap,
    Rule,
    Schedule,
    validate_name,
)
from .._store import JobStore, StoreError, open_store
from ._params import ServiceError, read_choice, read_flag, read_name, read_seconds, refused
from ._resource import NodeResource
from .queue import job_options

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric
    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from .._schedule import Firing
    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.schedules")

# Seconds between two looks for due ticks when none is due sooner: a
# schedule added (or enabled) on another node is seen within this.
POLL_INTERVAL = 1.0
# A look never sleeps less: a tick's claim is a few milliseconds.
MIN_WAIT = 0.01
# Seconds after a failed look (the store away) before the next.
RETRY_WAIT = 2.0
# Seconds a look waits for the store (a connection, a statement, SQLite's
# write lock) before it fails: a store away is looked for again soon.
STORE_DEADLINE = 4.0
# Lines of each schedule's history listschedules.json?history=1 gives.
HISTORY_LINES = 50
# Seconds a starting_deadline may be: a year.
MAX_DEADLINE = 366 * 86400.0
# addschedule.json's own parameters; the others are the spider's arguments.
OWN_PARAMETERS = ("jobid", "_job")

TICKS = Counter(
    "jobstatus_schedule_ticks",
    "Ticks of periodic schedules this node claimed, by outcome: fired (a job queued), "
    "skipped (the schedule's job still active), missed (late, or while nothing ran).",
    ["outcome"],
    registry=None,
)
FIRING_LAG = Histogram(
    "jobstatus_schedule_firing_lag_seconds",
    "Seconds from a tick to its job queued, for the ticks this node fired.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
    registry=None,
)
for _outcome in ("fired", "skipped", "missed"):
    TICKS.labels(_outcome)


class ScheduleCollector(Collector):
    """The schedules in the store by state, read at each scrape."""

    def __init__(self, node: JobStatusNode):
        self.node = node

    def collect(self) -> Iterable[Metric]:
        counts = self.node.store.schedule_counts()
        family = GaugeMetricFamily(
            "jobstatus_schedules",
            "Periodic schedules in the job store by state: enabled or disabled.",
            labels=["state"],
        )
        family.add_metric(["enabled"], counts.get(True, 0))
        family.add_metric(["disabled"], counts.get(False, 0))
        yield family


class ScheduleFiring:
    """The node's claims of due ticks, in a thread of its own with a store
    of its own: the node's reactor never waits on them."""

    def __init__(self, node: JobStatusNode):
        self.node = node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: JobStore | None = None
        self._failing = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.fire_once())
        self._close_store()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # a pool of a server gone
                log.failure("Could not close the schedules' store")

    def fire_once(self) -> float:
        """One look; the seconds to wait before the next."""
        try:
            if self._store is None:
                self._store = open_store(self.node.db, node=self.node.name, deadline=STORE_DEADLINE)
            firing = self._store.fire_schedules(self.node.name, self.node.webhooks)
        except StoreError as e:
            if not self._failing:
                log.error("Could not fire the due schedules: {error}", error=str(e))
            self._failing = True
            # A store of its own afresh at the next look: a PostgreSQL pool
            # that failed waits ever longer before it connects again.
            self._close_store()
            return RETRY_WAIT
        except Exception:
            log.failure("Could not fire the due schedules")
            return RETRY_WAIT
        if self._failing:
            log.info("Firing the due schedules again")
        self._failing = False
        self._report(firing)
        if firing.wait is None:
            return POLL_INTERVAL
        return min(max(firing.wait, MIN_WAIT), POLL_INTERVAL)

    def _report(self, firing: Firing) -> None:
        for record in firing.records:
            TICKS.labels(str(record.outcome)).inc(record.count)
            if record.job_id is not None:
                FIRING_LAG.observe(max(record.lag, 0.0))
                log.info("Schedule tick: job {job} queued", job=record.job_id)
            elif record.details:
                log.info("Schedule tick skipped: {details}", details=record.details)
            else:
                log.warn("Schedule: {count} tick(s) missed", count=record.count)


# -- the services ----------------------------------------------------------------


def read_schedule_name(value: str) -> str:
    try:
        return validate_name(value)
    except InvalidSchedule as e:
        raise refused(str(e)) from None


def not_found(project: str, name: str) -> ServiceError:
    return ServiceError(http.NOT_FOUND, f"schedule '{name}' not found in project '{project}'")


class AddSchedule(NodeResource):
    """``POST addschedule.json``: create or replace a schedule by name; with
    only ``project``, ``name`` and ``enabled``, enable or disable one.

    The checks of the project, version and spider are Scrapyd's
    schedule.json's, in a thread (they read the store, and the first one of a
    project's version runs ``scrapy list``); the write is in the node's store
    pool."""

    # Spider arguments may be of any length, as schedule.json takes them.
    max_param_bytes = None

    @param("project")
    @param("name")
    @param("spider", required=False)
    @param("cron", required=False)
    @param("timezone", required=False)
    @param("every", required=False)
    @param("enabled", required=False)
    @param("overlap", required=False)
    @param("catch_up", required=False)
    @param("starting_deadline", required=False)
    @param("priority", required=False)
    @param("timeout", required=False)
    @param("retries", required=False)
    @param("webhook", required=False)
    @param("webhook_secret", required=False)
    @param("_version", dest="version", required=False)
    @param("setting", required=False, default=list, multiple=True)
    def render_POST(  # noqa: N802 (Twisted's name)
        self,
        txrequest: Request,
        project: str,
        name: str,
        spider: str | None,
        cron: str | None,
        timezone: str | None,
        every: str | None,
        enabled: str | None,
        overlap: str | None,
        catch_up: str | None,
        starting_deadline: str | None,
        priority: str | None,
        timeout: str | None,
        retries: str | None,
        webhook: str | None,
        webhook_secret: str | None,
        version: str | None,
        setting: list[str],
    ) -> Any:
        name = read_schedule_name(name)
        read_name("project", project)
        on = None if enabled is None else read_flag("enabled", enabled)
        if spider is None and cron is None and every is None:
            if on is None:
                raise refused("give spider and cron or every; or enabled alone, to switch one")
            # Nothing else would change: refused rather than ignored.
            given = {
                "timezone": timezone,
                "overlap": overlap,
                "catch_up": catch_up,
                "starting_deadline": starting_deadline,
                "priority": priority,
                "timeout": timeout,
                "retries": retries,
                "webhook": webhook,
                "webhook_secret": webhook_secret,
                "_version": version,
                "setting": setting or None,
                # The spider's arguments: what Scrapyd's @param left.
                **{k.decode(errors="replace"): b"" for k in txrequest.args or {}},
            }
            others = [key for key, value in given.items() if value is not None]
            if others:
                raise refused(
                    f"{shown(others[0])}: without spider and cron or every, only enabled changes"
                )
            return self.node.calls.run(self._enable, project, name, on)
        if spider is None:
            raise refused("'spider' parameter is required")
        try:
            rule = Rule.parse(cron, timezone, every)
        except InvalidSchedule as e:
            raise refused(str(e)) from None
        try:
            args = {k.decode(): v[0].decode() for k, v in (txrequest.args or {}).items()}
        except UnicodeDecodeError:
            raise refused("the spider's arguments must be UTF-8") from None
        for key in args:
            if key in OWN_PARAMETERS or key.startswith("_"):
                raise refused(f"{shown(key)}: a schedule names its own jobs, by their tick")
        settings = {}
        for item in setting:
            key, equals, value = item.partition("=")
            if not equals or not key:
                raise refused(f"setting: {shown(item)} is not NAME=VALUE")
            settings[key] = value
        if timeout is not None:
            settings["JOBSTATUS_TIMEOUT"] = timeout
        options = job_options(self.node, settings, retries, webhook, webhook_secret)
        priority = "0" if priority is None else priority
        try:
            weight = float(priority)
        except ValueError:
            raise refused(f"priority: {shown(priority)} is not a number") from None
        schedule = Schedule(
            project=project,
            name=name,
            spider=spider,
            rule=rule,
            args=args,
            settings=settings,
            priority=weight,
            retries=options.retries,
            retry_delay=options.retry_delay,
            timeout=options.timeout,
            version=version,
            job_webhooks=options.webhooks,
            job_webhook_secret=options.webhook_secret,
            enabled=True if on is None else on,
            overlap=Overlap(
                read_choice("overlap", "allow" if overlap is None else overlap, map(str, Overlap))
            ),
            catch_up=CatchUp(
                read_choice("catch_up", "none" if catch_up is None else catch_up, map(str, CatchUp))
            ),
            starting_deadline=None
            if starting_deadline is None
            else read_seconds("starting_deadline", starting_deadline, MAX_DEADLINE),
        )
        # Scrapyd's checks read the store and run `scrapy list`: in a thread.
        d = deferToThread(self._check_spider, project, spider, version)
        d.addCallback(lambda _: self.node.calls.run(self._put, schedule))
        return d

    def answer(self, txrequest: Request, data: Any) -> bytes | int:
        if isinstance(data, Deferred):
            return self.answer_later(txrequest, data)
        return super().answer(txrequest, data)

    def answer_later(self, txrequest: Request, d: Deferred[Any]) -> int:
        """The answer of the write under way in the node's store pool."""
        gone: list[bool] = []
        txrequest.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(data: Any = None, failure: Failure | None = None) -> None:
            if gone:
                return
            try:
                if failure is not None:
                    failure.raiseException()
                content = self.answer(txrequest, data)
            except Exception as e:
                content = self.error_answer(txrequest, e)
            txrequest.write(content)  # type: ignore[arg-type]
            txrequest.finish()

        d.addCallbacks(write, lambda failure: write(failure=failure))
        return server.NOT_DONE_YET

    def _check_spider(self, project: str, spider: str, version: str | None) -> None:
        """Scrapyd's schedule.json's checks: the project, the version, and
        the spider in the egg's ``scrapy list``."""
        root = self.root
        if project not in root.poller.queues:
            raise refused(f"project '{project}' not found")
        if version and root.eggstorage.get(project, version) == (None, None):
            raise refused(f"version '{version}' not found")
        if spider not in spider_list.get(project, version, runner=root.runner):
            raise refused(f"spider '{spider}' not found")

    def _put(self, schedule: Schedule) -> dict[str, Any]:
        store = self.node.store
        created = store.put_schedule(schedule)
        info = store.schedules(schedule.project, schedule.name)[0]
        return {"created": created, "schedule": info.to_dict()}

    def _enable(self, project: str, name: str, enabled: bool) -> dict[str, Any]:
        store = self.node.store
        if not store.enable_schedule(project, name, enabled):
            raise not_found(project, name)
        return {"created": False, "schedule": store.schedules(project, name)[0].to_dict()}


class ListSchedules(NodeResource):
    """``GET listschedules.json?[project][&name][&history=1]``: the
    schedules, each with its rule, next and last tick, last job and counts;
    with ``history=1``, the latest lines of each one's history."""

    in_thread = True

    @param("project", required=False)
    @param("name", required=False)
    @param("history", required=False, default="0")
    def render_GET(  # noqa: N802 (Twisted's name)
        self, txrequest: Request, project: str | None, name: str | None, history: str
    ) -> dict[str, Any]:
        project = read_name("project", project)
        name = None if name is None else read_schedule_name(name)
        lines = HISTORY_LINES if read_flag("history", history) else 0
        infos = self.node.store.schedules(project, name, history=lines)
        return {"schedules": [info.to_dict(history=bool(lines)) for info in infos]}


class DelSchedule(NodeResource):
    """``POST delschedule.json``: remove a schedule (its jobs stay)."""

    in_thread = True

    @param("project")
    @param("name")
    def render_POST(self, txrequest: Request, project: str, name: str) -> dict[str, Any]:  # noqa: N802
        name = read_schedule_name(name)
        read_name("project", project)
        if not self.node.store.delete_schedule(project, name):
            raise not_found(project, name)
        return {"deleted": name}


class RunSchedule(NodeResource):
    """``POST runschedule.json``: one job of a schedule at once, id
    ``<name>-<now>``, as its overlap policy allows (409 while its job is
    active with overlap = skip)."""

    in_thread = True

    @param("project")
    @param("name")
    def render_POST(self, txrequest: Request, project: str, name: str) -> dict[str, Any]:  # noqa: N802
        name = read_schedule_name(name)
        read_name("project", project)
        result = self.node.store.run_schedule(project, name, self.node.webhooks)
        if result is None:
            raise not_found(project, name)
        if result.active is not None:
            raise ServiceError(
                http.CONFLICT,
                f"job {result.active} of schedule '{name}' is still active (overlap = skip)",
                active=result.active,
            )
        if not result.queued:
            raise ServiceError(http.CONFLICT, f"job id '{result.job_id}' is already used")
        return {"jobid": result.job_id}
