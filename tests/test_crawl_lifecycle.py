"""The job lifecycle of real ``scrapy crawl`` processes against the local site."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scrapy_jobstatus import open_store
from tests.helpers import poll_until, read_lines, run_crawl, scrapy, start_crawl, wait_for
from tests.postgres import temporary_database

FAST = {"JOBSTATUS_INTERVAL": "0.2", "RETRY_ENABLED": "False"}
# The order a job's statuses follow when it is cancelled, or when it ends by itself.
CANCEL_ORDER = ["running", "cancelling", "finalizing", "cancelled"]
END_ORDER = ["running", "finalizing", "completed"]


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def no_crawl_left_running() -> Iterator[None]:
    """A test that fails while its crawl runs leaves no process behind."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


class Job:
    """A crawl process and the job it runs, read through the store."""

    def __init__(self, tmp_path, spider="batch", job_id="job1", args=None, settings=None, db=None):
        self.job_id = job_id
        self.db = db or tmp_path / "jobs.db"
        self.log = tmp_path / f"{job_id}.log"
        self.feed = tmp_path / f"{job_id}.jl"
        self.spider = spider
        self.args = {**(args or {}), "_job": job_id}
        self.settings = {**FAST, **(settings or {})}
        self.process = None

    def start(self) -> Job:
        self.process = start_crawl(
            self.spider, self.db, self.log, args=self.args, settings=self.settings, output=self.feed
        )
        STARTED.append(self.process)
        return self

    def run(self, timeout: float = 120) -> Job:
        try:
            self.returncode = run_crawl(
                self.spider,
                self.db,
                self.log,
                timeout=timeout,
                args=self.args,
                settings=self.settings,
                output=self.feed,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the crawl of job {self.job_id} did not end within {timeout} s"
            ) from None
        return self

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the crawl of job {self.job_id} still runs after {timeout} s"
            ) from None

    def doc(self) -> dict | None:
        if not self.db.exists():
            return None
        # Opened as a crawl opens it: a read racing the crawl that creates the
        # store finds it made, not half made.
        store = open_store(self.db)
        try:
            return store.document(self.job_id, errors_kept=1000)
        finally:
            store.close()

    def wait_status(self, *statuses: str, timeout: float = 60) -> dict:
        return self.wait_doc(
            lambda d: d["status"] in statuses, timeout=timeout, what=f"status in {statuses}"
        )

    def wait_doc(
        self, condition: Callable[[dict], Any], timeout: float = 60, what: str = ""
    ) -> dict:
        """The first status document of the job for which ``condition`` holds."""
        return wait_for(
            lambda: (d := self.doc()) and condition(d) and d,
            timeout=timeout,
            what=f"job {self.job_id}: {what or condition}",
        )

    def docs_until_done(self, timeout: float = 60, interval: float = 0.02) -> list[dict]:
        """Every status document read while polling until the job ends (the
        last one is its final document)."""
        docs = poll_until(
            self.doc, lambda d: d is not None and not d["is_active"], timeout=timeout,
            interval=interval, what=f"job {self.job_id} to end",
        )  # fmt: skip
        return [d for d in docs if d is not None]

    def statuses_until_done(self, timeout: float = 60) -> tuple[list[str], dict]:
        """Every distinct status seen while polling until the job ends."""
        docs = self.docs_until_done(timeout)
        return [status for status, _ in itertools.groupby(d["status"] for d in docs)], docs[-1]

    @property
    def items(self) -> list[dict]:
        return read_lines(self.feed)

    @property
    def log_text(self) -> str:
        return self.log.read_text()


def slow_urls(site: str, count: int, delay: float) -> str:
    return ",".join(f"{site}/slow?delay={delay}&n={i}" for i in range(count))


