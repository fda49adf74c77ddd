"""Everywhere Scrapy runs a crawl: a project made by ``scrapy startproject``
run without a Twisted reactor, a user's script with three crawls in one
``AsyncCrawlerProcess``, a runner in a program whose asyncio loop already
runs. Real processes against the local site; Ctrl-C is SIGINT to the
process group, as a terminal sends it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scrapy_jobstatus import open_store
from scrapy_jobstatus._store import JobFilter
from tests.conftest import scrapy_has_reactorless
from tests.helpers import (
    ROOT,
    TEST_SETTINGS,
    crawl_command,
    read_lines,
    run_crawl,
    scrapy,
    wait_for,
)

# A spider as a user writes one: a page, an item.
PAGES_SPIDER = """
import scrapy


class PagesSpider(scrapy.Spider):
    name = "pages"

    def __init__(self, urls="", **kwargs):
        super().__init__(**kwargs)
        self.urls = urls.split(",")

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url)

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get()}
"""

# The add-on as the README tells a user to enable it, without a reactor.
PROJECT_SETTINGS = """
ADDONS = {"scrapy_jobstatus.Addon": 100}
TWISTED_REACTOR_ENABLED = False
# The template's politeness, lifted for the local site.
DOWNLOAD_DELAY = 0
CONCURRENT_REQUESTS_PER_DOMAIN = 4
JOBSTATUS_INTERVAL = 0.2
"""


class Process:
    """A process in a session of its own: Ctrl-C reaches its group."""

    def __init__(self, command: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def ctrl_c(self, signum: int = signal.SIGINT) -> None:
        os.killpg(self.popen.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout} s on: {self.log_text[-3000:]}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    @property
    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def processes():
    """Whatever a test starts is gone after it, failed or not."""
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def documents(db: Path) -> dict[str, dict[str, Any]]:
    """Every job of the store, by id."""
    if not db.exists():
        return {}
    store = open_store(db)
    try:
        states = store.list_jobs(JobFilter(), limit=100).jobs
        return {state.job_id: store.document(state.job_id) for state in states}
    finally:
        store.close()


# The pages of a crawl that a test interrupts: half a second each, enough of
# them that the crawl is still running when the interruption comes, however
# long a busy machine takes to see it crawling and send it.
PAGES = 120


def slow_urls(site: str, count: int, delay: float, tag: str = "") -> str:
    return ",".join(f"{site}/slow?delay={delay}&n={tag}{i}" for i in range(count))


# -- a project made by scrapy startproject, without a reactor -----------------


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    if not scrapy_has_reactorless():
        pytest.skip("Scrapy's reactorless mode is Scrapy 2.15+")
    home = tmp_path_factory.mktemp("project")
    made = subprocess.run(
        [sys.executable, "-m", "scrapy", "startproject", "demo"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    root = home / "demo"
    (root / "demo" / "spiders" / "pages.py").write_text(PAGES_SPIDER)
    with open(root / "demo" / "settings.py", "a") as settings:
        settings.write(PROJECT_SETTINGS)
    return root


class ProjectCrawl:
    """``scrapy crawl pages`` in the project, as its user runs it; the job
    store is the add-on's default one, in the project's data directory."""

    def __init__(self, project: Path, name: str, urls: str, *options: str):
        self.project = project
        self.job_id = name
        self.feed = project / f"{name}.jl"
        command = [sys.executable, "-m", "scrapy", "crawl", "pages", "-a", f"urls={urls}"]
        command += ["-a", f"_job={name}", "-o", f"{self.feed}:jsonlines", *options]
        self.process = Process(command, project, project / f"{name}-{os.urandom(2).hex()}.log")

    @property
    def db(self) -> Path:
        return self.project / ".scrapy" / "jobstatus.db"

    def doc(self) -> dict[str, Any] | None:
        return documents(self.db).get(self.job_id)


def test_a_new_project_without_a_reactor_records_its_job(project, site, processes):
    urls = ",".join(f"{site}/sample/{page}" for page in ("apple", "banana", "cherry", "nope"))
    crawl = ProjectCrawl(project, "done", urls)
    processes.append(crawl.process)
    assert crawl.process.wait(60) == 0
    log = crawl.process.log_text
    assert "Not using a Twisted reactor" in log
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    doc = crawl.doc()
    assert doc is not None, log[-3000:]
    assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
    assert doc["total_pages_crawled"] == 4 and doc["responses_failed"] == 1
    assert doc["total_documents_found"] == len(read_lines(crawl.feed)) == 3


def test_ctrl_c_cancels_a_job_of_a_project_without_a_reactor(project, site, processes):
    crawl = ProjectCrawl(project, "interrupted", slow_urls(site, PAGES, 0.5))
    processes.append(crawl.process)
    wait_for(lambda: (d := crawl.doc()) and d["total_pages_crawled"] >= 2, what="first pages")
    crawl.process.ctrl_c()
    assert crawl.process.wait(30) == 0
    doc = crawl.doc()
    assert (doc["status"], doc["close_reason"]) == ("cancelled", "shutdown")
    assert doc["total_pages_crawled"] < PAGES
    assert doc["total_documents_found"] == len(read_lines(crawl.feed))


def test_a_timeout_ends_a_job_of_a_project_without_a_reactor(project, site, processes):
    crawl = ProjectCrawl(project, "timed", slow_urls(site, 30, 0.5), "-s", "JOBSTATUS_TIMEOUT=1.5")
    processes.append(crawl.process)
    assert crawl.process.wait(60) == 0
    doc = crawl.doc()
    assert (doc["status"], doc["completion_reason"]) == ("completed", "timeout")
    assert 0 < doc["total_documents_found"] == len(read_lines(crawl.feed)) < 30


def test_ctrl_c_pauses_a_job_with_a_jobdir_and_running_again_completes_it(project, site, processes):
    urls = slow_urls(site, 12, 0.5)
    options = ("-s", f"JOBDIR={project / 'jobdir'}", "-s", "CONCURRENT_REQUESTS=2")
    first = ProjectCrawl(project, "paused", urls, *options)
    processes.append(first.process)
    wait_for(lambda: (d := first.doc()) and d["total_pages_crawled"] >= 2, what="first pages")
    first.process.ctrl_c()
    assert first.process.wait(30) == 0
    paused = first.doc()
    assert (paused["status"], paused["close_reason"]) == ("paused", "paused")
    assert paused["total_pages_crawled"] < 12
    again = ProjectCrawl(project, "paused", urls, *options)
    processes.append(again.process)
    assert again.process.wait(60) == 0
    done = again.doc()
    assert (done["status"], done["completion_reason"]) == ("completed", "done")
    assert done["total_pages_crawled"] == 12
    items = read_lines(again.feed)
    assert sorted(item["url"] for item in items) == sorted(urls.split(","))


# -- several crawls in one process -------------------------------------------------

THREE_CRAWLS = """
import json, sys
from scrapy import crawler
from scrapy.utils.project import get_project_settings

