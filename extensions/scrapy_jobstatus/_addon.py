"""The Scrapy add-on that enables the job lifecycle in a project:
``ADDONS = {"scrapy_jobstatus.Addon": 100}``."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

from ._defaults import applied_defaults
from ._jobdir import BUSY_JOBDIR, HOLD_WAIT, hold

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings


logger = logging.getLogger(__name__)

# Scrapy's commands that fetch pages for a developer to look at, or check a
# spider's contracts, by replacing the spider's start with their own: their
# crawls are no jobs (view is fetch's).
INSPECTING_COMMANDS = {
    "scrapy.commands.fetch": "fetch",
    "scrapy.commands.parse": "parse",
    "scrapy.commands.check": "check",
}


def inspecting_command(crawler: Crawler) -> str | None:
    """The Scrapy command running this crawler when its crawl is no job:
    shell, fetch, view, parse or check; else None."""
    if not crawler.crawling and _in_scrapy_shell():
        return "shell"
    start = getattr(crawler.spidercls, "start", None)
    return INSPECTING_COMMANDS.get(getattr(start, "__module__", None) or "")


def _in_scrapy_shell() -> bool:
    """Whether ``scrapy shell`` (or a command made from it) builds this
    crawler: it runs an engine without ``Crawler.crawl`` (so the crawler is
    not crawling) and names itself nowhere else."""
    from scrapy.commands.shell import Command as ShellCommand

    frame = inspect.currentframe()
    while frame is not None:
        if isinstance(frame.f_locals.get("self"), ShellCommand):
            return True
        frame = frame.f_back
    return False


class Addon:
    def __init__(self, crawler: Crawler | None = None):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def update_settings(self, settings: BaseSettings) -> None:
        # Below a project's settings and a job's -s / setting=.
        settings.setdict(applied_defaults(), priority="addon")
        command = inspecting_command(self.crawler) if self.crawler is not None else None
        if command is not None:
            logger.info(
                "scrapy %(command)s: no job (shell, fetch, view, parse and check make none)",
                {"command": command},
            )
            return
        self._pausable_jobdir(settings)
        settings["EXTENSIONS"]["scrapy_jobstatus.JobStatusExtension"] = 100
        # Below RetryMiddleware (550): sees a download's exception only once
        # its retries are exhausted.
        settings["DOWNLOADER_MIDDLEWARES"]["scrapy_jobstatus.DownloadOutcomeMiddleware"] = 50
        # Nearest the engine: sees the start requests as the engine takes them.
        settings["SPIDER_MIDDLEWARES"]["scrapy_jobstatus.ResumedStartMiddleware"] = 10
        # Nearer still: sees an error of the start as the engine would.
        settings["SPIDER_MIDDLEWARES"]["scrapy_jobstatus.StartErrorMiddleware"] = 5

    @staticmethod
    def _pausable_jobdir(settings: BaseSettings) -> None:
        """A pausable job of a Scrapyd node keeps its crawl state in the
        JOBDIR its node names (JOBSTATUS_JOBDIR), and a crawl holds its
        JOBDIR, alone. Done here, before Scrapy builds its components: the
        scheduler, the seen requests and ``spider.state`` (the SpiderState
        extension) are all kept there."""
        try:
            pausable = settings.getbool("JOBSTATUS_PAUSABLE", False)
            wait = settings.getfloat("JOBSTATUS_JOBDIR_WAIT", HOLD_WAIT)
        except ValueError:
            return  # the extension fails the job, naming the setting
        jobdir = settings.get("JOBSTATUS_JOBDIR")
        if pausable and jobdir and not settings.get("JOBDIR"):
            settings.set("JOBDIR", jobdir, priority="addon")
        path = settings.get("JOBDIR")
        if path and not hold(path, wait):
            # Before Scrapy's components open it: this crawl runs without it,
            # only to fail its job (the extension says why).
            settings.set(BUSY_JOBDIR, path, priority="cmdline")
            settings.set("JOBDIR", None, priority="cmdline")
