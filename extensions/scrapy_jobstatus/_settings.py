"""The JOBSTATUS_* settings of a crawl, read and checked once."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from scrapy.settings import BaseSettings
from scrapy.utils.project import data_path

from ._defaults import DEFAULTS, default
from ._location import is_postgres
from ._model import InvalidSetting, shown
from ._store import LEASE_MARGIN, NODE_TIMEOUT
from ._tracker import STALL_ACTIONS

STORE_VARIABLE = "JOBSTATUS_DB"
# How a Scrapyd node passes its node_timeout: the lease a crawl holds its
# job by, on a store shared by several nodes.
NODE_TIMEOUT_VARIABLE = "JOBSTATUS_NODE_TIMEOUT"
# A job's writes and cancel polls: a client of a node sets the interval, and
# a tiny one would have its crawl write to the shared store without pause.
MIN_INTERVAL = 0.1


@dataclass(frozen=True)
class JobSettings:
    timeout: float
    interval: float
    cancel_grace: float
    failure_ratio: float
    required: bool = default("JOBSTATUS_REQUIRED")
    store_wait: float = default("JOBSTATUS_STORE_WAIT")
    # The stall watchdog: seconds without progress while requests wait (0:
    # off), and what a stall does besides its warning.
    stall_timeout: float = default("JOBSTATUS_STALL_TIMEOUT")
    stall_action: str = default("JOBSTATUS_STALL_ACTION")
    # Pause and resume: a crawl of a Scrapyd node keeps its state in the
    # JOBDIR the node gives it (JOBSTATUS_JOBDIR).
    pausable: bool = default("JOBSTATUS_PAUSABLE")
    # Automatic retries of a failed attempt, and their base delay.
    retries: int = default("JOBSTATUS_RETRIES")
    retry_delay: float = default("JOBSTATUS_RETRY_DELAY")
    # Retention, applied at the crawl's end (0: no limit).
    keep_finished: int = default("JOBSTATUS_KEEP_FINISHED")
    keep_days: float = default("JOBSTATUS_KEEP_DAYS")
    # Errors kept in memory for the store's next write.
    pending_errors: int = default("JOBSTATUS_PENDING_ERRORS")

    @classmethod
    def defaults(cls) -> JobSettings:
        """For a job whose settings are bad: it still opens, to fail."""
        return cls.from_settings(BaseSettings())

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> JobSettings:
        """Raises InvalidSetting with a message that names the setting."""

        def number(name: str) -> float:
            return setting_number(name, settings.get(name), default(name))

        timeout_max = number("JOBSTATUS_TIMEOUT_MAX")
        if timeout_max < 0:
            raise InvalidSetting(f"JOBSTATUS_TIMEOUT_MAX must not be negative, got {timeout_max:g}")
        timeout = parse_timeout(
            settings.get("JOBSTATUS_TIMEOUT"), timeout_max, f"JOBSTATUS_TIMEOUT_MAX={timeout_max:g}"
        )
        interval = number("JOBSTATUS_INTERVAL")
        if interval < MIN_INTERVAL:
            raise InvalidSetting(
                f"JOBSTATUS_INTERVAL must be at least {MIN_INTERVAL:g} s, got {interval:g}"
            )
        grace = number("JOBSTATUS_CANCEL_GRACE")
        if grace < 0:
            raise InvalidSetting(f"JOBSTATUS_CANCEL_GRACE must not be negative, got {grace:g}")
        ratio = number("JOBSTATUS_FAILURE_RATIO")
        if not 0 <= ratio <= 1:
            raise InvalidSetting(f"JOBSTATUS_FAILURE_RATIO must be between 0 and 1, got {ratio:g}")
        store_wait = number("JOBSTATUS_STORE_WAIT")
        if store_wait < 0:
            raise InvalidSetting(f"JOBSTATUS_STORE_WAIT must not be negative, got {store_wait:g}")
        required = _flag(settings, "JOBSTATUS_REQUIRED")
        pausable = _flag(settings, "JOBSTATUS_PAUSABLE")
        retries = parse_retries(settings.get("JOBSTATUS_RETRIES"))
        # Used by the add-on (which leaves a bad one to this check).
        if number("JOBSTATUS_JOBDIR_WAIT") < 0:
            raise InvalidSetting("JOBSTATUS_JOBDIR_WAIT must not be negative")
        retry_delay = number("JOBSTATUS_RETRY_DELAY")
        if retry_delay < 0:
            raise InvalidSetting(f"JOBSTATUS_RETRY_DELAY must not be negative, got {retry_delay:g}")
        stall_timeout = number("JOBSTATUS_STALL_TIMEOUT")
        if stall_timeout < 0:
            raise InvalidSetting(
                f"JOBSTATUS_STALL_TIMEOUT must not be negative, got {stall_timeout:g}"
            )
        stall_action = _stall_action(settings.get("JOBSTATUS_STALL_ACTION"))
        keep_finished, keep_days = parse_retention(settings)
        pending_errors = number("JOBSTATUS_PENDING_ERRORS")
        if pending_errors < 1 or pending_errors != int(pending_errors):
            raise InvalidSetting(
                "JOBSTATUS_PENDING_ERRORS must be a whole number, 1 or more,"
                f" got {pending_errors:g}"
            )
        return cls(
            timeout,
            interval,
            grace,
            ratio,
            required,
            store_wait,
            stall_timeout=stall_timeout,
            stall_action=stall_action,
            pausable=pausable,
            retries=retries,
            retry_delay=retry_delay,
            keep_finished=keep_finished,
            keep_days=keep_days,
            pending_errors=int(pending_errors),
        )


def _flag(settings: BaseSettings, name: str) -> bool:
    try:
        return settings.getbool(name, default(name))
    except ValueError:
        raise InvalidSetting(
            f"{name} must be true or false, not {shown(settings.get(name))}"
        ) from None


def _stall_action(raw: object) -> str:
    """JOBSTATUS_STALL_ACTION: ``warn`` (the default) or ``cancel``, in any case."""
    if raw is None or raw == "":
        return default("JOBSTATUS_STALL_ACTION")
    action = raw.strip().lower() if isinstance(raw, str) else ""
    if action not in STALL_ACTIONS:
        raise InvalidSetting(f"JOBSTATUS_STALL_ACTION must be warn or cancel, not {shown(raw)}")
    return action


# The words of a flag, in any case: a Scrapyd node's option, a parameter of
# its services. (Scrapy's own settings are read with Scrapy's getbool.)
FLAG_WORDS = {
    "1": True, "true": True, "yes": True, "on": True,
    "0": False, "false": False, "no": False, "off": False, "": False,
}  # fmt: skip


def parse_flag(value: str) -> bool:
    """A flag's words; ValueError for any other."""
    try:
        return FLAG_WORDS[value.lower()]
    except KeyError:
        raise ValueError(f"not a flag: {shown(value)}") from None


