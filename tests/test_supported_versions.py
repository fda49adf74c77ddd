"""Where the library reaches into Scrapy's and Scrapyd's internals, a version
without them is named in one clear line at start-up, never an
AttributeError mid-crawl."""

from __future__ import annotations

import logging

import pytest
from scrapy.core import engine
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler
from scrapyd import launcher
from scrapyd.exceptions import ConfigError

from scrapy_jobstatus import JobStatusExtension
from scrapy_jobstatus._engine import unsupported_reason
from scrapy_jobstatus.scrapyd.launcher import check_scrapyd_supported


def test_this_scrapy_supports_forced_stops() -> None:
    assert unsupported_reason() is None


def test_a_scrapy_without_the_engine_internals_disables_forced_stops_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(engine._Slot, "_maybe_fire_closing")
    with caplog.at_level(logging.ERROR, logger="scrapy_jobstatus"):
        ext = build_from_crawler(JobStatusExtension, get_crawler())
    assert ext.stopper.engine_unsupported
    (record,) = caplog.records
    assert record.name == "scrapy_jobstatus.extension"
    message = record.getMessage()
    assert "Scrapy 2.14 to 2.19" in message and "\n" not in message


def test_this_scrapyd_is_supported() -> None:
    check_scrapyd_supported()


def test_a_scrapyd_without_the_launcher_internals_is_refused_naming_the_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(launcher.Launcher, "_spawn_process")
    with pytest.raises(ConfigError) as info:
        check_scrapyd_supported()
    assert "supports Scrapyd 1.6" in str(info.value) and "_spawn_process" in str(info.value)