def listed_jobs(db) -> dict:
    """``scrapy jobs --json``: the jobs of a store, as a user lists them."""
    result = scrapy("jobs", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def in_order(seen: list[str], order: list[str]) -> bool:
    """Whether ``seen`` is a subsequence of ``order``: each one after the
    previous, some possibly missed by a poll."""
    remaining = iter(order)
    return all(status in remaining for status in seen)


def recorded_statuses(doc: dict) -> list[str]:
    """The statuses the job's history went through, in order."""
    return [status for status, _ in itertools.groupby(e["status"] for e in doc["history"])]


def test_in_order_accepts_subsequences_only():
    assert in_order(["running", "cancelled"], CANCEL_ORDER)
    assert in_order(CANCEL_ORDER, CANCEL_ORDER)
    assert not in_order(["cancelling", "running"], CANCEL_ORDER)
    assert not in_order(["running", "completed"], CANCEL_ORDER)
    assert not in_order(["cancelled", "cancelled"], CANCEL_ORDER)


def test_a_completed_batch_job_has_exact_counters_history_and_stats(tmp_path, site, reactor_mode):
    urls = ",".join(f"{site}/sample/{name}" for name in ["", "apple", "banana", "nope"])
    job = Job(tmp_path, args={"urls": urls}, settings=reactor_mode).run()
    doc = job.doc()
    assert doc["status"] == "completed"
    assert doc["completion_reason"] == "done"
    assert doc["close_reason"] == "finished"
    assert doc["is_active"] is False
    assert doc["progress"] == 100.0
    assert doc["total_pages_crawled"] == 4
    assert doc["total_documents_found"] == 4 == len(job.items)
    assert doc["responses_failed"] == 1
    assert doc["failure_ratio"] == 0.25
    assert doc["processing_time"] > 0 and doc["running_time"] is None
    assert doc["stages_completed"] == ["fetch", "finalizing"] and doc["stage"] is None
    assert doc["node"] and doc["spider"] == "batch" and doc["project"] is None
    steps = [event["step"] for event in doc["history"]]
    assert steps == [
        "opened",
        "stage fetch",
        "first response",
        "closing",
        "stage finalizing",
        "feeds closed",
        "finished",
    ]
    assert all(isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0 for e in doc["history"])
    assert doc["history"][-1]["status"] == "completed"
    titles = {item["url"].rsplit("/", 1)[1]: item["title"] for item in job.items}
    assert titles == {
        "": "Fruit index",
        "apple": "Apples",
        "banana": "Bananas",
        "nope": "Not found",
    }
    # The final stats dump carries the job's figures.
    assert "'jobstatus/status': 'completed'" in job.log_text
    assert "'jobstatus/pages_crawled': 4" in job.log_text
    assert "'jobstatus/errors/http_error': 1" in job.log_text


def test_every_error_kind_is_recorded_with_url_status_and_recoverability(tmp_path, site):
    urls = [
        f"{site}/sample/apple",
        f"{site}/sample/banana?spider-error",
        f"{site}/sample/cherry?item-error",
        f"{site}/status/404",
        f"{site}/status/503",
        f"{site}/drop",
        "http://nothing.invalid/",
        f"{site}/slow?delay=10",
    ]
    job = Job(
        tmp_path,
        spider="probe",
        args={"urls": ",".join(urls)},
        settings={
            "DOWNLOAD_TIMEOUT": "1",
            "JOBSTATUS_FAILURE_RATIO": "0.9",
            "ITEM_PIPELINES": json.dumps({"tests.spiders.probe.RefusingPipeline": 100}),
            "HTTPERROR_ALLOW_ALL": "True",
        },
    ).run()
    doc = job.doc()
    assert doc["status"] == "completed", doc["error_message"]
    errors = {(e["error_type"], e["page_url"]): e for e in doc["errors"]}
    expected = {
        ("spider_error", f"{site}/sample/banana?spider-error"): (200, False),
        ("item_error", f"{site}/sample/cherry?item-error"): (200, False),
        ("http_error", f"{site}/status/404"): (404, False),
        ("http_error", f"{site}/status/503"): (503, True),
        ("connection_error", f"{site}/drop"): (None, True),
        ("dns_error", "http://nothing.invalid/"): (None, False),
        ("timeout", f"{site}/slow?delay=10"): (None, True),
    }
    assert set(errors) == set(expected)
    for key, (http_status, recoverable) in expected.items():
        assert errors[key]["http_status"] == http_status, key
        assert errors[key]["is_recoverable"] is recoverable, key
        assert errors[key]["stage"] == "probe"
        assert "\n" not in errors[key]["error_message"] and errors[key]["error_message"]
    assert doc["error_count"] == 7 and doc["has_errors"]
    assert doc["total_pages_crawled"] == 5
    assert doc["responses_failed"] == 5  # 404, 503, drop, dns, timeout
    assert doc["failure_ratio"] == round(5 / 8, 4)
    assert doc["total_documents_found"] == len(job.items) == 3  # 2 spider/item errors, 5 failures


def test_a_job_whose_responses_mostly_fail_ends_failed_saying_why(tmp_path, site):
    urls = [f"{site}/status/500?n={i}" for i in range(3)] + [f"{site}/sample/apple"]
    job = Job(tmp_path, args={"urls": ",".join(urls)}).run()
    doc = job.doc()
    assert doc["status"] == "failed"
    assert doc["completion_reason"] == "error"
    assert doc["close_reason"] == "finished"
    assert "3 of 4 responses failed" in doc["error_message"]
    assert "JOBSTATUS_FAILURE_RATIO" in doc["error_message"]
    assert doc["error_message"] in doc["message"]
    assert len(job.items) == 4  # the results are still there


def test_a_timeout_stops_scheduling_and_keeps_partial_results(tmp_path, site, reactor_mode):
    job = Job(
        tmp_path,
        args={"urls": slow_urls(site, 30, 0.5)},
        settings={**reactor_mode, "JOBSTATUS_TIMEOUT": "1.5", "CONCURRENT_REQUESTS": "2"},
    ).start()
    statuses, doc = job.statuses_until_done()
    assert job.wait() == 0
    assert doc["status"] == "completed"
    assert doc["completion_reason"] == "timeout"
    assert doc["close_reason"] == "jobstatus_timeout"
    assert doc["timeout"] == 1.5
    assert 0 < doc["total_documents_found"] < 30
    # The terminal status was read only once the feed was complete.
    assert len(job.items) == doc["total_documents_found"] == doc["total_pages_crawled"]
    assert doc["progress"] == pytest.approx(100 * doc["total_documents_found"] / 30, abs=0.01)
    # Seen by the poll and recorded in the history alike: running, then
    # finalizing (feeds being closed), then completed; never cancelling.
    assert in_order(statuses, END_ORDER) and statuses[-1] == "completed", statuses
    history = [(e["step"], e["status"]) for e in doc["history"]]
    steps = [step for step, _ in history]
    assert steps.index("timeout reached") < steps.index("closing") < steps.index("finished")
    assert history[steps.index("timeout reached")] == ("timeout reached", "running")
    assert ("feeds closed", "finalizing") in history
    assert history[-1] == ("finished", "completed")
    assert recorded_statuses(doc) == END_ORDER


def test_cancel_through_the_store_finishes_in_flight_requests_and_loses_no_item(
    tmp_path, site, reactor_mode
):
    # Start requests are sent in order: three quick pages, then three pages of
    # 5 s are in flight when the cancel arrives, and 24 more wait.
    quick = [f"{site}/sample/{name}" for name in ("apple", "banana", "cherry")]
    slow = [f"{site}/slow?delay=5&n={i}" for i in range(27)]
    job = Job(
        tmp_path,
        args={"urls": ",".join(quick + slow)},
        settings={**reactor_mode, "CONCURRENT_REQUESTS": "3"},
    ).start()
    job.wait_doc(
        lambda d: d["total_pages_crawled"] == 3 and d["requests_in_flight"] == 3,
        what="the quick pages crawled and three slow ones in flight",
    )
    result = scrapy("jobcancel", "job1", "--db", str(job.db))
    assert result.returncode == 0, result.stderr
    assert "cancellation requested" in result.stdout
    statuses, doc = job.statuses_until_done()
    assert job.wait() == 0
    # Polls may miss a short status, never see them out of order.
    assert in_order(statuses, CANCEL_ORDER) and statuses[-1] == "cancelled", statuses
    assert doc["status"] == "cancelled"
    assert doc["completion_reason"] == "cancelled"
    assert doc["close_reason"] == "cancelled"
    assert doc["cancel_requested_at"] is not None
    # The history records the request, then the close once the requests in
    # flight had finished, then the end.
    history = [(e["step"], e["status"]) for e in doc["history"]]
    steps = [step for step, _ in history]
    assert steps.count("cancel requested") == 1
    cancel = doc["history"][steps.index("cancel requested")]
    assert (cancel["status"], cancel["details"]) == ("cancelling", "by store")
    assert steps.index("first response") < steps.index("cancel requested") < steps.index("closing")
    assert history[-1] == ("finished", "cancelled")
    assert recorded_statuses(doc) == CANCEL_ORDER
    # Nothing was dropped: no forced stop, no failed response.
    assert doc["warnings"] == [] and "forced stop" not in steps
    assert (doc["responses_failed"], doc["error_count"], doc["requests_in_flight"]) == (0, 0, 0)
    # The requests in flight finished and their items were kept; nothing new was sent.
    assert sorted(item["url"] for item in job.items) == sorted(quick + slow[:3])
    assert doc["total_documents_found"] == doc["total_pages_crawled"] == 6
    # Cancelling again changes nothing and is no error.
    again = scrapy("jobcancel", "job1", "--db", str(job.db))
    assert again.returncode == 0 and "cancelled" in again.stdout
    assert job.doc()["completed_at"] == doc["completed_at"]


def test_sigint_cancels_gracefully(tmp_path, site, reactor_mode):
    job = Job(
        tmp_path,
        args={"urls": slow_urls(site, 30, 0.8)},
        settings={**reactor_mode, "CONCURRENT_REQUESTS": "3"},
    ).start()
    wait_for(lambda: (d := job.doc()) and d["total_pages_crawled"] >= 3, what="first pages")
    job.process.send_signal(signal.SIGINT)
    statuses, doc = job.statuses_until_done()
    assert job.wait() == 0
    # "running" until the crawl handles the signal, then cancelling: a poll
    # may miss a status, the history has them all.
    assert in_order(statuses, CANCEL_ORDER) and statuses[-1] == "cancelled", statuses
    assert recorded_statuses(doc) == CANCEL_ORDER
    cancel = [e for e in doc["history"] if e["step"] == "cancel requested"]
    assert [(e["status"], e["details"]) for e in cancel] == [("cancelling", "by signal")]
    assert doc["close_reason"] == "shutdown"
    assert doc["warnings"] == []
    assert len(job.items) == doc["total_documents_found"] == doc["total_pages_crawled"] < 30


def test_a_second_signal_drops_in_flight_requests_but_closes_feeds_and_writes_the_status(
    tmp_path, site, reactor_mode
):
    urls = f"{site}/sample/apple," + slow_urls(site, 4, 60)
    job = Job(
        tmp_path, args={"urls": urls}, settings={**reactor_mode, "CONCURRENT_REQUESTS": "5"}
    ).start()
    wait_for(lambda: (d := job.doc()) and d["total_pages_crawled"] >= 1, what="first page")
    job.process.send_signal(signal.SIGINT)
    job.wait_status("cancelling")
    job.process.send_signal(signal.SIGINT)
    assert job.wait(timeout=20) == 0
    doc = job.doc()
    assert doc["status"] == "cancelled"
    assert any(w.startswith("forced stop") for w in doc["warnings"])
    assert "forced stop" in [e["step"] for e in doc["history"]]
    assert [item["url"] for item in job.items] == [f"{site}/sample/apple"]
    assert doc["total_documents_found"] == 1
    # The dropped requests are no failed pages, and their end is no error.
    assert doc["responses_failed"] == 0 and doc["error_count"] == 0
    assert "Traceback" not in job.log_text


def test_a_second_signal_drops_queued_and_downloading_pages_without_an_error(
    tmp_path, site, reactor_mode
):
    # Sixteen slow pages in flight, four downloading and twelve queued in
    # Scrapy's download slot: each is cancelled while the spider is open,
    # none ends later in a closed engine.
    settings = {**reactor_mode, "CONCURRENT_REQUESTS": "16", "CONCURRENT_REQUESTS_PER_DOMAIN": "4"}
    job = Job(tmp_path, args={"urls": slow_urls(site, 30, 5)}, settings=settings).start()
    job.wait_doc(lambda d: d["requests_in_flight"] == 16, what="sixteen requests in flight")
    job.process.send_signal(signal.SIGINT)
    job.wait_status("cancelling")
    job.process.send_signal(signal.SIGINT)
    assert job.wait(timeout=20) == 0
    doc = job.doc()
    assert doc["status"] == "cancelled" and not doc["is_active"]
    assert any(w.startswith("forced stop") for w in doc["warnings"])
    forced = [e["details"] for e in doc["history"] if e["step"] == "forced stop"]
    assert forced == ["16 in-flight requests dropped"]
    assert doc["responses_failed"] == 0 and doc["error_count"] == 0
    log = job.log_text
    assert "Traceback" not in log and not re.search(r"\] ERROR: ", log), log[-3000:]
    assert "Forced stop: 16 in-flight requests dropped" in log


def test_the_grace_period_ends_a_cancel_whose_requests_hang(tmp_path, site, reactor_mode):
    job = Job(
        tmp_path,
        args={"urls": f"{site}/sample/apple," + slow_urls(site, 2, 60)},
        settings={**reactor_mode, "JOBSTATUS_CANCEL_GRACE": "1"},
    ).start()
    wait_for(lambda: (d := job.doc()) and d["total_pages_crawled"] >= 1, what="first page")
    assert scrapy("jobcancel", "job1", "--db", str(job.db)).returncode == 0
    assert job.wait(timeout=20) == 0
    doc = job.doc()
    assert doc["status"] == "cancelled"
    assert any(w.startswith("forced stop") for w in doc["warnings"])
    assert len(job.items) == 1
    assert "Forced stop" in job.log_text


def test_a_forced_cancel_does_not_wait_for_in_flight_requests(tmp_path, site, reactor_mode):
    job = Job(
        tmp_path,
        args={"urls": f"{site}/sample/apple," + slow_urls(site, 2, 60)},
        settings=reactor_mode,
    ).start()
    wait_for(lambda: (d := job.doc()) and d["total_pages_crawled"] >= 1, what="first page")
    assert scrapy("jobcancel", "job1", "--force", "--db", str(job.db)).returncode == 0
    assert job.wait(timeout=20) == 0
    doc = job.doc()
    assert doc["status"] == "cancelled"
    assert any(w.startswith("forced stop") for w in doc["warnings"])
    assert len(job.items) == 1


def test_a_killed_crawl_is_reported_failed_by_the_next_reader(tmp_path, site):
    job = Job(tmp_path, args={"urls": slow_urls(site, 5, 60)}).start()
    job.wait_status("running")
    job.process.kill()
    job.wait()
    assert job.doc()["status"] in ("running", "failed")  # until the heartbeat is stale

    def reported_failed() -> dict | None:
        result = scrapy("jobstatus", "job1", "--db", str(job.db), "--json")
        assert result.returncode in (0, 1), result.stderr
        document = json.loads(result.stdout)
        return document if document["status"] == "failed" else None

    doc = wait_for(
        reported_failed, timeout=30, interval=0.2, what="jobstatus to report the dead job failed"
    )
    assert doc["completion_reason"] == "error"
    assert f"pid {job.process.pid}" in doc["error_message"] and "died" in doc["error_message"]
    assert doc["history"][-1]["step"] == "failed"
    # Recorded in the store: every later reader sees it failed.
    assert job.doc() == doc


def test_concurrent_crawls_share_one_store_while_a_reader_polls(tmp_path, site):
    db = tmp_path / "shared.db"
    jobs = [
        Job(
            tmp_path,
            spider="follow",
            job_id=f"c{i}",
            db=db,
            args={"url": f"{site}/pages/0?links=4&max=300&c={i}"},
            settings={"JOBSTATUS_INTERVAL": "0.1"},
        ).start()
        for i in range(3)
    ]
    reads = 0

    def read_everything_until_all_ended() -> bool:
        nonlocal reads
        if db.exists():
            documents = [job.doc() for job in jobs]
            reads += any(documents)
        return all(job.process.poll() is not None for job in jobs)

    wait_for(read_everything_until_all_ended, timeout=120, interval=0, what="the crawls to end")
    assert reads > 10
    for job in jobs:
        assert job.wait() == 0
        doc = job.doc()
        assert doc["status"] == "completed", doc["error_message"]
        assert doc["total_pages_crawled"] == 301 == len(job.items)
        assert "database is locked" not in job.log_text
        assert "Traceback" not in job.log_text
    assert listed_jobs(db)["total"] == 3


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("JOBSTATUS_TIMEOUT", "-5", "JOBSTATUS_TIMEOUT must not be negative"),
        ("JOBSTATUS_TIMEOUT", "soon", "JOBSTATUS_TIMEOUT must be a number"),
        ("JOBSTATUS_TIMEOUT", "5000", "JOBSTATUS_TIMEOUT=5000 is above JOBSTATUS_TIMEOUT_MAX=1800"),
        ("JOBSTATUS_FAILURE_RATIO", "1.5", "JOBSTATUS_FAILURE_RATIO must be between 0 and 1"),
        ("JOBSTATUS_FAILURE_RATIO", "-0.1", "JOBSTATUS_FAILURE_RATIO must be between 0 and 1"),
        ("JOBSTATUS_INTERVAL", "0", "JOBSTATUS_INTERVAL must be at least 0.1 s"),
        ("JOBSTATUS_INTERVAL", "0.000001", "JOBSTATUS_INTERVAL must be at least 0.1 s, got 1e-06"),
    ],
)
def test_a_bad_setting_fails_the_job_at_once_naming_the_setting(
    tmp_path, site, setting, value, named
):
    job = Job(tmp_path, args={"urls": f"{site}/sample/apple"}, settings={setting: value}).run()
    doc = job.doc()
    assert doc["status"] == "failed"
    assert named in doc["error_message"]
    assert doc["total_pages_crawled"] == 0 and job.items == []
    assert "Traceback" not in job.log_text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({}, "urls: no URL given"),
        ({"urls": ",, ,"}, "urls: the URL list is empty"),
        (
            {"urls": "ftp://example.com/file"},
            "urls: 'ftp://example.com/file' is not an http(s) URL",
        ),
        ({"urls": "http://"}, "urls: 'http://' is not an http(s) URL"),
        ({"urls_file": "does-not-exist.txt"}, "urls_file: cannot read 'does-not-exist.txt'"),
    ],
)
def test_bad_batch_arguments_fail_the_job_naming_the_argument(tmp_path, args, named):
    job = Job(tmp_path, args=args).run()
    doc = job.doc()
    assert doc["status"] == "failed"
    assert named in doc["error_message"]
    assert "Traceback" not in doc["error_message"]
    assert doc["total_pages_crawled"] == 0


