"""The job store of a Scrapyd node and its settings: the ``[jobstatus]``
section of scrapyd.conf.

The launcher builds it once and registers it as a component of Scrapyd's
application, so that the launcher and every service share one store (one
SQLite connection) per Scrapyd process.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from scrapyd.exceptions import ConfigError
from zope.interface import Attribute, Interface, implementer

from .._settings import STORE_VARIABLE
from .._store import JobStore, is_url, open_store

if TYPE_CHECKING:
    from scrapyd.config import Config

SECTION = "jobstatus"
# Beside Scrapyd's own databases; Scrapyd names its files <project>.db, so
# this name never meets one of them.
DEFAULT_DB = "dbs/jobstatus.sqlite3"
DEFAULT_ERRORS_KEPT = 20


class IJobStatusNode(Interface):
    """The job store of a Scrapyd node and the limits it enforces."""

    store = Attribute("the node's JobStore")
    db = Attribute("the absolute path of the store, passed to every crawl")
    timeout_max = Attribute("the largest JOBSTATUS_TIMEOUT schedule.json accepts, 0 for no cap")
    errors_kept = Attribute("errors inside a status document")


@implementer(IJobStatusNode)
class JobStatusNode:
    def __init__(self, db: str, timeout_max: float = 0, errors_kept: int = DEFAULT_ERRORS_KEPT):
        # A path is made absolute for the crawls, which run elsewhere.
        self.db = db if is_url(db) else os.path.abspath(db)
        self.timeout_max = timeout_max
        self.errors_kept = errors_kept
        self.store: JobStore = open_store(self.db)

    @classmethod
    def from_config(cls, config: Config) -> JobStatusNode:
        options = dict(config.items(SECTION, default=[]))
        # A relative path is relative to the directory scrapyd runs in, like
        # Scrapyd's own dbs_dir.
        db = options.get("db") or DEFAULT_DB
        timeout_max = _number(options, "timeout_max", 0)
        errors_kept = _number(options, "errors_kept", DEFAULT_ERRORS_KEPT)
        return cls(db, timeout_max, int(errors_kept))

    def crawl_settings(self, project: str) -> dict[str, str]:
        """The settings every crawl of this node gets; they win over the
        job's own."""
        return {"JOBSTATUS_PROJECT": project}

    def crawl_environment(self) -> dict[str, str]:
        """The store goes to the crawl in its environment, not on its command
        line, where anyone on the machine could read a password in a URL."""
        return {STORE_VARIABLE: self.db}


def _number(options: dict[str, Any], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {name} must be a number, not {raw!r}") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ConfigError(f"[{SECTION}] {name} must be a finite number, 0 or more, not {raw!r}")
    return value


def node_of(root: Any) -> JobStatusNode:
    """The node of a Scrapyd web root; a clear error when scrapyd.conf does
    not use the launcher that provides it."""
    node = root.app.getComponent(IJobStatusNode)
    if node is None:
        raise ConfigError(
            "the job services need the job launcher: set "
            "launcher = scrapy_jobstatus.scrapyd.Launcher in the [scrapyd] section of scrapyd.conf"
        )
    return node
