"""The job store of a Scrapyd node and its settings: the ``[jobstatus]``
section of scrapyd.conf.

One per Scrapyd process (``shared_node``): the queue, the job and egg
storages, the launcher and every service share its store (one SQLite
connection, or one PostgreSQL pool). The launcher registers it as a
component of Scrapyd's application for the services.
"""

from __future__ import annotations

import configparser
import math
import os
import socket
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from scrapyd.exceptions import ConfigError
from zope.interface import Attribute, Interface, implementer

from .._defaults import default
from .._jobdir import jobdir_name
from .._location import InvalidLocation, check_location
from .._model import shown
from .._retention import DELIVERIES_KEPT_PAST_MAX_AGE, Retention
from .._settings import NODE_TIMEOUT_VARIABLE, STORE_VARIABLE, parse_flag
from .._store import NODE_TIMEOUT, NODE_VARIABLE, JobStore, is_postgres
from .._webhooks import InvalidWebhook, WebhookPolicy, check_secret, webhook_urls
from ._calls import StoreCalls

if TYPE_CHECKING:
    from scrapyd.config import Config

SECTION = "jobstatus"
# The options' defaults: one table, read by the node and its constructor.
# The webhook options are the node's JOBSTATUS_WEBHOOK_* settings: their
# defaults are the crawl's.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        # Beside Scrapyd's own databases; Scrapyd names its files
        # <project>.db, so this name never meets one of them.
        "db": "dbs/jobstatus.sqlite3",
        "timeout_max": 0.0,
        "errors_kept": default("JOBSTATUS_ERRORS_KEPT"),
        # Seconds without a heartbeat after which a node is dead: its crawls
        # that stopped reporting end failed, its claimed jobs go back to the
        # queue. Nodes beat every 5 s; a dead node's jobs end within this
        # plus 5 s. A crawl's lease on its job lasts as long.
        "node_timeout": NODE_TIMEOUT,
        "pending_timeout": 0.0,
        "webhook_timeout": WebhookPolicy.timeout,
        "webhook_retry_delay": WebhookPolicy.retry_delay,
        "webhook_max_age": WebhookPolicy.max_age,
        # Where the JOBDIRs of pausable jobs go, beside dbs/ like the store;
        # in a cluster, a directory every node reaches, so that a job paused
        # on one node resumes on another.
        "jobdirs": "jobdirs",
        "pausable": False,
        # Seconds a stopping node waits for its pausable crawls to pause.
        "shutdown_wait": 60.0,
        # Crawls forked from a zygote that has imported Scrapy once.
        "warm_start": True,
        # Retention: ended jobs kept at most, and days an ended job is kept
        # (0: no limit); pruned by the node, files and all.
        "keep_finished": default("JOBSTATUS_KEEP_FINISHED"),
        "keep_days": default("JOBSTATUS_KEEP_DAYS"),
    }
)
MIN_NODE_TIMEOUT = 10.0
_NODES: weakref.WeakKeyDictionary[Any, JobStatusNode] = weakref.WeakKeyDictionary()


class IJobStatusNode(Interface):
    """The job store of a Scrapyd node and the limits it enforces."""

    store = Attribute("the node's JobStore (of the calling thread)")
    calls = Attribute("the node's thread pool for store calls, and whether the store is up")
    name = Attribute("the node's name: Scrapyd's node_name")
    url = Attribute("the node's URL, shown to the other nodes")
    node_timeout = Attribute("seconds without a heartbeat after which a node is dead")
    pending_timeout = Attribute("seconds a job may wait in the queue before a warning, 0 for none")
    webhooks = Attribute("the URLs called on every job's events")
    webhook_secret = Attribute("the whsec_ secret the node signs deliveries with, or None")
    webhook_policy = Attribute("timeout, retry delay and maximum age of deliveries")
    db = Attribute("the absolute path of the store, passed to every crawl")
    timeout_max = Attribute("the largest JOBSTATUS_TIMEOUT schedule.json accepts, 0 for no cap")
    errors_kept = Attribute("errors inside a status document")
    jobdirs = Attribute("the directory of the JOBDIRs of pausable jobs")
    pausable = Attribute("whether every job of the node is pausable (else JOBSTATUS_PAUSABLE)")
    shutdown_wait = Attribute("seconds a stopping node waits for its crawls to pause")
    warm_start = Attribute("whether crawls are forked from a zygote (else a fresh Python each)")
    retention = Attribute("the ended jobs the node keeps, and its deliveries")