def test_a_batch_job_reads_its_urls_from_a_file(tmp_path, site):
    urls_file = tmp_path / "urls.txt"
    urls_file.write_text(f"{site}/sample/apple\n\n{site}/sample/fig\n{site}/sample/apple\n")
    job = Job(tmp_path, args={"urls_file": str(urls_file)}).run()
    assert job.doc()["status"] == "completed"
    urls = sorted(item["url"] for item in job.items)
    assert urls == [f"{site}/sample/apple", f"{site}/sample/fig"]


def test_an_empty_urls_file_fails_the_job(tmp_path):
    urls_file = tmp_path / "urls.txt"
    urls_file.write_text("\n\n")
    doc = Job(tmp_path, args={"urls_file": str(urls_file)}).run().doc()
    assert doc["status"] == "failed"
    assert "urls_file: the URL list is empty" in doc["error_message"]


def test_an_invalid_job_id_is_refused_and_nothing_is_recorded(tmp_path, site):
    job = Job(tmp_path, job_id="../escape", args={"urls": f"{site}/sample/apple"})
    job.log = tmp_path / "bad.log"
    job.feed = tmp_path / "bad.jl"
    job.run()
    assert "invalid job id '../escape'" in job.log_text
    assert job.items == []
    if job.db.exists():
        assert listed_jobs(job.db)["total"] == 0
    else:
        listed = scrapy("jobs", "--db", str(job.db))
        assert listed.returncode == 1 and "no job store" in listed.stderr