settings = get_project_settings()
settings.setdict(json.loads(sys.argv[1]), priority="cmdline")
process = getattr(crawler, sys.argv[3] if len(sys.argv) > 3 else "AsyncCrawlerProcess")(settings)
for job, urls in json.loads(sys.argv[2]).items():
    process.crawl("batch", urls=urls, _job=job)
process.start()
"""

# Three crawls whose item pipeline takes a minute to close: a forced stop is
# still under way when a third signal comes.
THREE_CRAWLS_SLOW_TO_CLOSE = """
import asyncio, json, logging, sys
from scrapy.crawler import AsyncCrawlerProcess
from scrapy.utils.project import get_project_settings


class SlowToClose:
    async def close_spider(self):
        logging.getLogger("program").info("The pipeline closes slowly")
        await asyncio.sleep(60)


settings = get_project_settings()
settings.setdict(json.loads(sys.argv[1]), priority="cmdline")
settings.set("ITEM_PIPELINES", {"__main__.SlowToClose": 100}, priority="cmdline")
process = AsyncCrawlerProcess(settings)
for job, urls in json.loads(sys.argv[2]).items():
    process.crawl("batch", urls=urls, _job=job)
process.start()
"""

# A user's own program: its asyncio loop runs before any crawl (reactorless),
# or its own reactor runs them (with a reactor).
RUNNER_PROGRAM = """
import asyncio, json, sys
from scrapy.crawler import AsyncCrawlerRunner
from scrapy.utils.log import configure_logging
from scrapy.utils.project import get_project_settings

settings = get_project_settings()
settings.setdict(json.loads(sys.argv[1]), priority="cmdline")
configure_logging(settings)


