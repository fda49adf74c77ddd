"""Pause and resume of real ``scrapy crawl`` processes with a JOBDIR: Ctrl-C
or a pause request through the store pauses the job, running the same
command again goes on with the same job where it stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scrapy_jobstatus import open_store
from scrapy_jobstatus._store import JobFilter
from tests.helpers import ROOT, crawl_command, read_lines, scrapy, wait_for
from tests.test_crawl_lifecycle import STARTED, no_crawl_left_running  # noqa: F401 (autouse)

# The documents spider on a tree of 61 pages, each linking 2 documents of
# its own (and one every page links): 122 documents, in about 7 s.
PAGES = 61
DOCUMENTS = 122
SETTINGS = {"CONCURRENT_REQUESTS": "2", "JOBSTATUS_INTERVAL": "0.2", "RETRY_ENABLED": "False"}


@dataclass
class Crawl:
    """``scrapy crawl documents`` as a user runs it, again and again: the
    same store, JOBDIR and appended feed unless told otherwise."""

    site: str
    workdir: Path
    jobdir: bool = True
    feed_name: str = "items.jl"
    extra: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def db(self) -> Path:
        return self.workdir / "jobs.db"

    @property
    def jobdir_path(self) -> Path:
        return self.workdir / "jobdir"

    @property
    def feed(self) -> Path:
        return self.workdir / self.feed_name

    @property
    def log(self) -> Path:
        return self.workdir / f"crawl-{self.runs}.log"

    def command(self) -> list[str]:
        settings = {**SETTINGS, **self.extra}
        if self.jobdir:
            settings["JOBDIR"] = str(self.jobdir_path)
        url = f"{self.site}/pages/0?links=3&max=60&docs=2&delay=0.2"
        command = crawl_command("documents", self.db, args={"url": url}, settings=settings)
        # -o appends to the file, as a resumed crawl needs (-O would overwrite).
        return [*command, "-o", f"{self.feed}:jsonlines"]

    def start(self) -> Crawl:
        self.runs += 1
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        STARTED.append(self.process)
        return self

    def wait(self, timeout: float = 90) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the crawl still runs after {timeout} s") from None

    def run(self, timeout: float = 90) -> int:
        return self.start().wait(timeout)

    @property
    def log_text(self) -> str:
        return self.log.read_text()

    @property
    def marker(self) -> dict[str, Any]:
        path = self.jobdir_path / "jobstatus.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def items(self) -> list[dict[str, Any]]:
        return read_lines(self.feed)

    def job_ids(self) -> list[str]:
        """The store's jobs, newest first."""
        if not self.db.exists():
            return []
        store = open_store(self.db)
        try:
            return [state.job_id for state in store.list_jobs(JobFilter(), limit=100).jobs]
        finally:
            store.close()

    def doc(self, job_id: str) -> dict[str, Any] | None:
        store = open_store(self.db)
        try:
            return store.document(job_id, errors_kept=1000)
        finally:
            store.close()

    def status(self, job_id: str) -> dict[str, Any]:
        """``scrapy jobstatus JOB --json``: the job as a user reads it."""
        result = scrapy("jobstatus", job_id, "--db", str(self.db), "--json")
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def started_job(self, pages: int = 5) -> str:
        """The id of the job this run started, once it crawled ``pages`` pages."""

        def crawled() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the crawl ended: {self.log_text[-3000:]}")
            ids = self.job_ids()
            doc = self.doc(ids[0]) if ids else None
            return doc["job_id"] if doc and doc["total_pages_crawled"] >= pages else None

        return wait_for(crawled, timeout=30, interval=0.05, what=f"{pages} pages crawled")


def urls(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["url"] for item in items)


def steps(doc: dict[str, Any]) -> list[str]:
    return [event["step"] for event in doc["history"]]


@pytest.fixture(scope="module")
def uninterrupted(site: str, tmp_path_factory: pytest.TempPathFactory) -> Crawl:
    """One crawl run to its end with a JOBDIR: the documents every run must find."""
    crawl = Crawl(site, tmp_path_factory.mktemp("uninterrupted"))
    assert crawl.run() == 0, crawl.log_text[-3000:]
    return crawl


