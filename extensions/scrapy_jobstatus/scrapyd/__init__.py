"""The Scrapyd face of the job lifecycle: the job services, Scrapyd's queue,
finished jobs and eggs in the job store (shared by the nodes of a cluster),
and a launcher that passes the job store to every crawl, reports crashed
crawls and dead nodes.

Wired by the shipped scrapyd.conf; see its ``[jobstatus]`` section.

Each name is imported on first use: Scrapyd's runner loads the egg storage
in the crawl's process, before Scrapy installs its reactor, so loading it
must not install one (the launcher and the services do).
"""

from importlib import import_module
from typing import Any

_MODULES = {
    "Launcher": "launcher",
    "Poller": "queue",
    "SpiderQueue": "queue",
    "EggStorage": "storage",
    "JobStorage": "storage",
    "Cancel": "cancel",
    "JobCancel": "webservice",
    "JobErrors": "webservice",
    "JobPause": "webservice",
    "JobResume": "webservice",
    "JobStatus": "webservice",
    "Jobs": "webservice",
    "Nodes": "webservice",
    "Webhooks": "webhooks",
    "AddSchedule": "schedules",
    "DelSchedule": "schedules",
    "ListSchedules": "schedules",
    "RunSchedule": "schedules",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