def setting_number(name: str, raw: Any, default: float) -> float:
    """A setting given as a number or as text (``-s NAME=VALUE``): finite."""
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value) or math.isinf(value):
        raise InvalidSetting(f"{name} must be a number, not {shown(raw)}")
    return value


def parse_timeout(raw: Any, cap: float, cap_text: str) -> float:
    """A job's JOBSTATUS_TIMEOUT in seconds (0: none), refused above ``cap``
    (described by ``cap_text``) when there is one."""
    timeout = setting_number("JOBSTATUS_TIMEOUT", raw, DEFAULTS["JOBSTATUS_TIMEOUT"])
    if timeout < 0:
        raise InvalidSetting(f"JOBSTATUS_TIMEOUT must not be negative, got {timeout:g}")
    if cap and timeout > cap:
        raise InvalidSetting(f"JOBSTATUS_TIMEOUT={timeout:g} is above {cap_text}")
    return timeout


MAX_RETRIES = 100


def parse_retries(raw: Any) -> int:
    """A job's JOBSTATUS_RETRIES (or schedule.json's ``retries``): 0 to 100."""
    retries = setting_number("JOBSTATUS_RETRIES", raw, DEFAULTS["JOBSTATUS_RETRIES"])
    if retries != int(retries) or not 0 <= retries <= MAX_RETRIES:
        raise InvalidSetting(
            f"JOBSTATUS_RETRIES must be a whole number from 0 to {MAX_RETRIES}, got {retries:g}"
        )
    return int(retries)


@dataclass(frozen=True)
class Lease:
    """How a crawl holds its job: each write renews it for ``seconds`` (by
    the store's clock); on a store shared by nodes (``shared``: PostgreSQL),
    a crawl that could not renew it for ``pause_after`` seconds pauses."""

    seconds: float
    shared: bool

    @property
    def pause_after(self) -> float:
        return max(self.seconds - LEASE_MARGIN, MIN_INTERVAL)


def crawl_lease(location: str) -> Lease:
    """The lease of a crawl writing to ``location``: the node_timeout its
    Scrapyd node gives it in its environment, else the nodes' default.
    Raises InvalidSetting for a value that is not a number of seconds."""
    raw = os.environ.get(NODE_TIMEOUT_VARIABLE)
    seconds = setting_number(NODE_TIMEOUT_VARIABLE, raw, NODE_TIMEOUT)
    if seconds <= LEASE_MARGIN:
        raise InvalidSetting(
            f"{NODE_TIMEOUT_VARIABLE} must be more than {LEASE_MARGIN:g} seconds, got {seconds:g}"
        )
    return Lease(seconds, is_postgres(location))


def parse_retention(settings: BaseSettings) -> tuple[int, float]:
    """JOBSTATUS_KEEP_FINISHED (a whole number) and JOBSTATUS_KEEP_DAYS, 0
    or more (0: no limit)."""
    keep = setting_number(
        "JOBSTATUS_KEEP_FINISHED",
        settings.get("JOBSTATUS_KEEP_FINISHED"),
        default("JOBSTATUS_KEEP_FINISHED"),
    )
    if keep != int(keep) or keep < 0:
        raise InvalidSetting(
            f"JOBSTATUS_KEEP_FINISHED must be a whole number, 0 or more, got {keep:g}"
        )
    days = setting_number(
        "JOBSTATUS_KEEP_DAYS", settings.get("JOBSTATUS_KEEP_DAYS"), default("JOBSTATUS_KEEP_DAYS")
    )
    if days < 0:
        raise InvalidSetting(f"JOBSTATUS_KEEP_DAYS must not be negative, got {days:g}")
    return int(keep), days


def store_location(settings: BaseSettings) -> str:
    """The JOBSTATUS_DB setting, else the environment variable of that name
    (how a Scrapyd node passes its store), else ``jobstatus.db`` in the
    project's data directory (``.scrapy/``), made when first written."""
    return (
        settings.get("JOBSTATUS_DB") or os.environ.get(STORE_VARIABLE) or data_path("jobstatus.db")
    )