def test_with_the_extension_disabled_spiders_run_unchanged(tmp_path, site):
    job = Job(
        tmp_path,
        args={"urls": f"{site}/sample/apple,{site}/sample/fig"},
        settings={"JOBSTATUS_ENABLED": "False"},
    ).run()
    assert job.returncode == 0
    assert len(job.items) == 2
    assert not job.db.exists()
    assert "jobstatus/" not in job.log_text


def test_a_generated_job_id_is_logged_at_start(tmp_path, site):
    job = Job(tmp_path, args={"urls": f"{site}/sample/apple"})
    del job.args["_job"]
    job.run()
    (listed,) = listed_jobs(job.db)["jobs"]
    assert f"Job id: {listed['job_id']}" in job.log_text
    assert listed["status"] == "completed"


def test_exact_progress_never_goes_backwards_and_reaches_100(tmp_path, site):
    job = Job(
        tmp_path, args={"urls": slow_urls(site, 12, 0.3)}, settings={"CONCURRENT_REQUESTS": "2"}
    ).start()
    docs = job.docs_until_done(interval=0.05)
    assert job.wait() == 0
    assert docs[-1]["status"] == "completed"
    etas = [doc["estimated_completion"] for doc in docs]
    values = [doc["progress"] for doc in docs if doc["progress"] is not None]
    assert values == sorted(values)
    assert values[-1] == 100.0
    assert any(0 < p < 100 for p in values)
    # each value is a whole number of twelfths: exact, not estimated
    assert all(abs(p * 12 / 100 - round(p * 12 / 100)) < 0.01 for p in values)
    assert any(eta is not None for eta in etas)