async def main():
    runner = AsyncCrawlerRunner(settings)
    for job, urls in json.loads(sys.argv[2]).items():
        runner.crawl("batch", urls=urls, _job=job)
    await runner.join()


# A reactor unless the settings say otherwise (Scrapy before 2.15 has no such setting).
if settings.getbool("TWISTED_REACTOR_ENABLED", True):
    from scrapy.utils.reactor import install_reactor

    install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")
    from twisted.internet import reactor
    from scrapy.utils.defer import deferred_from_coro

    reactor.callWhenRunning(
        lambda: deferred_from_coro(main()).addBoth(lambda _: reactor.stop())
    )
    reactor.run()
else:
    asyncio.run(main())
"""

# Scrapy's Deferred-based runner in a user's program, on its own reactor.
DEFERRED_RUNNER_PROGRAM = """
import json, sys
from scrapy.utils.reactor import install_reactor

install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")
from scrapy.crawler import CrawlerRunner
from scrapy.utils.log import configure_logging
from scrapy.utils.project import get_project_settings
from twisted.internet import reactor

settings = get_project_settings()
settings.setdict(json.loads(sys.argv[1]), priority="cmdline")
configure_logging(settings)
runner = CrawlerRunner(settings)
for job, urls in json.loads(sys.argv[2]).items():
    runner.crawl("batch", urls=urls, _job=job)
