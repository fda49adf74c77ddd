"""The add-on applies the one table of the JOBSTATUS_* defaults at addon
priority: a project's settings and a job's ``-s``/``setting=`` override each
one, and a crawl without the add-on reads the same defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import scrapy
from packaging.version import Version
from scrapy import signals
from scrapy.crawler import CrawlerRunner
from scrapy.exceptions import CloseSpider, NotConfigured
from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings, Settings
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.spider import DefaultSpider
from scrapy.utils.test import get_crawler, get_reactor_settings
from twisted.python.failure import Failure

from scrapy_jobstatus import Addon, StartErrorMiddleware, _middleware
from scrapy_jobstatus._defaults import DEFAULTS, Computed, applied_defaults
from scrapy_jobstatus._settings import JobSettings, store_location
from scrapy_jobstatus._webhooks import WebhookSettings


def with_addon(settings: Settings) -> Settings:
    Addon().update_settings(settings)
    return settings


def other_value(value: Any) -> Any:
    """A valid value unlike the default."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 2
    if isinstance(value, list):
        return ["http://127.0.0.1:9/hook"]
    return {"warn": "cancel"}[value]


def test_the_addon_sets_each_default_at_addon_priority() -> None:
    settings = with_addon(Settings())
    applied = applied_defaults()
    assert applied, "the table is empty"
    for name, value in applied.items():
        assert settings[name] == value, name
        assert settings.getpriority(name) == SETTINGS_PRIORITIES["addon"], name
    # What is worked out where it is used, or has no value, stays unset.
    unset = {name for name, value in DEFAULTS.items() if value is None or type(value) is Computed}
    assert unset == {"JOBSTATUS_DB", "JOBSTATUS_WEBHOOK_SECRET"}
    assert all(settings.get(name) is None for name in unset)


def test_a_default_list_is_never_shared() -> None:
    settings = with_addon(Settings())
    settings.getlist("JOBSTATUS_WEBHOOKS").append("http://127.0.0.1:9/hook")
    assert DEFAULTS["JOBSTATUS_WEBHOOKS"] == []


@pytest.mark.parametrize("name", sorted(applied_defaults()))
def test_a_projects_setting_overrides_the_default(name: str) -> None:
    value = other_value(DEFAULTS[name])
    settings = with_addon(Settings({name: value}, priority="project"))
    assert settings[name] == value
    assert settings.getpriority(name) == SETTINGS_PRIORITIES["project"]


@pytest.mark.parametrize("name", sorted(applied_defaults()))
def test_a_jobs_setting_overrides_the_default(name: str) -> None:
    value = other_value(DEFAULTS[name])
    settings = with_addon(Settings({name: value}, priority="cmdline"))
    assert settings[name] == value


@pytest.mark.parametrize("settings", [BaseSettings(), Settings(applied_defaults())])
def test_a_crawl_reads_the_tables_defaults_with_the_addon_or_without(
    settings: BaseSettings,
) -> None:
    config = JobSettings.from_settings(settings)
    assert config == JobSettings.defaults()
    assert (config.timeout, config.interval) == (0, DEFAULTS["JOBSTATUS_INTERVAL"])
    assert (config.cancel_grace, config.failure_ratio) == (
        DEFAULTS["JOBSTATUS_CANCEL_GRACE"],
        DEFAULTS["JOBSTATUS_FAILURE_RATIO"],
    )
    assert (config.store_wait, config.stall_timeout, config.stall_action) == (
        DEFAULTS["JOBSTATUS_STORE_WAIT"],
        DEFAULTS["JOBSTATUS_STALL_TIMEOUT"],
        DEFAULTS["JOBSTATUS_STALL_ACTION"],
    )
    assert (config.required, config.pausable, config.retries, config.retry_delay) == (
        DEFAULTS["JOBSTATUS_REQUIRED"],
        DEFAULTS["JOBSTATUS_PAUSABLE"],
        DEFAULTS["JOBSTATUS_RETRIES"],
        DEFAULTS["JOBSTATUS_RETRY_DELAY"],
    )
    webhooks = WebhookSettings.from_settings(settings)
    assert (webhooks.urls, webhooks.secret, webhooks.deliver, webhooks.wait) == (
        [],
        None,
        DEFAULTS["JOBSTATUS_WEBHOOK_DELIVER"],
        DEFAULTS["JOBSTATUS_WEBHOOK_WAIT"],
    )
    policy = webhooks.policy
    assert (policy.timeout, policy.retry_delay, policy.max_age) == (
        DEFAULTS["JOBSTATUS_WEBHOOK_TIMEOUT"],
        DEFAULTS["JOBSTATUS_WEBHOOK_RETRY_DELAY"],
        DEFAULTS["JOBSTATUS_WEBHOOK_MAX_AGE"],
    )
    assert store_location(settings).endswith("jobstatus.db")


def test_the_start_error_middleware_is_on_where_scrapy_only_logs_start_errors() -> None:
    crawler = get_crawler()
    if Version(scrapy.__version__) >= Version("2.18"):
        with pytest.raises(NotConfigured):
            build_from_crawler(StartErrorMiddleware, crawler)
    else:
        middleware = build_from_crawler(StartErrorMiddleware, crawler)
        assert isinstance(middleware, StartErrorMiddleware)


@deferred_f_from_coro_f
async def test_an_error_of_the_start_is_signalled_and_a_close_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_middleware, "SIGNALS_START_ERRORS", False)
    crawler = get_crawler()
    errors: list[tuple[BaseException, Any]] = []

    def spider_error(failure: Failure, response: Any, spider: Any) -> None:
        errors.append((failure.value, response))

    crawler.signals.connect(spider_error, signal=signals.spider_error)
    middleware = build_from_crawler(StartErrorMiddleware, crawler)

    async def start(error: Exception) -> AsyncIterator[Any]:
        yield {"page": 1}
        raise error

    passed = []
    with pytest.raises(ValueError, match="no URL given"):
        async for item in middleware.process_start(start(ValueError("urls: no URL given"))):
            passed.append(item)
    assert passed == [{"page": 1}]
    assert [(str(value), response) for value, response in errors] == [("urls: no URL given", None)]
    with pytest.raises(CloseSpider):
        async for _ in middleware.process_start(start(CloseSpider("enough"))):
            pass
    assert len(errors) == 1


def test_a_crawler_built_before_it_crawls_gets_the_jobs_parts() -> None:
    # As Scrapy's get_crawler() builds one for a test, then crawl_async():
    # not crawling yet, and no scrapy shell.
    crawler = CrawlerRunner(get_reactor_settings()).create_crawler(DefaultSpider)
    assert not crawler.crawling
    Addon.from_crawler(crawler).update_settings(crawler.settings)
    assert "scrapy_jobstatus.JobStatusExtension" in crawler.settings["EXTENSIONS"]