def test_estimated_progress_from_the_frontier_never_goes_backwards(tmp_path, site):
    job = Job(
        tmp_path,
        spider="follow",
        args={"url": f"{site}/pages/0?links=3&max=400"},
        settings={"CONCURRENT_REQUESTS": "4", "DOWNLOAD_DELAY": "0.005"},
    ).start()
    docs = job.docs_until_done(timeout=120)
    assert job.wait() == 0
    values = [doc["progress"] for doc in docs if doc["progress"] is not None]
    doc = job.doc()
    assert doc["status"] == "completed" and doc["progress"] == 100.0
    active = [v for v in values if v < 100]
    assert active == sorted(active)
    assert all(0 <= v <= 99 for v in active)
    assert len(set(active)) > 3


def test_job_commands_list_show_watch_and_refuse_bad_input(tmp_path, site):
    Job(tmp_path, job_id="good", args={"urls": f"{site}/sample/apple"}).run()
    Job(tmp_path, job_id="bad", args={"urls": f"{site}/status/500"}).run()
    db = str(tmp_path / "jobs.db")

    listing = scrapy("jobs", "--db", db)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[1].startswith("bad ") and lines[2].startswith("good ")
    assert "2 of 2 jobs" in listing.stdout
    listed = json.loads(scrapy("jobs", "--db", db, "--json", "--status", "failed").stdout)
    assert listed["total"] == 1 and listed["jobs"][0]["job_id"] == "bad"

    shown = scrapy("jobstatus", "good", "--db", db)
    assert shown.returncode == 0 and "completed (done)" in shown.stdout
    assert json.loads(scrapy("jobstatus", "good", "--db", db, "--json").stdout)["job_id"] == "good"

    watched = scrapy("jobwatch", "good", "--db", db)
    assert watched.returncode == 0 and "100%" in watched.stdout
    assert scrapy("jobwatch", "bad", "--db", db).returncode == 1
    assert scrapy("jobcancel", "good", "--db", db).returncode == 1  # already completed

    for command in ("jobstatus", "jobcancel", "jobwatch"):
        unknown = scrapy(command, "nope", "--db", db)
        assert (unknown.returncode, unknown.stderr) == (1, "error: unknown job: nope\n")
        invalid = scrapy(command, "../../etc/passwd", "--db", db)
        assert invalid.returncode == 2
        assert invalid.stderr.startswith("error: invalid job id")
        assert invalid.stderr.count("\n") == 1
    pruned = scrapy("jobs", "--db", db, "--prune-keep", "1")
    assert pruned.returncode == 0 and "pruned 1 finished jobs" in pruned.stdout
    assert "1 of 1 jobs" in pruned.stdout and "\nbad " in pruned.stdout
    remote_prune = scrapy("jobs", "--url", "http://127.0.0.1:9/", "--prune-keep", "1")
    assert remote_prune.returncode == 2 and "local store" in remote_prune.stderr
    bad_status = scrapy("jobs", "--db", db, "--status", "sleeping")
    assert bad_status.returncode == 2 and "--status" in bad_status.stderr
    assert "Traceback" not in bad_status.stderr


