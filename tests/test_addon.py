"""The add-on applies the one table of the JOBSTATUS_* defaults at addon
priority: a project's settings and a job's ``-s``/``setting=`` override each
one, and a crawl without the add-on reads the same defaults."""

from __future__ import annotations

from typing import Any

import pytest
from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings, Settings
from scrapy.utils.test import get_crawler

from scrapy_jobstatus import Addon
from scrapy_jobstatus._defaults import DEFAULTS, Computed, applied_defaults
from scrapy_jobstatus._settings import JobSettings, store_location
from scrapy_jobstatus._webhooks import WebhookSettings

ADDONS = {"ADDONS": {Addon: 100}}


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
    settings = get_crawler(settings_dict=ADDONS).settings
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
    settings = get_crawler(settings_dict=ADDONS).settings
    settings.getlist("JOBSTATUS_WEBHOOKS").append("http://127.0.0.1:9/hook")
    assert DEFAULTS["JOBSTATUS_WEBHOOKS"] == []


@pytest.mark.parametrize("name", sorted(applied_defaults()))
def test_a_projects_setting_overrides_the_default(name: str) -> None:
    value = other_value(DEFAULTS[name])
    settings = get_crawler(settings_dict={**ADDONS, name: value}).settings
    assert settings[name] == value
    assert settings.getpriority(name) == SETTINGS_PRIORITIES["project"]


@pytest.mark.parametrize("name", sorted(applied_defaults()))
def test_a_jobs_setting_overrides_the_default(name: str) -> None:
    value = other_value(DEFAULTS[name])
    settings = Settings()
    settings.set(name, value, priority="cmdline")
    Addon().update_settings(settings)
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
