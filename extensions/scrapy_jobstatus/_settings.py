"""The JOBSTATUS_* settings of a crawl, read and checked once."""

from __future__ import annotations

import os
from dataclasses import dataclass

from scrapy.settings import BaseSettings
from scrapy.utils.project import data_path

from ._defaults import default
from ._model import (
    InvalidSetting,
    parse_retries,
    parse_timeout,
    setting_number,
)
from ._tracker import STALL_ACTIONS

STORE_VARIABLE = "JOBSTATUS_DB"
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
        )


def _flag(settings: BaseSettings, name: str) -> bool:
    try:
        return settings.getbool(name, default(name))
    except ValueError:
        shown = repr(settings.get(name))[:40]
        raise InvalidSetting(f"{name} must be true or false, not {shown}") from None


def _stall_action(raw: object) -> str:
    """JOBSTATUS_STALL_ACTION: ``warn`` (the default) or ``cancel``, in any case."""
    if raw is None or raw == "":
        return default("JOBSTATUS_STALL_ACTION")
    action = raw.strip().lower() if isinstance(raw, str) else ""
    if action not in STALL_ACTIONS:
        shown = repr(raw) if len(str(raw)) <= 40 else repr(str(raw)[:40]) + "..."
        raise InvalidSetting(f"JOBSTATUS_STALL_ACTION must be warn or cancel, not {shown}")
    return action


def store_location(settings: BaseSettings) -> str:
    """The JOBSTATUS_DB setting, else the environment variable of that name
    (how a Scrapyd node passes its store), else ``jobstatus.db`` in the
    project's data directory (``.scrapy/``), made when first written."""
    return (
        settings.get("JOBSTATUS_DB") or os.environ.get(STORE_VARIABLE) or data_path("jobstatus.db")
    )