@implementer(IJobStatusNode)
class JobStatusNode:
    def __init__(
        self,
        db: str,
        name: str,
        url: str | None = None,
        *,
        timeout_max: float = DEFAULTS["timeout_max"],
        errors_kept: int = DEFAULTS["errors_kept"],
        node_timeout: float = DEFAULTS["node_timeout"],
        pending_timeout: float = DEFAULTS["pending_timeout"],
        webhooks: list[str] | None = None,
        webhook_secret: str | None = None,
        webhook_policy: WebhookPolicy | None = None,
        jobdirs: str = DEFAULTS["jobdirs"],
        pausable: bool = DEFAULTS["pausable"],
        shutdown_wait: float = DEFAULTS["shutdown_wait"],
        warm_start: bool = DEFAULTS["warm_start"],
        keep_finished: int = DEFAULTS["keep_finished"],
        keep_days: float = DEFAULTS["keep_days"],
    ):
        # A path is made absolute for the crawls, which run elsewhere.
        self.db = db if is_postgres(db) else os.path.abspath(db)
        self.name = name
        self.url = url
        self.timeout_max = timeout_max
        self.errors_kept = errors_kept
        self.node_timeout = node_timeout
        self.pending_timeout = pending_timeout
        self.webhooks = list(webhooks or [])
        self.webhook_secret = webhook_secret
        self.webhook_policy = webhook_policy or WebhookPolicy()
        self.jobdirs = os.path.abspath(jobdirs)
        self.pausable = pausable
        self.shutdown_wait = shutdown_wait
        self.warm_start = warm_start
        # Deliveries made (or given up) go a day after their maximum age.
        self.retention = Retention(
            keep_finished,
            keep_days,
            self.webhook_policy.max_age + DELIVERIES_KEPT_PAST_MAX_AGE,
        )
        self.calls = StoreCalls(self.db, name)
        # A location that is refused stops the node at once.
        self.calls.thread_store()

    @property
    def store(self) -> JobStore:
        """The store of the calling thread (the reactor's, or one of the
        node's pool's): a SQLite connection runs one transaction at a time."""
        return self.calls.thread_store()

    @classmethod
    def from_config(cls, config: Config) -> JobStatusNode:
        options = _options(config)
        # A relative path is relative to the directory scrapyd runs in, like
        # Scrapyd's own dbs_dir.
        db = options.get("db") or DEFAULTS["db"]
        try:
            check_location(db)
        except InvalidLocation as e:
            raise ConfigError(f"[{SECTION}] db: {e}") from None
        node_timeout = _number(options, "node_timeout")
        if node_timeout < MIN_NODE_TIMEOUT:
            raise ConfigError(
                f"[{SECTION}] node_timeout must be {MIN_NODE_TIMEOUT:g} seconds or more"
            )
        try:
            webhooks = webhook_urls(options.get("webhooks"))
            secret = options.get("webhook_secret") or None
            if secret:
                check_secret(secret)
        except InvalidWebhook as e:
            raise ConfigError(f"[{SECTION}] {e}") from None
        if webhooks and not secret:
            raise ConfigError(f"[{SECTION}] webhooks need a webhook_secret to sign them")
        keep_finished = _number(options, "keep_finished")
        if keep_finished != int(keep_finished):
            raise ConfigError(
                f"[{SECTION}] keep_finished must be a whole number, 0 or more,"
                f" not {options['keep_finished']!r}"
            )
        policy = WebhookPolicy(
            timeout=_number(options, "webhook_timeout") or 1,
            retry_delay=_number(options, "webhook_retry_delay"),
            max_age=_number(options, "webhook_max_age"),
        )
        return cls(
            db,
            # Scrapyd's own name for the node, in every answer of its services.
            config.get("node_name", socket.gethostname()),
            options.get("node_url") or _own_url(config),
            timeout_max=_number(options, "timeout_max"),
            errors_kept=int(_number(options, "errors_kept")),
            node_timeout=node_timeout,
            pending_timeout=_number(options, "pending_timeout"),
            webhooks=webhooks,
            webhook_secret=secret,
            webhook_policy=policy,
            jobdirs=options.get("jobdirs") or DEFAULTS["jobdirs"],
            pausable=_flag(options, "pausable"),
            shutdown_wait=_number(options, "shutdown_wait"),
            warm_start=_flag(options, "warm_start"),
            keep_finished=int(keep_finished),
            keep_days=_number(options, "keep_days"),
        )

    def crawl_settings(self, project: str, job_id: str) -> dict[str, str]:
        """The settings every crawl of this node gets; they win over the
        job's own. The node delivers the crawls' webhooks, signed with its
        secret, and goes on after a crawl has died. A pausable crawl keeps its
        state in the JOBDIR named here (the same on every run of the job)."""
        settings = {
            "JOBSTATUS_PROJECT": project,
            "JOBSTATUS_WEBHOOK_DELIVER": "False",
            "JOBSTATUS_JOBDIR": os.path.join(self.jobdirs, jobdir_name(job_id)),
        }
        if self.pausable:
            settings["JOBSTATUS_PAUSABLE"] = "True"
        return settings

    def crawl_environment(self) -> dict[str, str]:
        """The store goes to the crawl in its environment, not on its command
        line, where anyone on the machine could read a password in a URL;
        with it, how long the crawl's lease on its job lasts."""
        return {
            STORE_VARIABLE: self.db,
            NODE_VARIABLE: self.name,
            NODE_TIMEOUT_VARIABLE: f"{self.node_timeout:g}",
        }