runner.join().addBoth(lambda _: reactor.stop())
reactor.run()
"""


def run_program(
    source: str, tmp_path: Path, mode: dict[str, str], jobs: dict[str, str], *more: str
) -> tuple[Process, Path]:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    db = tmp_path / "jobs.db"
    settings = {
        **TEST_SETTINGS,
        **mode,
        "JOBSTATUS_DB": str(db),
        "JOBSTATUS_INTERVAL": "0.2",
        "RETRY_ENABLED": "False",
    }
    command = [sys.executable, str(script), json.dumps(settings), json.dumps(jobs), *more]
    process = Process(command, ROOT, tmp_path / "program.log", env={"PYTHONPATH": str(ROOT)})
    return process, db


def ctrl_c_twice(process: Any, db: Path) -> None:
    """Ctrl-C, then, once every job is cancelling, Ctrl-C again (forced)."""
    process.ctrl_c()
    wait_for(
        lambda: {d["status"] for d in documents(db).values()} == {"cancelling"},
        what="every job cancelling",
    )
    process.ctrl_c()


def all_running(db: Path, jobs: dict[str, str], pages: int = 1) -> bool:
    docs = documents(db)
    return set(docs) == set(jobs) and all(
        d["status"] == "running" and d["total_pages_crawled"] >= pages for d in docs.values()
    )


def test_three_crawls_in_one_process_are_three_jobs(tmp_path, site, reactor_mode, processes):
    jobs = {f"job{i}": f"{site}/sample/apple?n={i},{site}/sample/fig?n={i}" for i in range(3)}
    process, db = run_program(THREE_CRAWLS, tmp_path, reactor_mode, jobs)
    processes.append(process)
    assert process.wait(60) == 0
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "completed")
    assert all(d["total_pages_crawled"] == 2 for d in docs.values())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_cancels_every_job_of_the_process_at_once(
    tmp_path, site, reactor_mode, processes, signum
):
    jobs = {f"job{i}": slow_urls(site, PAGES, 0.5, tag=f"{i}-") for i in range(3)}
    process, db = run_program(THREE_CRAWLS, tmp_path, reactor_mode, jobs)
    processes.append(process)
    wait_for(lambda: all_running(db, jobs, pages=2), what="three jobs crawling")
    process.ctrl_c(signum)
    # The crawls would run on for seconds without the signal.
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    for doc in docs.values():
        assert not doc["is_active"] and doc["close_reason"] == "shutdown"
        cancel = [e for e in doc["history"] if e["step"] == "cancel requested"]
        assert [e["details"] for e in cancel] == ["by signal"]
        assert doc["total_pages_crawled"] < PAGES


def test_ctrl_c_cancels_every_job_of_a_crawler_process_with_its_reactor(tmp_path, site, processes):
    # Scrapy's Deferred-based process: the crawls start before its reactor runs.
    jobs = {f"job{i}": slow_urls(site, PAGES, 0.5, tag=f"{i}-") for i in range(3)}
    process, db = run_program(THREE_CRAWLS, tmp_path, {}, jobs, "CrawlerProcess")
    processes.append(process)
    wait_for(lambda: all_running(db, jobs, pages=2), what="three jobs crawling")
    process.ctrl_c()
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    assert "Traceback" not in process.log_text


def test_a_second_ctrl_c_forces_every_job_of_the_process(tmp_path, site, reactor_mode, processes):
    # Each crawl has requests that would hang for a minute in flight.
    jobs = {
        f"job{i}": f"{site}/sample/apple?n={i}," + slow_urls(site, 2, 60, f"{i}-") for i in range(3)
    }
    process, db = run_program(THREE_CRAWLS, tmp_path, reactor_mode, jobs)
    processes.append(process)
    wait_for(lambda: all_running(db, jobs), what="three jobs crawling")
    ctrl_c_twice(process, db)
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    for doc in docs.values():
        assert any(w.startswith("forced stop") for w in doc["warnings"]), doc["warnings"]
        assert doc["total_documents_found"] == 1


def test_a_second_ctrl_c_of_crawls_with_slow_pages_logs_no_error(
    tmp_path, site, reactor_mode, processes
):
    # Sixteen slow pages in flight per crawl, most of them queued in Scrapy's
    # download slot: every one is dropped while its spider is open.
    jobs = {f"job{i}": slow_urls(site, 30, 5, tag=f"{i}-") for i in range(3)}
    mode = {**reactor_mode, "CONCURRENT_REQUESTS": "16", "CONCURRENT_REQUESTS_PER_DOMAIN": "4"}
    process, db = run_program(THREE_CRAWLS, tmp_path, mode, jobs)
    processes.append(process)
    wait_for(
        lambda: (
            (docs := documents(db)).keys() == jobs.keys()
            and all(d["requests_in_flight"] == 16 for d in docs.values())
        ),
        what="three crawls with sixteen requests in flight",
    )
    ctrl_c_twice(process, db)
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    for doc in docs.values():
        assert any(w.startswith("forced stop") for w in doc["warnings"]), doc["warnings"]
        assert doc["responses_failed"] == 0 and doc["error_count"] == 0
    log = process.log_text
    assert "Traceback" not in log and not re.search(r"\] ERROR: ", log), log[-3000:]
    assert log.count("Forced stop: 16 in-flight requests dropped") == 3


def test_a_third_ctrl_c_exits_at_once_and_leaves_no_job_active(
    tmp_path, site, reactor_mode, processes
):
    jobs = {
        f"job{i}": f"{site}/sample/apple?n={i}," + slow_urls(site, 2, 60, f"{i}-") for i in range(3)
    }
    process, db = run_program(THREE_CRAWLS_SLOW_TO_CLOSE, tmp_path, reactor_mode, jobs)
    processes.append(process)
    wait_for(lambda: all_running(db, jobs), what="three jobs crawling")
    ctrl_c_twice(process, db)
    # The forced stop dropped the requests; the pipelines hold the close.
    wait_for(
        lambda: process.log_text.count("The pipeline closes slowly") == 3,
        what="three pipelines closing",
    )
    process.ctrl_c()
    assert process.wait(20) == -signal.SIGINT, process.log_text[-3000:]
    log = process.log_text
    assert "Received SIGINT again: exiting at once" in log
    assert "Traceback" not in log and not re.search(r"\] ERROR: ", log), log[-3000:]
    listed = scrapy("jobs", "--json", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    statuses = {job["job_id"]: job["status"] for job in json.loads(listed.stdout)["jobs"]}
    assert statuses == dict.fromkeys(jobs, "cancelled")
    for doc in documents(db).values():
        assert not doc["is_active"] and doc["completion_reason"] == "cancelled"
        assert any(w.startswith("forced stop") for w in doc["warnings"]), doc["warnings"]
        steps = [e["step"] for e in doc["history"]]
        assert steps.count("forced stop") == 1 and "exited" in steps
        assert doc["total_documents_found"] == 1


def test_ctrl_c_cancels_the_jobs_of_a_runner_in_a_users_program(
    tmp_path, site, reactor_mode, processes
):
    jobs = {f"job{i}": slow_urls(site, PAGES, 0.5, tag=f"{i}-") for i in range(2)}
    process, db = run_program(RUNNER_PROGRAM, tmp_path, reactor_mode, jobs)
    processes.append(process)
    wait_for(lambda: all_running(db, jobs, pages=2), what="two jobs crawling")
    process.ctrl_c()
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    assert "Traceback" not in process.log_text


def test_ctrl_c_cancels_the_jobs_of_a_deferred_runner_in_a_users_program(tmp_path, site, processes):
    jobs = {f"job{i}": slow_urls(site, PAGES, 0.5, tag=f"{i}-") for i in range(2)}
    process, db = run_program(DEFERRED_RUNNER_PROGRAM, tmp_path, {}, jobs)
    processes.append(process)
    wait_for(lambda: all_running(db, jobs, pages=2), what="two jobs crawling")
    process.ctrl_c()
    assert process.wait(20) == 0, process.log_text[-3000:]
    docs = documents(db)
    assert {job: d["status"] for job, d in docs.items()} == dict.fromkeys(jobs, "cancelled")
    assert "Traceback" not in process.log_text


def test_a_forced_pause_keeps_the_dropped_requests_for_the_next_run(
    tmp_path, site, reactor_mode, processes
):
    # Two pages at a time, each taking 10 s: the pause's grace ends first,
    # however long the pause command takes to start on a busy machine.
    urls = slow_urls(site, 6, 10)
    db, feed = tmp_path / "jobs.db", tmp_path / "items.jl"
    settings = {
        **reactor_mode,
        "JOBDIR": str(tmp_path / "jobdir"),
        "CONCURRENT_REQUESTS": "2",
        "JOBSTATUS_INTERVAL": "0.2",
        "JOBSTATUS_CANCEL_GRACE": "0.5",
        "RETRY_ENABLED": "False",
    }
    args = {"urls": urls, "_job": "job1"}

    def crawl(name: str, **more: str) -> Process:
        # -o appends: the second run's items follow the first's.
        command = crawl_command("batch", db, args=args, settings={**settings, **more})
        command += ["-o", f"{feed}:jsonlines"]
        process = Process(command, ROOT, tmp_path / f"{name}.log", {"PYTHONPATH": str(ROOT)})
        processes.append(process)
        return process

    first = crawl("first")
    wait_for(
        lambda: (d := documents(db).get("job1")) and d["requests_in_flight"] == 2,
        what="two requests in flight",
    )
    assert scrapy("jobpause", "job1", "--db", str(db)).returncode == 0
    assert first.wait(30) == 0, first.log_text[-3000:]
    paused = documents(db)["job1"]
    assert paused["status"] == "paused"
    assert any(w.startswith("forced stop") for w in paused["warnings"])
    assert "Traceback" not in first.log_text
    # The dropped pages and the others, all at once.
    second = crawl("second", CONCURRENT_REQUESTS="6")
    assert second.wait(60) == 0, second.log_text[-3000:]
    done = documents(db)["job1"]
    assert (done["status"], done["completion_reason"]) == ("completed", "done")
    # Every page once: the dropped ones were crawled by the second run.
    assert sorted(item["url"] for item in read_lines(feed)) == sorted(urls.split(","))


# -- monitoring that cannot start never costs the crawl -------------------------


def test_a_failure_while_the_job_opens_leaves_the_crawl_running_unmonitored(
    tmp_path, site, reactor_mode
):
    # The JOBDIR's marker cannot be written: a directory stands where its
    # temporary file goes.
    jobdir = tmp_path / "jobdir"
    (jobdir / ".jobstatus.json.tmp").mkdir(parents=True)
    urls = ",".join(f"{site}/sample/{page}" for page in ("apple", "banana", "cherry"))
    log, feed = tmp_path / "crawl.log", tmp_path / "items.jl"
    code = run_crawl(
        "batch",
        tmp_path / "jobs.db",
        log,
        output=feed,
        args={"urls": urls, "_job": "job1"},
        settings={**reactor_mode, "JOBDIR": str(jobdir), "JOBSTATUS_INTERVAL": "0.2"},
    )
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert sorted(item["url"] for item in read_lines(feed)) == sorted(urls.split(","))
    (error,) = [line for line in text.splitlines() if "] ERROR:" in line]
    assert "could not start" in error and "unmonitored" in error
    assert "Traceback" not in text
