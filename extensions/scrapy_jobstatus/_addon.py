"""The Scrapy add-on that enables the job lifecycle in a project:
``ADDONS = {"scrapy_jobstatus.Addon": 100}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class Addon:
    def update_settings(self, settings: BaseSettings) -> None:
        settings["EXTENSIONS"]["scrapy_jobstatus.JobStatusExtension"] = 100
        # Below RetryMiddleware (550): sees a download's exception only once
        # its retries are exhausted.
        settings["DOWNLOADER_MIDDLEWARES"]["scrapy_jobstatus.DownloadOutcomeMiddleware"] = 50
        # Nearest the engine: sees the start requests as the engine takes them.
        settings["SPIDER_MIDDLEWARES"]["scrapy_jobstatus.ResumedStartMiddleware"] = 10
