"""Periodic schedules: the rule of their ticks, and what a due tick does.

Pure: no SQL, no Twisted. The store claims each tick once (``_sqlstore``);
this module says when the ticks are, which of them a claim fires, skips or
counts as missed, and what job a fired tick makes.

A ``cron`` rule is read in its ``timezone``'s wall-clock time. Across a DST
change, a wall-clock time that happens twice (the hour repeated in autumn)
fires once, at its first occurrence; one that does not happen (the hour
skipped in spring) is skipped: no job that day for a tick inside that hour.
An ``every`` rule ticks at the multiples of its seconds since the Unix epoch
(UTC): every node computes the same ticks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._model import (
    InvalidJobId,
    JobState,
    isoformat,
    pending_job,
    redact_url,
    shown,
    validate_job_id,
)

# The shortest period of an ``every`` rule, in seconds.
MIN_EVERY = 1
MAX_EVERY = 366 * 86400
# A tick claimed later than this many seconds after it is missed; a late
# tick is run only with catch_up = latest (and its starting_deadline).
LATE_AFTER = 5.0
# Ticks one claim fires at most (those on time: a few).
MAX_FIRED = 100
# Ticks counted one by one when a cron rule's missed ticks are counted;
# beyond, the count stops there.
MAX_COUNTED = 10_000
# How far ahead a cron rule's next tick is looked for (a rule such as
# "0 0 30 2 *" has none).
MAX_YEARS = 5
NAME_CHARS = 100
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Overlap(StrEnum):
    """What a tick does while the schedule's previous job is still active
    (Kubernetes CronJob's concurrencyPolicy)."""

    ALLOW = "allow"
    SKIP = "skip"
    REPLACE = "replace"


class CatchUp(StrEnum):
    """What a schedule does with the ticks it missed."""

    NONE = "none"
    LATEST = "latest"


class Outcome(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"


class InvalidSchedule(ValueError):
    """A schedule's parameter breaks its rule; the message names it."""


def utc_iso(ts: float) -> str:
    """A tick as job ids and documents show it: whole seconds, UTC, ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_id_for(name: str, tick: float) -> str:
    """The job of a tick: the same whichever node claims it, so a claim
    retried makes no second job."""
    return f"{name}-{utc_iso(tick)}"


def run_job_id(name: str, now: float) -> str:
    """The job of a run asked for at once: to the millisecond, never the id
    of a tick."""
    return f"{name}-{isoformat(now)}"


def validate_name(name: str) -> str:
    """A schedule's name: a job id's start, as Scrapyd would accept it."""
    if not name or len(name) > NAME_CHARS or not SCHEDULE_NAME.fullmatch(name):
        raise InvalidSchedule(
            f"name: {shown(name)} is not a schedule name (1 to {NAME_CHARS} letters, digits,"
            " '_', '.' or '-', starting with a letter or digit)"
        )
    try:
        validate_job_id(job_id_for(name, 0))
    except InvalidJobId as e:
        raise InvalidSchedule(f"name: {e}") from None
    return name


@dataclass(frozen=True)
class Rule:
    """When a schedule ticks: ``cron`` in ``timezone``, or ``every`` seconds."""

    cron: str | None = None
    timezone: str = "UTC"
    every: int | None = None

    @classmethod
    def parse(cls, cron: str | None, timezone: str | None, every: str | int | None) -> Rule:
        """The rule of addschedule.json's parameters; InvalidSchedule, in one
        line, naming the parameter."""
        if (cron is None) == (every is None):
            raise InvalidSchedule("give either cron (with an optional timezone) or every")
        if every is not None:
            if timezone is not None:
                raise InvalidSchedule("timezone goes with cron, not with every")
            return cls(every=parse_every(every))
        assert cron is not None
        zone = timezone or "UTC"
        load_zone(zone)
        expression = " ".join(cron.split())
        fields = expression.split(" ")
        if not expression.startswith("@") and len(fields) not in (5, 6):
            raise InvalidSchedule(
                f"cron: {shown(cron)} has {len(fields)} fields, not 5 (minute hour day month"
                " weekday) or 6 (second first)"
            )
        croniter, cron_error = _croniter()
        try:
            valid = croniter.is_valid(expression, second_at_beginning=True)
        except (cron_error, ValueError):
            valid = False
        rule = cls(cron=expression, timezone=zone)
        if not valid or rule._first_after(datetime(2000, 1, 1)) is None:
            raise InvalidSchedule(f"cron: {shown(cron)} is not a valid cron expression")
        return rule

    @property
    def zone(self) -> ZoneInfo:
        return load_zone(self.timezone)

    def next_after(self, ts: float) -> float | None:
        """The first tick strictly after ``ts`` (seconds since the epoch);
        None if the rule never ticks again."""
        if self.every is not None:
            return float((math.floor(ts / self.every) + 1) * self.every)
        zone = self.zone
        local = datetime.fromtimestamp(ts, zone)
        wall = local.replace(tzinfo=None, microsecond=0)
        while True:
            candidate = self._first_after(wall)
            if candidate is None:
                return None
            wall = candidate
            instant = _instant(candidate, zone)
            # A wall-clock time that does not happen is skipped; one that
            # happens twice fires at its first occurrence only.
            if instant is not None and instant > ts:
                return instant

    def ticks(self, first: float, until: float, limit: int = MAX_COUNTED) -> tuple[int, float]:
        """How many ticks from ``first`` (a tick) to ``until``, both
        included (counted up to ``limit``), and the latest of them."""
        if self.every is not None:
            count = math.floor((until - first) / self.every) + 1
            return count, first + (count - 1) * self.every
        count, latest = 1, first
        tick = self.next_after(first)
        while tick is not None and tick <= until and count < limit:
            count, latest = count + 1, tick
            tick = self.next_after(tick)
        if tick is not None and tick <= until:  # the count stopped at the limit
            latest = self._latest_until(until) or latest
        return count, latest

    def _latest_until(self, until: float) -> float | None:
        zone = self.zone
        wall = datetime.fromtimestamp(until, zone).replace(tzinfo=None) + timedelta(seconds=1)
        while True:
            candidate = self._first_after(wall, prev=True)
            if candidate is None:
                return None
            instant = _instant(candidate, zone)
            if instant is not None and instant <= until:
                return instant
            wall = candidate

    def _first_after(self, wall: datetime, prev: bool = False) -> datetime | None:
        assert self.cron is not None
        croniter, cron_error = _croniter()
        try:
            it = croniter(
                self.cron,
                wall,
                second_at_beginning=True,
                max_years_between_matches=MAX_YEARS,
                is_prev=prev,
            )
            found = it.get_prev(datetime) if prev else it.get_next(datetime)
        except (cron_error, ValueError, OverflowError):
            return None
        return found  # type: ignore[no-any-return]

    def describe(self) -> str:
        """The rule in words, where it is a common one; else the rule."""
        if self.every is not None:
            return f"every {_seconds_in_words(self.every)}"
        assert self.cron is not None
        words = _cron_in_words(self.cron)
        return f"{words or 'cron ' + self.cron} ({self.timezone})"

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone, "every": self.every}


def _croniter() -> tuple[Any, type[Exception]]:
    # Imported at first use: every process that opens a store imports this
    # module, and only a node's firing reads a cron rule.
    from croniter import CroniterError, croniter

    return croniter, CroniterError


def parse_every(value: str | int) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise InvalidSchedule(f"every: {shown(value)} is not a whole number of seconds") from None
    if not MIN_EVERY <= seconds <= MAX_EVERY:
        raise InvalidSchedule(f"every: must be {MIN_EVERY} to {MAX_EVERY} seconds, not {seconds}")
    return seconds


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(
            f"timezone: {shown(name)} is not an IANA time zone (such as Europe/Paris)"
        ) from None


def _instant(wall: datetime, zone: ZoneInfo) -> float | None:
    """The instant of a wall-clock time in ``zone`` (its first occurrence);
    None if that time does not happen there (skipped by a DST change)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != wall:
        return None
    return aware.timestamp()


def _seconds_in_words(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return "second" if seconds == 1 else f"{seconds} seconds"


_NAMED = {
    "@yearly": "every year on 1 January at 00:00",
    "@annually": "every year on 1 January at 00:00",
    "@monthly": "every month on day 1 at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour at minute 0",
}
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _cron_in_words(cron: str) -> str | None:
    """The common five-field rules in words; None for the others."""
    if cron in _NAMED:
        return _NAMED[cron]
    fields = cron.split(" ")
    if len(fields) != 5 or not all(f.isdigit() for f in fields[:2]):
        if len(fields) == 5 and fields[0].isdigit() and fields[1:] == ["*"] * 4:
            return f"every hour at minute {int(fields[0])}"
        if len(fields) == 5 and fields[0].startswith("*/") and fields[1:] == ["*"] * 4:
            step = fields[0][2:]
            return f"every {step} minutes" if step.isdigit() else None
        return None
    minute, hour, day, month, weekday = fields
    at = f"at {int(hour):02d}:{int(minute):02d}"
    if day == "*" and month == "*" and weekday == "*":
        return f"every day {at}"
    if day == "*" and month == "*" and weekday.isdigit() and int(weekday) <= 7:
        return f"every {_DAYS[int(weekday) % 7]} {at}"
    if day == "*" and month == "*" and weekday in ("1-5", "MON-FRI", "mon-fri"):
        return f"every weekday {at}"
    if day.isdigit() and month == "*" and weekday == "*":
        return f"every month on day {int(day)} {at}"
    return None


@dataclass(frozen=True)
class Plan:
    """What a claim of a schedule's due ticks does: the ticks it fires, how
    many it counts as missed (and the latest of those), and the schedule's
    next tick."""

    fire: list[float]
    missed: int
    last_missed: float | None
    next_tick: float | None


def plan_ticks(
    rule: Rule,
    next_tick: float,
    now: float,
    catch_up: CatchUp,
    starting_deadline: float | None,
) -> Plan:
    """The due ticks from ``next_tick`` to ``now``: those on time (at most
    LATE_AFTER seconds old) fire; the older ones are missed, but with
    catch_up = latest the latest missed one fires too if it is younger than
    ``starting_deadline`` seconds (no limit: None)."""
    on_time_from = now - LATE_AFTER
    missed, last_missed = 0, None
    tick: float | None = next_tick
    if next_tick < on_time_from:
        missed, last_missed = rule.ticks(next_tick, on_time_from)
        tick = rule.next_after(last_missed)
    fire = []
    while tick is not None and tick <= now and len(fire) < MAX_FIRED:
        fire.append(tick)
        tick = rule.next_after(tick)
    if (
        last_missed is not None
        and catch_up is CatchUp.LATEST
        and (starting_deadline is None or now - last_missed <= starting_deadline)
    ):
        fire.insert(0, last_missed)
        missed -= 1
        last_missed = rule_previous(rule, next_tick, last_missed) if missed else None
    return Plan(fire, missed, last_missed, rule.next_after(now))


def rule_previous(rule: Rule, first: float, tick: float) -> float:
    """The tick before ``tick`` (at or after ``first``)."""
    if rule.every is not None:
        return tick - rule.every
    previous, current = first, rule.next_after(first)
    while current is not None and current < tick:
        previous, current = current, rule.next_after(current)
    return previous


@dataclass
class Schedule:
    """A periodic schedule as addschedule.json defines it. The job each tick
    makes takes its spider, arguments, settings, priority, retries, timeout
    and webhooks from here."""

    project: str
    name: str
    spider: str
    rule: Rule
    args: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    priority: float = 0.0
    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    version: str | None = None
    job_webhooks: list[str] = field(default_factory=list)
    job_webhook_secret: str | None = field(default=None, repr=False)
    enabled: bool = True
    overlap: Overlap = Overlap.ALLOW
    catch_up: CatchUp = CatchUp.NONE
    starting_deadline: float | None = None

    def job(self, job_id: str, scheduled_for: float, webhooks: list[str]) -> JobState:
        """The pending job of a tick (or of a run asked for now)."""
        settings = dict(self.settings)
        if self.timeout is not None:
            settings["JOBSTATUS_TIMEOUT"] = f"{self.timeout:g}"
        state = pending_job(
            job_id,
            project=self.project,
            spider=self.spider,
            node=None,
            args=self.args,
            settings=settings,
            priority=self.priority,
            version=self.version,
            webhooks=webhooks,
            job_webhooks=self.job_webhooks,
            job_webhook_secret=self.job_webhook_secret,
            retries=self.retries,
            retry_delay=self.retry_delay,
        )
        state.schedule = self.name
        state.scheduled_for = scheduled_for
        return state

    def event(self, record: TickRecord) -> dict[str, Any]:
        """The document of a schedule's webhook event: the schedule, and the
        line of its history the event reports."""
        return {
            "project": self.project,
            "schedule": self.name,
            "spider": self.spider,
            "rule": self.rule.describe(),
            **record.to_dict(),
        }

    def definition(self) -> dict[str, Any]:
        """What the store keeps of it besides its columns (the key
        included: it signs the deliveries; never shown)."""
        return {
            "rule": self.rule.to_dict(),
            "args": self.args,
            "settings": self.settings,
            "priority": self.priority,
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "timeout": self.timeout,
            "version": self.version,
            "job_webhooks": self.job_webhooks,
            "job_webhook_secret": self.job_webhook_secret,
            "overlap": str(self.overlap),
            "catch_up": str(self.catch_up),
            "starting_deadline": self.starting_deadline,
        }

    @classmethod
    def from_definition(
        cls, project: str, name: str, spider: str, enabled: bool, data: dict[str, Any]
    ) -> Schedule:
        rule = data["rule"]
        return cls(
            project=project,
            name=name,
            spider=spider,
            enabled=enabled,
            rule=Rule(rule["cron"], rule["timezone"], rule["every"]),
            args=data["args"],
            settings=data["settings"],
            priority=data["priority"],
            retries=data["retries"],
            retry_delay=data.get("retry_delay"),
            timeout=data["timeout"],
            version=data["version"],
            job_webhooks=data["job_webhooks"],
            job_webhook_secret=data["job_webhook_secret"],
            overlap=Overlap(data["overlap"]),
            catch_up=CatchUp(data["catch_up"]),
            starting_deadline=data["starting_deadline"],
        )


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as the store has it: its definition and its ticks so far."""

    schedule: Schedule
    next_tick: float | None
    last_tick: float | None
    last_job: str | None
    last_job_status: str | None
    fired: int
    skipped: int
    missed: int
    created_at: float
    updated_at: float
    history: list[TickRecord] = field(default_factory=list)

    def to_dict(self, history: bool = False) -> dict[str, Any]:
        s = self.schedule
        document = {
            "project": s.project,
            "name": s.name,
            "spider": s.spider,
            "enabled": s.enabled,
            **s.rule.to_dict(),
            "rule": s.rule.describe(),
            "args": dict(s.args),
            "settings": dict(s.settings),
            "priority": s.priority,
            "retries": s.retries or 0,
            "timeout": s.timeout,
            "version": s.version,
            "webhooks": [redact_url(url) for url in s.job_webhooks],
            "overlap": str(s.overlap),
            "catch_up": str(s.catch_up),
            "starting_deadline": s.starting_deadline,
            "next_tick": isoformat(self.next_tick) if s.enabled else None,
            "last_tick": isoformat(self.last_tick),
            "last_job": self.last_job,
            "last_job_status": self.last_job_status,
            "fired": self.fired,
            "skipped": self.skipped,
            "missed": self.missed,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }
        if history:
            document["history"] = [t.to_dict() for t in self.history]
        return document


@dataclass(frozen=True)
class TickRecord:
    """One line of a schedule's history: a tick fired (its job), skipped
    (the job still active), or ``count`` ticks missed up to ``tick``."""

    tick: float
    outcome: Outcome
    count: int
    job_id: str | None
    node: str | None
    recorded_at: float
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tick": isoformat(self.tick),
            "outcome": str(self.outcome),
            "count": self.count,
            "job_id": self.job_id,
            "node": self.node,
            "recorded_at": isoformat(self.recorded_at),
            "details": self.details,
        }

    @property
    def lag(self) -> float:
        return self.recorded_at - self.tick


def first_tick(rule: Rule, now: float) -> float | None:
    """A new (or changed) schedule's first tick: the next after now."""
    return rule.next_after(now)


@dataclass(frozen=True)
class Firing:
    """A node's pass over the due schedules: what each claim recorded, and
    the seconds until the next tick of any schedule (None: none enabled)."""

    records: list[TickRecord]
    wait: float | None


@dataclass(frozen=True)
class RunResult:
    """A run asked for at once: its job, or the active job that stopped it
    (overlap = skip)."""

    job_id: str
    queued: bool
    active: str | None = None


@dataclass(frozen=True)
class AddResult:
    """A one-off job queued unless a like one is active (schedule.json's
    overlap = skip): ``active`` names the one that stopped it."""

    added: bool
    active: str | None = None
