"""The Scrapy add-on that enables the job lifecycle in a project:
``ADDONS = {"scrapy_jobstatus.Addon": 100}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._jobdir import HOLD_WAIT, hold

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


# Set when the JOBDIR is held by another crawl.
BUSY_JOBDIR = "JOBSTATUS_BUSY_JOBDIR"


class Addon:
    def update_settings(self, settings: BaseSettings) -> None:
        self._pausable_jobdir(settings)
        settings["EXTENSIONS"]["scrapy_jobstatus.JobStatusExtension"] = 100
        # Below RetryMiddleware (550): sees a download's exception only once
        # its retries are exhausted.
        settings["DOWNLOADER_MIDDLEWARES"]["scrapy_jobstatus.DownloadOutcomeMiddleware"] = 50
        # Nearest the engine: sees the start requests as the engine takes them.
        settings["SPIDER_MIDDLEWARES"]["scrapy_jobstatus.ResumedStartMiddleware"] = 10

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