@dataclass
class Cycle:
    """A crawl paused by Ctrl-C, and the same command run again."""

    crawl: Crawl
    job_id: str
    paused_code: int
    paused: dict[str, Any]
    paused_marker: dict[str, Any]
    paused_items: list[dict[str, Any]]
    resumed_code: int
    done: dict[str, Any]
    ids_after: list[str]


@pytest.fixture(scope="module")
def ctrl_c(site: str, tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    crawl = Crawl(site, tmp_path_factory.mktemp("ctrl-c")).start()
    job_id = crawl.started_job(pages=5)
    assert crawl.process is not None
    crawl.process.send_signal(signal.SIGINT)
    paused_code = crawl.wait()
    paused = crawl.status(job_id)
    marker, items = crawl.marker, crawl.items
    resumed_code = crawl.run()
    return Cycle(
        crawl=crawl,
        job_id=job_id,
        paused_code=paused_code,
        paused=paused,
        paused_marker=marker,
        paused_items=items,
        resumed_code=resumed_code,
        done=crawl.status(job_id),
        ids_after=crawl.job_ids(),
    )


def test_an_uninterrupted_crawl_finds_every_document_once(uninterrupted: Crawl) -> None:
    (job_id,) = uninterrupted.job_ids()
    doc = uninterrupted.doc(job_id)
    assert doc["status"] == "completed" and doc["pausable"] is True
    assert doc["total_pages_crawled"] == PAGES
    assert len(uninterrupted.items) == len(set(urls(uninterrupted.items))) == DOCUMENTS
    assert uninterrupted.marker == {"job_id": job_id, "resumable": False}


def test_ctrl_c_with_a_jobdir_pauses_the_job(ctrl_c: Cycle) -> None:
    assert ctrl_c.paused_code == 0, ctrl_c.crawl.log.read_text()[-3000:]
    doc = ctrl_c.paused
    assert doc["status"] == "paused"
    assert doc["is_active"] is False and doc["completion_reason"] is None
    assert doc["completed_at"] is None and doc["close_reason"] == "paused"
    assert doc["pausable"] is True
    assert ctrl_c.paused_marker == {"job_id": ctrl_c.job_id, "resumable": True}
    # Stopped part way, with what it found so far written.
    assert 5 <= doc["total_pages_crawled"] < PAGES
    assert 0 < doc["total_documents_found"] == len(ctrl_c.paused_items) < DOCUMENTS
    pause = doc["history"][steps(doc).index("pause requested")]
    assert (pause["status"], pause["details"]) == ("pausing", "by signal")
    assert steps(doc)[-3:] == ["closing", "feeds closed", "paused"]
    assert doc["history"][-1]["status"] == "paused"
    assert [(f["items"], f["attempt"]) for f in doc["feeds"]] == [(len(ctrl_c.paused_items), 1)]


def test_running_the_same_command_again_completes_the_same_job(
    ctrl_c: Cycle, uninterrupted: Crawl
) -> None:
    assert ctrl_c.resumed_code == 0, ctrl_c.crawl.log_text[-3000:]
    doc = ctrl_c.done
    assert doc["job_id"] == ctrl_c.job_id and ctrl_c.ids_after == [ctrl_c.job_id]
    assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
    # Every document once: the same as a crawl never interrupted.
    items = ctrl_c.crawl.items
    assert urls(items) == urls(uninterrupted.items)
    assert len(items) == len(set(urls(items))) == DOCUMENTS
    assert doc["total_documents_found"] == len(items)
    assert doc["total_pages_crawled"] == PAGES
    assert doc["progress"] == 100.0 and doc["progress"] >= ctrl_c.paused["progress"]
    assert doc["attempt"] == 1 and len(doc["attempts"]) == 1
    assert doc["started_at"] == ctrl_c.paused["started_at"]
    history = steps(doc)
    assert history.index("paused") < history.index("resumed") < history.index("finished")
    resumed = doc["history"][history.index("resumed")]
    paused = ctrl_c.paused
    assert resumed["details"] == (
        f"from its JOBDIR, after {paused['total_pages_crawled']} pages and "
        f"{paused['total_documents_found']} items"
    )
    # The history of the first run is kept, the second's follows it.
    assert doc["history"][: len(paused["history"])] == paused["history"]
    assert history.count("opened") == 2
    # One feed entry per run, appended to the same file.
    feed = str(ctrl_c.crawl.feed)
    assert [f["uri"] for f in doc["feeds"]] == [feed, feed]
    assert sum(f["items"] for f in doc["feeds"]) == DOCUMENTS
    assert ctrl_c.crawl.marker == {"job_id": ctrl_c.job_id, "resumable": False}


def test_the_attempt_of_a_paused_and_resumed_crawl_began_with_its_first_run(
    ctrl_c: Cycle,
) -> None:
    # One attempt over both runs: it started when the job did.
    assert ctrl_c.paused["attempts"][0]["started_at"] == ctrl_c.paused["started_at"]
    assert ctrl_c.done["attempts"][0]["started_at"] == ctrl_c.done["started_at"]


def test_a_store_pause_request_pauses_and_jobresume_queues_it_to_go_on(
    site: str, tmp_path: Path, uninterrupted: Crawl, reactor_mode: dict[str, str]
) -> None:
    crawl = Crawl(site, tmp_path, extra=reactor_mode).start()
    job_id = crawl.started_job(pages=5)
    requested = scrapy("jobpause", job_id, "--db", str(crawl.db))
    assert requested.returncode == 0, requested.stderr
    assert "pause requested" in requested.stdout
    assert crawl.wait() == 0
    paused = crawl.status(job_id)
    assert paused["status"] == "paused", paused["history"]
    assert crawl.marker == {"job_id": job_id, "resumable": True}
    pause = paused["history"][steps(paused).index("pause requested")]
    assert (pause["status"], pause["details"]) == ("pausing", "by store")
    assert steps(paused)[-3:] == ["closing", "feeds closed", "paused"]
    assert paused["total_pages_crawled"] < PAGES

    again = scrapy("jobpause", job_id, "--db", str(crawl.db))
    assert again.returncode == 0 and "paused already" in again.stdout

    resumed = scrapy("jobresume", job_id, "--db", str(crawl.db))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "status pending" in resumed.stdout
    assert crawl.status(job_id)["status"] == "pending"

    assert crawl.run() == 0
    done = crawl.status(job_id)
    assert (done["status"], done["completion_reason"]) == ("completed", "done")
    assert crawl.job_ids() == [job_id]
    assert urls(crawl.items) == urls(uninterrupted.items)
    assert done["total_documents_found"] == len(crawl.items) == DOCUMENTS
    assert done["total_pages_crawled"] == PAGES
    history = steps(done)
    assert (
        history.index("paused")
        < history.index("resume requested")
        < history.index("resumed")
        < history.index("finished")
    )


def test_without_a_jobdir_a_pause_is_refused_and_ctrl_c_cancels(site: str, tmp_path: Path) -> None:
    crawl = Crawl(site, tmp_path, jobdir=False).start()
    job_id = crawl.started_job(pages=3)
    refused = scrapy("jobpause", job_id, "--db", str(crawl.db))
    assert refused.returncode == 1
    assert f"job '{job_id}' runs without a JOBDIR and cannot be paused" in refused.stdout
    assert "JOBSTATUS_PAUSABLE" in refused.stdout
    running = crawl.doc(job_id)
    assert running["status"] == "running" and running["pausable"] is False
    assert "pause requested" not in steps(running)

    assert crawl.process is not None
    crawl.process.send_signal(signal.SIGINT)
    assert crawl.wait() == 0
    doc = crawl.status(job_id)
    assert (doc["status"], doc["completion_reason"]) == ("cancelled", "cancelled")
    assert "pause requested" not in steps(doc) and "paused" not in steps(doc)
    assert doc["total_pages_crawled"] < PAGES
    resume = scrapy("jobresume", job_id, "--db", str(crawl.db))
    assert resume.returncode == 1
    assert f"job '{job_id}' is cancelled: only a paused job can be resumed" in resume.stdout


def test_pause_and_resume_of_an_unknown_or_ended_job_are_refused(uninterrupted: Crawl) -> None:
    db = str(uninterrupted.db)
    for command in ("jobpause", "jobresume"):
        unknown = scrapy(command, "nope", "--db", db)
        assert (unknown.returncode, unknown.stderr) == (1, "error: unknown job: nope\n")
    (job_id,) = uninterrupted.job_ids()
    pause = scrapy("jobpause", job_id, "--db", db)
    assert pause.returncode == 1
    assert f"job '{job_id}' is completed: only a pending or running job can be paused" in (
        pause.stdout
    )
    resume = scrapy("jobresume", job_id, "--db", db)
    assert resume.returncode == 1
    assert "only a paused job can be resumed" in resume.stdout
    assert uninterrupted.doc(job_id)["status"] == "completed"


def test_a_jobdir_whose_job_completed_starts_a_new_job_from_the_start(
    uninterrupted: Crawl, tmp_path: Path
) -> None:
    # A copy of the ended crawl's store and JOBDIR: the module's stays as it is.
    shutil.copytree(uninterrupted.workdir, tmp_path, dirs_exist_ok=True)
    crawl = Crawl(uninterrupted.site, tmp_path, feed_name="again.jl")
    (first,) = crawl.job_ids()
    assert crawl.run() == 0, crawl.log_text[-3000:]
    second, older = crawl.job_ids()
    assert older == first and second != first
    assert f"Job id: {second}" in crawl.log_text
    doc = crawl.doc(second)
    assert doc["status"] == "completed" and "resumed" not in steps(doc)
    assert doc["total_pages_crawled"] == PAGES
    assert urls(crawl.items) == urls(uninterrupted.items)
    assert crawl.marker == {"job_id": second, "resumable": False}
    assert crawl.doc(first) == uninterrupted.doc(first)


def test_a_crawl_killed_with_a_jobdir_starts_over_when_run_again(
    site: str, tmp_path: Path, uninterrupted: Crawl
) -> None:
    killed = Crawl(site, tmp_path, feed_name="killed.jl").start()
    first = killed.started_job(pages=5)
    assert killed.marker == {"job_id": first, "resumable": False}
    assert killed.process is not None
    killed.process.kill()
    killed.wait()
    partial = killed.doc(first)["total_pages_crawled"]

    crawl = Crawl(site, tmp_path, feed_name="again.jl", runs=killed.runs)
    assert crawl.run() == 0, crawl.log_text[-3000:]
    # The killed run's job is still recorded running: the new run is a new job.
    job_id, older = crawl.job_ids()
    assert older == first and job_id != first
    assert f"Job id: {job_id}" in crawl.log_text
    doc = crawl.doc(job_id)
    assert (doc["status"], doc["completion_reason"]) == ("completed", "done")
    # Nothing of the killed run's JOBDIR was gone on from: every page was
    # crawled again and every document found again.
    assert "resumed" not in steps(doc)
    assert doc["total_pages_crawled"] == PAGES > partial
    assert urls(crawl.items) == urls(uninterrupted.items)
    assert doc["total_documents_found"] == len(crawl.items) == DOCUMENTS
    assert crawl.marker == {"job_id": job_id, "resumable": False}
    # The killed run's job is reported failed by the next reader, its
    # heartbeat stale and its process gone.
    failed = wait_for(
        lambda: (d := crawl.status(first))["status"] == "failed" and d,
        timeout=30,
        interval=0.5,
        what="the killed run's job to be reported failed",
    )
    assert f"pid {killed.process.pid}" in failed["error_message"]
    assert failed["total_pages_crawled"] == partial


def test_a_second_crawl_on_a_jobdir_in_use_fails_its_job_and_leaves_the_first_alone(
    site: str, tmp_path: Path
) -> None:
    first = Crawl(site, tmp_path).start()
    job_id = first.started_job(pages=3)
    # The first crawl holds the JOBDIR for some 5 s more; the second waits 1 s.
    second = Crawl(site, tmp_path, feed_name="second.jl", extra={"JOBSTATUS_JOBDIR_WAIT": "1"})
    assert second.run() == 0
    assert first.wait() == 0
    done = first.status(job_id)
    assert done["status"] == "completed" and done["total_documents_found"] == DOCUMENTS
    assert urls(first.items) == urls_once(first.items) and len(first.items) == DOCUMENTS
    # The second crawl's own job failed, naming the JOBDIR; it crawled nothing.
    assert not second.items
    (other,) = [j for j in first.job_ids() if j != job_id]
    failed = first.status(other)
    assert failed["status"] == "failed" and failed["total_pages_crawled"] == 0
    assert f"the JOBDIR {first.jobdir_path} is used by another crawl" in failed["error_message"]


def urls_once(items: list[dict[str, Any]]) -> list[str]:
    return sorted({item["url"] for item in items})
