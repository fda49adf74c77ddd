"""The defaults of the JOBSTATUS_* settings: one table, read by everything
that needs a default, and applied by the add-on at addon priority, so that a
project's settings and a job's ``-s``/``setting=`` override each one.

Pure Python: the model, the store, the crawl side, the commands and the
Scrapyd node all read it.
"""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any


class Computed(str):
    """A default worked out where it is used (the text says how): the add-on
    leaves the setting unset."""


DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "JOBSTATUS_ENABLED": True,
        # Else the environment variable JOBSTATUS_DB (a Scrapyd node's).
        "JOBSTATUS_DB": Computed("<project data dir>/jobstatus.db"),
        "JOBSTATUS_REQUIRED": False,
        "JOBSTATUS_STORE_WAIT": 30.0,
        "JOBSTATUS_TIMEOUT": 0.0,
        "JOBSTATUS_TIMEOUT_MAX": 0.0,
        "JOBSTATUS_INTERVAL": 1.0,
        "JOBSTATUS_CANCEL_GRACE": 30.0,
        "JOBSTATUS_FAILURE_RATIO": 0.5,
        "JOBSTATUS_STALL_TIMEOUT": 0.0,
        "JOBSTATUS_STALL_ACTION": "warn",
        "JOBSTATUS_ERRORS_KEPT": 20,
        # Errors a crawl keeps for the store while it is unreachable (about
        # 330 bytes each); beyond, counted only.
        "JOBSTATUS_PENDING_ERRORS": 10_000,
        "JOBSTATUS_WEBHOOKS": [],
        "JOBSTATUS_WEBHOOK_SECRET": None,
        "JOBSTATUS_WEBHOOK_WAIT": 10.0,
        "JOBSTATUS_WEBHOOK_RETRY_DELAY": 5.0,
        # About a day: a receiver down overnight still gets its events.
        "JOBSTATUS_WEBHOOK_MAX_AGE": 86400.0,
        "JOBSTATUS_WEBHOOK_TIMEOUT": 10.0,
        "JOBSTATUS_PAUSABLE": False,
        "JOBSTATUS_JOBDIR_WAIT": 30.0,
        "JOBSTATUS_RETRIES": 0,
        "JOBSTATUS_RETRY_DELAY": 60.0,
        "JOBSTATUS_WEBHOOK_DELIVER": True,
        # Retention of a plain crawl's store (0: no limit); a Scrapyd node
        # prunes its store by its own keep_finished and keep_days.
        "JOBSTATUS_KEEP_FINISHED": 100_000,
        "JOBSTATUS_KEEP_DAYS": 90.0,
    }
)


def default(name: str) -> Any:
    """A setting's default (a copy: a list default is never shared)."""
    return copy.copy(DEFAULTS[name])


def applied_defaults() -> dict[str, Any]:
    """The defaults the add-on sets: all but the unset and the computed."""
    return {
        name: default(name)
        for name, value in DEFAULTS.items()
        if value is not None and not isinstance(value, Computed)
    }