def test_jobwatch_follows_a_running_job_to_its_end(tmp_path, site):
    job = Job(
        tmp_path, args={"urls": slow_urls(site, 6, 0.3)}, settings={"CONCURRENT_REQUESTS": "1"}
    ).start()
    # Watched at once: --wait covers the store the crawl has not made yet.
    watched = scrapy("jobwatch", "job1", "--db", str(job.db), "--wait", "30", "--interval", "0.1")
    job.wait()
    assert watched.returncode == 0, watched.stderr
    bars = [line for line in watched.stdout.splitlines() if line.startswith("[")]
    assert len(bars) >= 3
    assert "running" in bars[0] and "100%" in bars[-1]
    assert watched.stdout.strip().endswith("completed: The job completed.")


def test_a_crawl_process_writes_the_store_per_interval_not_per_page(tmp_path, site):
    job = Job(
        tmp_path,
        spider="follow",
        args={"url": f"{site}/pages/0?links=5&max=600"},
        settings={"JOBSTATUS_INTERVAL": "0.5"},
    ).run()
    doc = job.doc()
    assert doc["total_pages_crawled"] == 601
    writes = int(re.search(r"'jobstatus/store_writes': (\d+)", job.log_text).group(1))
    ticks = doc["processing_time"] / 0.5
    # one write per interval plus one per transition, whatever the page count
    assert writes <= ticks + 8
    assert writes < 601 / 10


