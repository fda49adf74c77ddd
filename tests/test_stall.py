"""The stall watchdog: a job that makes no progress while requests wait is
warned of, or cancelled. Its decisions with a fake clock (no Scrapy), its
settings, then real ``scrapy crawl`` processes against the local site."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from scrapy.settings import Settings
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from scrapy_jobstatus import JobStatusExtension, open_store
from scrapy_jobstatus._model import (
    InvalidSetting,
    JobError,
    JobState,
    JobStatus,
    isoformat,
    pending_job,
)
from scrapy_jobstatus._settings import JobSettings
from scrapy_jobstatus._tracker import FORCED_STOP_WARNING, JobTracker
from tests.helpers import ROOT, crawl_command, scrapy, wait_for
from tests.spider_jobs import run_job
from tests.test_crawl_lifecycle import STARTED, no_crawl_left_running  # noqa: F401 (autouse)

# -- the tracker's decision, with a fake clock ----------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock, stall_timeout: float = 10, action: str = "warn") -> JobTracker:
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock())
    return JobTracker(state, stall_timeout=stall_timeout, stall_action=action, clock=clock)


def stalled_events(t: JobTracker) -> list[Any]:
    return [e for e in t.history if e.step == "stalled"]


def test_a_job_with_requests_waiting_stalls_at_the_timeout_not_before():
    clock = Clock()
    t = tracker(clock)
    t.refresh(requests_pending=3, requests_in_flight=1)
    clock.now += 9.9
    assert t.stall_check() is None
    assert t.state.warnings == [] and stalled_events(t) == []
    clock.now += 0.1
    assert t.stall_check() == "warn"
    assert t.state.warnings == ["stalled: no progress for 10 s"]
    (event,) = stalled_events(t)
    assert event.status == "running" and event.timestamp == clock.now
    assert (
        event.details == f"no progress since {isoformat(1000.0)}: 3 requests pending, 1 in flight"
    )
    # The next write carries the event (the store makes it the job.stalled webhook).
    assert [e.step for e in t.take_unsaved()[1]] == ["stalled"]
    assert t.stats()["jobstatus/stalls"] == 1
    assert t.state.status is JobStatus.RUNNING and not t.closing


@pytest.mark.parametrize(("pending", "in_flight"), [(1, 0), (0, 1)])
def test_pending_or_in_flight_requests_alone_make_a_stall(pending, in_flight):
    clock = Clock()
    t = tracker(clock)
    t.refresh(pending, in_flight)
    clock.now += 10
    assert t.stall_check() == "warn"


def test_a_job_without_work_is_not_stalled_and_its_stall_clock_starts_again():
    clock = Clock()
    t = tracker(clock)
    t.refresh(0, 0)
    for _ in range(5):
        clock.now += 100
        assert t.stall_check() is None
    # Work comes after a long idle time: it has its whole timeout.
    t.refresh(2, 0)
    clock.now += 9
    assert t.stall_check() is None
    clock.now += 1
    assert t.stall_check() == "warn"
    assert t.state.warnings == ["stalled: no progress for 10 s"]
    assert "jobstatus/stalls" in t.stats()


def test_a_stall_is_warned_of_once():
    clock = Clock()
    t = tracker(clock)
    t.refresh(0, 4)
    clock.now += 10
    assert t.stall_check() == "warn"
    for _ in range(20):
        clock.now += 10
        t.refresh(0, 4)
        assert t.stall_check() is None
    assert len(stalled_events(t)) == 1 and t.stalls == 1
    assert t.state.warnings == ["stalled: no progress for 10 s"]


def _respond(t: JobTracker) -> None:
    t.response_received("http://x/", None)


def _fail_response(t: JobTracker) -> None:
    t.response_received("http://x/", JobError(error_type="http_error", error_message="HTTP 500"))


def _fail_download(t: JobTracker) -> None:
    t.download_failed(JobError(error_type="timeout", error_message="timed out"))


def _scrape(t: JobTracker) -> None:
    t.item_scraped()


def _record_error(t: JobTracker) -> None:
    t.record_error(JobError(error_type="spider_error", error_message="ValueError: x"))


@pytest.mark.parametrize(
    "progress", [_respond, _fail_response, _fail_download, _scrape, _record_error]
)
def test_progress_ends_a_stall_and_the_next_stall_is_warned_of_again(
    progress: Callable[[JobTracker], None],
):
    clock = Clock()
    t = tracker(clock, stall_timeout=2.5)
    t.refresh(5, 2)
    clock.now += 2.5
    assert t.stall_check() == "warn"
    clock.now += 1
    progress(t)
    progress_at = clock.now
    clock.now += 2.4
    assert t.stall_check() is None  # a new stall needs its whole timeout
    clock.now += 0.1
    assert t.stall_check() == "warn"
    first, second = stalled_events(t)
    assert second.details.startswith(f"no progress since {isoformat(progress_at)}:")
    assert t.stats()["jobstatus/stalls"] == 2
    # One warning says the job stalls; the events say when, each time.
    assert t.state.warnings == ["stalled: no progress for 2.5 s"]


def test_an_idle_moment_ends_a_stall():
    clock = Clock()
    t = tracker(clock)
    t.refresh(1, 0)
    clock.now += 10
    assert t.stall_check() == "warn"
    t.refresh(0, 0)  # the stuck request went away without a response
    assert t.stall_check() is None
    t.refresh(1, 0)
    clock.now += 10
    assert t.stall_check() == "warn"
    assert len(stalled_events(t)) == 2


def test_the_watchdog_is_off_at_0():
    clock = Clock()
    t = tracker(clock, stall_timeout=0)
    t.refresh(10, 10)
    clock.now += 1e6
    assert t.stall_check() is None
    assert t.state.warnings == [] and t.history == []
    assert "jobstatus/stalls" not in t.stats()


def test_the_cancel_action_cancels_the_job_which_ends_cancelled_with_reason_stalled():
    clock = Clock()
    t = tracker(clock, stall_timeout=600, action="cancel")
    t.refresh(2, 3)
    clock.now += 600
    assert t.stall_check() == "cancel"
    state = t.state
    assert state.status is JobStatus.CANCELLING and t.closing
    assert state.cancel_requested_at == clock.now
    assert state.warnings == ["stalled: no progress for 600 s"]
    # The stall is recorded while running, then the cancel it takes.
    assert [(e.step, e.status, e.details) for e in t.history][-1] == (
        "cancel requested",
        "cancelling",
        "by stall watchdog",
    )
    assert [(e.step, e.status) for e in t.history] == [
        ("stalled", "running"),
        ("cancel requested", "cancelling"),
    ]
    # Closing: no second stall, no other cancel nor timeout takes over.
    clock.now += 6000
    assert t.stall_check() is None
    assert not t.cancel(clock.now, "store") and not t.timeout_reached()
    assert t.closed("jobstatus_stalled") is JobStatus.CANCELLED
    assert t.stats()["jobstatus/status"] == "cancelled"
    assert t.stats()["jobstatus/completion_reason"] == "stalled"
    t.forced_stop(dropped=3)
    t.finish()
    assert (state.status, state.completion_reason) == (JobStatus.CANCELLED, "stalled")
    assert state.close_reason == "jobstatus_stalled"
    assert state.message == (
        "The job stalled (no progress for 600 s) and was cancelled; "
        "the results of finished requests were kept."
    )
    assert state.warnings == ["stalled: no progress for 600 s", FORCED_STOP_WARNING]
    assert len(stalled_events(t)) == 1


def test_a_closing_job_is_left_to_its_grace_period():
    clock = Clock()
    t = tracker(clock, action="cancel")
    t.refresh(5, 5)
    assert t.cancel(clock.now, "store")
    clock.now += 100
    assert t.stall_check() is None
    assert t.state.warnings == [] and stalled_events(t) == []
    t.closed("cancelled")
    t.finish()
    assert t.state.completion_reason == "cancelled"


# -- the settings -------------------------------------------------------------------


def settings_of(**values: Any) -> JobSettings:
    return JobSettings.from_settings(Settings(values))


def test_the_watchdog_is_off_by_default_and_warns_by_default():
    config = settings_of()
    assert (config.stall_timeout, config.stall_action) == (0, "warn")
    defaults = JobSettings.defaults()
    assert (defaults.stall_timeout, defaults.stall_action) == (0, "warn")


@pytest.mark.parametrize(
    ("values", "timeout", "action"),
    [
        ({"JOBSTATUS_STALL_TIMEOUT": 600}, 600, "warn"),
        ({"JOBSTATUS_STALL_TIMEOUT": "2.5", "JOBSTATUS_STALL_ACTION": "cancel"}, 2.5, "cancel"),
        ({"JOBSTATUS_STALL_TIMEOUT": "0", "JOBSTATUS_STALL_ACTION": " Cancel "}, 0, "cancel"),
        ({"JOBSTATUS_STALL_TIMEOUT": "", "JOBSTATUS_STALL_ACTION": ""}, 0, "warn"),
        ({"JOBSTATUS_STALL_ACTION": "WARN"}, 0, "warn"),
    ],
)
def test_stall_settings_are_read(values, timeout, action):
    config = settings_of(**values)
    assert (config.stall_timeout, config.stall_action) == (timeout, action)


BAD_STALL_SETTINGS = [
    ("JOBSTATUS_STALL_TIMEOUT", "-1", "JOBSTATUS_STALL_TIMEOUT must not be negative, got -1"),
    ("JOBSTATUS_STALL_TIMEOUT", "nan", "JOBSTATUS_STALL_TIMEOUT must be a number, not 'nan'"),
    ("JOBSTATUS_STALL_TIMEOUT", "inf", "JOBSTATUS_STALL_TIMEOUT must be a number, not 'inf'"),
    ("JOBSTATUS_STALL_TIMEOUT", "soon", "JOBSTATUS_STALL_TIMEOUT must be a number, not 'soon'"),
    ("JOBSTATUS_STALL_ACTION", "stop", "JOBSTATUS_STALL_ACTION must be warn or cancel, not 'stop'"),
    ("JOBSTATUS_STALL_ACTION", 1, "JOBSTATUS_STALL_ACTION must be warn or cancel, not 1"),
]


@pytest.mark.parametrize(("setting", "value", "message"), BAD_STALL_SETTINGS)
def test_a_bad_stall_setting_is_refused_in_one_line_naming_it(setting, value, message):
    with pytest.raises(InvalidSetting) as raised:
        settings_of(**{setting: value})
    assert str(raised.value) == message
    # The extension keeps it as the job's failure: the job is still recorded.
    ext = build_from_crawler(JobStatusExtension, get_crawler(settings_dict={setting: value}))
    assert (ext.config, ext.setting_error) == (None, message)


# -- real crawls ------------------------------------------------------------------------

FAST = {
    "JOBSTATUS_INTERVAL": "0.2",
    "RETRY_ENABLED": "False",
    "JOBSTATUS_CANCEL_GRACE": "0.5",
}
CANCEL_ORDER = ["running", "cancelling", "finalizing", "cancelled"]


class Crawl:
    """A ``scrapy crawl batch`` process with a feed, and its job read
    through the store."""

    def __init__(self, tmp_path, urls: list[str], settings: dict[str, str], feed: str = "jsonl"):
        self.db = tmp_path / "jobs.db"
        self.log = tmp_path / "crawl.log"
        self.feed = tmp_path / f"items.{feed}"
        formats = {"jsonl": "jsonlines", "json": "json"}
        command = crawl_command(
            "batch", self.db, args={"urls": ",".join(urls), "_job": "job1"},
            settings={**FAST, **settings},
        )  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*command, "-O", f"{self.feed}:{formats[feed]}"],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        STARTED.append(self.process)

    def doc(self) -> dict | None:
        if not self.db.exists():
            return None
        store = open_store(self.db)
        try:
            return store.document("job1", errors_kept=1000)
        finally:
            store.close()

    def wait_doc(self, condition: Callable[[dict], Any], what: str, timeout: float = 30) -> dict:
        return wait_for(
            lambda: (d := self.doc()) and condition(d) and d, timeout=timeout, what=what
        )

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the crawl still runs after {timeout} s") from None

    def jobstatus(self) -> dict:
        """``scrapy jobstatus job1 --json``, as a user reads the job."""
        shown = scrapy("jobstatus", "job1", "--db", str(self.db), "--json")
        assert shown.returncode in (0, 1), shown.stderr
        return json.loads(shown.stdout)


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def steps_of(doc: dict) -> list[str]:
    return [e["step"] for e in doc["history"]]


def hanging(site: str, count: int) -> list[str]:
    return [f"{site}/slow?delay=30&n={i}" for i in range(count)]


def test_a_stalled_job_is_warned_of_once_and_keeps_running(tmp_path, site):
    crawl = Crawl(tmp_path, hanging(site, 2), {"JOBSTATUS_STALL_TIMEOUT": "1.5"})
    doc = crawl.wait_doc(lambda d: "stalled" in steps_of(d), what="the stalled event")
    assert doc["status"] == "running" and doc["is_active"]
    assert doc["warnings"] == ["stalled: no progress for 1.5 s"]
    (stalled,) = [e for e in doc["history"] if e["step"] == "stalled"]
    assert stalled["status"] == "running"
    assert stalled["details"].startswith("no progress since 20")
    assert stalled["details"].endswith(": 0 requests pending, 2 in flight")
    # Written for another second (five intervals): still running, still
    # warned of once.
    later = crawl.wait_doc(
        lambda d: seconds(d["updated_at"]) > seconds(stalled["timestamp"]) + 1,
        what="the writes of the next second",
    )
    assert later["status"] == "running" and later["requests_in_flight"] == 2
    assert steps_of(later).count("stalled") == 1 and later["warnings"] == doc["warnings"]
    assert crawl.process.poll() is None
    shown = crawl.jobstatus()
    assert shown["status"] == "running" and steps_of(shown).count("stalled") == 1
    assert shown["warnings"] == ["stalled: no progress for 1.5 s"]
    assert "Job stalled: no progress for 1.5 s with 0 requests pending and 2 in flight" in (
        crawl.log.read_text()
    )
    # The warning does not end the job: a cancel does, as always.
    assert scrapy("jobcancel", "job1", "--db", str(crawl.db)).returncode == 0
    assert crawl.wait() == 0
    done = crawl.doc()
    assert (done["status"], done["completion_reason"]) == ("cancelled", "cancelled")
    assert done["warnings"] == ["stalled: no progress for 1.5 s", FORCED_STOP_WARNING]
    assert steps_of(done).count("stalled") == 1
    assert "'jobstatus/stalls': 1" in crawl.log.read_text()


def test_the_cancel_action_stops_a_stalled_job_gracefully_keeping_the_items(
    tmp_path, site, reactor_mode
):
    # The fast pages answer at once, with items; the hanging ones do not
    # answer within the test: no progress after the fast items.
    fast = [f"{site}/sample/{name}" for name in ("apple", "banana", "cherry")]
    # Scheduled pending, the job's webhook URL is kept by the crawl: the
    # stall is in its outbox, written with the event.
    store = open_store(tmp_path / "jobs.db")
    try:
        store.add_pending(
            pending_job("job1", project=None, spider="batch", node=None,
                        webhooks=["http://127.0.0.1:9/hook"]),
        )  # fmt: skip
    finally:
        store.close()
    crawl = Crawl(
        tmp_path,
        fast + hanging(site, 2),
        {
            **reactor_mode,
            "JOBSTATUS_STALL_TIMEOUT": "2",
            "JOBSTATUS_STALL_ACTION": "cancel",
            # The events stay in the outbox: nothing listens on port 9.
            "JOBSTATUS_WEBHOOK_DELIVER": "False",
        },
        feed="json",
    )
    assert crawl.wait() == 0
    doc = crawl.jobstatus()
    assert doc == {**crawl.doc(), "running_time": None}
    assert doc["status"] == "cancelled"
    assert doc["completion_reason"] == "stalled"
    assert doc["close_reason"] == "jobstatus_stalled"
    assert doc["message"] == (
        "The job stalled (no progress for 2 s) and was cancelled; "
        "the results of finished requests were kept."
    )
    # The hanging requests had their grace period, then were dropped.
    assert doc["warnings"] == ["stalled: no progress for 2 s", FORCED_STOP_WARNING]
    history = [(e["step"], e["status"]) for e in doc["history"]]
    steps = steps_of(doc)
    assert steps.count("stalled") == 1 and history[steps.index("stalled")][1] == "running"
    cancel = doc["history"][steps.index("cancel requested")]
    assert (cancel["status"], cancel["details"]) == ("cancelling", "by stall watchdog")
    order = ["stalled", "cancel requested", "forced stop", "closing", "feeds closed", "finished"]
    assert [s for s in steps if s in order] == order
    assert history[-1] == ("finished", "cancelled")
    assert [s for s, _ in itertools.groupby(e["status"] for e in doc["history"])] == CANCEL_ORDER
    # The feed is a valid JSON document with the fast pages' items.
    items = json.loads(crawl.feed.read_text())
    assert sorted(item["url"] for item in items) == sorted(fast)
    assert doc["total_documents_found"] == doc["total_pages_crawled"] == 3
    log = crawl.log.read_text()
    assert "'jobstatus/completion_reason': 'stalled'" in log
    assert "'jobstatus/status': 'cancelled'" in log
    assert "Traceback" not in log
    store = open_store(crawl.db)
    try:
        events = [d["type"] for d in store.webhook_log("job1")]
    finally:
        store.close()
    assert events == ["job.started", "job.stalled", "job.cancelled"]


def test_each_stall_of_a_crawl_is_warned_of_and_progress_ends_it(tmp_path, site):
    # One request at a time, each answered after 1.5 s: two stalls of 0.5 s.
    urls = [f"{site}/slow?delay=1.5&n={i}" for i in range(2)]
    job = run_job(
        tmp_path,
        "batch",
        {"urls": ",".join(urls)},
        {"JOBSTATUS_STALL_TIMEOUT": "0.5", "JOBSTATUS_INTERVAL": "0.1", "CONCURRENT_REQUESTS": "1"},
        timeout=30,
    )
    doc = job.doc
    assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
    assert len(job.items) == 2
    stalls = [e for e in doc["history"] if e["step"] == "stalled"]
    assert len(stalls) == 2, steps_of(doc)
    steps = steps_of(doc)
    assert steps.index("stalled") < steps.index("first response")
    assert all(e["details"].endswith(" requests pending, 1 in flight") for e in stalls)
    assert stalls[-1]["details"].endswith(": 0 requests pending, 1 in flight")
    assert doc["warnings"] == ["stalled: no progress for 0.5 s"]
    assert "'jobstatus/stalls': 2" in job.log


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [bad for bad in BAD_STALL_SETTINGS if bad[1] in ("-1", "nan", "stop")],
)
def test_a_bad_stall_setting_fails_the_crawls_job_at_once(tmp_path, site, setting, value, message):
    job = run_job(tmp_path, "batch", {"urls": f"{site}/sample/apple"}, {setting: value}, timeout=30)
    doc = job.doc
    assert (doc["status"], doc["completion_reason"]) == ("failed", "error")
    assert doc["error_message"] == message
    assert doc["total_pages_crawled"] == 0 and job.items == []
    assert "Traceback" not in job.log