def shared_node(config: Config) -> JobStatusNode:
    """The node of this Scrapyd process: Scrapyd builds each of its
    components from the same config, and they all share one store."""
    node = _NODES.get(config)
    if node is None:
        node = _NODES[config] = JobStatusNode.from_config(config)
    return node


def _options(config: Config) -> dict[str, str]:
    """The [jobstatus] options. ConfigParser's error quotes the value, which
    may hold a password: one line naming the option instead."""
    try:
        return dict(config.items(SECTION, default=[]))
    except configparser.InterpolationError as e:
        raise ConfigError(
            f"[{SECTION}] {e.option}: a '%' in scrapyd.conf is written '%%'"
            " (a percent-encoded '@' in a URL, %40, as %%40)"
        ) from None


def _own_url(config: Config) -> str:
    # As Scrapyd's application reads them.
    host = os.getenv("SCRAPYD_BIND_ADDRESS") or config.get("bind_address", "127.0.0.1")
    port = os.getenv("SCRAPYD_HTTP_PORT") or config.get("http_port", "6800")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _number(options: dict[str, Any], name: str) -> float:
    raw = options.get(name)
    if raw is None or raw == "":
        return float(DEFAULTS[name])
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"[{SECTION}] {name} must be a number, not {raw!r}") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ConfigError(f"[{SECTION}] {name} must be a finite number, 0 or more, not {raw!r}")
    return value


def _flag(options: dict[str, Any], name: str) -> bool:
    raw = options.get(name)
    if raw is None or raw == "":
        return bool(DEFAULTS[name])
    try:
        return parse_flag(raw.strip())
    except ValueError:
        raise ConfigError(f"[{SECTION}] {name} must be on or off, not {shown(raw)}") from None


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