def test_a_job_id_is_never_run_twice(tmp_path, site):
    first = Job(tmp_path, args={"urls": f"{site}/sample/apple"}).run()
    done = first.doc()
    second = Job(tmp_path, args={"urls": f"{site}/sample/fig"})
    second.log, second.feed = tmp_path / "again.log", tmp_path / "again.jl"
    second.run()
    assert "Job job1 is completed already: not crawling" in second.log_text
    assert second.items == []
    assert second.doc() == {**done, "running_time": None}


def test_a_required_store_that_cannot_be_used_stops_the_crawl_with_one_clear_error(tmp_path, site):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    job = Job(
        tmp_path,
        args={"urls": f"{site}/sample/apple"},
        db=blocker / "jobs.db",
        settings={"JOBSTATUS_REQUIRED": "True"},
    ).run()
    (error,) = [line for line in job.log_text.splitlines() if "] ERROR: " in line]
    assert f"cannot open the job store {blocker / 'jobs.db'}" in error
    assert "JOBSTATUS_REQUIRED" in error
    assert job.items == []
    assert "Traceback" not in job.log_text


def test_a_fatal_close_reason_fails_the_job_and_a_limit_reached_completes_it(tmp_path, site):
    slow = [f"{site}/slow?delay=0.5&n={i}" for i in range(5)]
    urls = ",".join([f"{site}/sample/apple?spider-error", *slow])
    fatal = Job(
        tmp_path,
        spider="probe",
        job_id="fatal",
        args={"urls": urls},
        settings={"CLOSESPIDER_ERRORCOUNT": "1"},
    ).run()
    doc = fatal.doc()
    assert (doc["status"], doc["completion_reason"]) == ("failed", "error")
    assert doc["close_reason"] == "closespider_errorcount"
    assert "closespider_errorcount" in doc["error_message"]

    limit = Job(
        tmp_path,
        spider="probe",
        job_id="limit",
        args={"urls": urls.split(",", 1)[1]},
        settings={"CLOSESPIDER_ITEMCOUNT": "2", "CONCURRENT_REQUESTS": "1"},
    ).run()
    doc = limit.doc()
    assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
    assert doc["close_reason"] == "closespider_itemcount"


def test_a_crawl_on_a_postgresql_store_is_read_by_the_commands(tmp_path, site, postgres_url):
    with temporary_database(postgres_url) as url:
        log, feed = tmp_path / "crawl.log", tmp_path / "items.jl"
        urls = f"{site}/sample/,{site}/sample/apple,{site}/status/404"
        code = run_crawl(
            "batch", url, log, output=feed, args={"urls": urls, "_job": "pg-job"}, settings=FAST
        )
        assert code == 0, log.read_text()[-3000:]
        shown = scrapy("jobstatus", "pg-job", "--db", url, "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
        assert doc["total_pages_crawled"] == 3 == len(read_lines(feed))
        assert doc["error_count"] == 1 and doc["errors"][0]["http_status"] == 404
        assert [e["step"] for e in doc["history"]][-1] == "finished"
        listing = scrapy("jobs", "--db", url, "--json")
        assert [job["job_id"] for job in json.loads(listing.stdout)["jobs"]] == ["pg-job"]
        refused = scrapy("jobcancel", "pg-job", "--db", url)
        assert refused.returncode == 1 and "already completed" in refused.stdout
