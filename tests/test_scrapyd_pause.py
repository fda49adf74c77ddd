"""End to end: pausing and resuming jobs on real Scrapyd nodes, with
jobpause.json and jobresume.json, across a node's restart and its SIGTERM,
and with the cancels that end a paused or pausable job."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scrapy_jobstatus import open_store
from scrapy_jobstatus._jobdir import jobdir_name
from tests.helpers import poll_until, read_lines, wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique

# 61 pages, 122 documents, two pages at a time: about 7 s uninterrupted.
DOCUMENTS = 122
START = "/pages/0?links=3&max=60&docs=2&delay=0.2"
DOCUMENT_SETTINGS = {"CONCURRENT_REQUESTS": 2}
# Documents found before a pause is asked: well before the end of the crawl.
PAUSE_AFTER = 10
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    # Two slots: a job scheduled behind two running ones stays pending.
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-pause"),
        options={"max_proc": "2", "poll_interval": "0.5", "items_dir": "items"},
        jobstatus={"pausable": "on"},
    )


@pytest.fixture(scope="module")
def plain_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """A node whose jobs are not pausable unless they say so."""
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-plain"),
        options={"poll_interval": "0.5", "items_dir": "items"},
    )


@pytest.fixture(scope="module")
def brief_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """A node that waits 1 s for its crawls to pause when it stops, and keeps
    the files of one ended job of each spider besides the newest."""
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-brief"),
        options={"poll_interval": "0.5", "items_dir": "items", "jobs_to_keep": "1"},
        jobstatus={"pausable": "on", "shutdown_wait": "1"},
    )


class Reference:
    """The documents job run once without interruption on the module's
    node; scheduled as soon as a test asks for it, read once it is done."""

    def __init__(self, node: ScrapydNode, site: str):
        self.node = node
        self.job = schedule_documents(node, site, prefix="reference")
        self._urls: list[str] | None = None

    def urls(self) -> list[str]:
        if self._urls is None:
            done = self.node.wait_status(self.job, *TERMINAL, timeout=90)
            assert done["status"] == "completed", done
            assert [e["step"] for e in done["history"]].count("paused") == 0
            self._urls = document_urls(self.node, self.job)
            assert len(self._urls) == DOCUMENTS == done["total_documents_found"]
        return self._urls


@pytest.fixture(scope="module")
def reference(node: ScrapydNode, site: str) -> Reference:
    return Reference(node, site)


# -- helpers ----------------------------------------------------------------------


def schedule_documents(node: ScrapydNode, site: str, *, prefix: str, **settings: Any) -> str:
    job = unique(prefix)
    answer = node.schedule(
        "documents", job=job, url=site + START, settings={**DOCUMENT_SETTINGS, **settings}
    )
    assert answer.json()["status"] == "ok", answer.body
    return job


def items_file(node: ScrapydNode, job: str, spider: str = "documents") -> Path:
    """Scrapyd's items file of a job (its items_dir feed, jsonlines)."""
    return node.workdir / "items" / PROJECT / spider / f"{job}.jl"


def log_file(node: ScrapydNode, job: str, spider: str = "documents") -> Path:
    return node.workdir / "logs" / PROJECT / spider / f"{job}.log"


def document_urls(node: ScrapydNode, job: str) -> list[str]:
    return [item["url"] for item in read_lines(items_file(node, job))]


def assert_same_documents(urls: list[str], reference: list[str]) -> None:
    duplicates = [url for url, n in Counter(urls).items() if n > 1]
    assert duplicates == [], f"documents reported twice: {duplicates}"
    assert set(urls) == set(reference)
    assert len(urls) == len(reference)


def assert_completes_with(
    node: ScrapydNode, job: str, expected: list[str], timeout: float = 90
) -> dict[str, Any]:
    """The job completes with the expected documents in its items file, each
    once, and counts them; its last status document."""
    done = node.wait_status(job, *TERMINAL, timeout=timeout)
    assert done["status"] == "completed", done
    urls = document_urls(node, job)
    assert_same_documents(urls, expected)
    assert done["total_documents_found"] == len(urls)
    return done


def pause(node: ScrapydNode, job: str, **params: str):
    return node.post("jobpause.json", {"job": job, **params})


def resume(node: ScrapydNode, job: str, **params: str):
    return node.post("jobresume.json", {"job": job, **params})


def readings_until(
    node: ScrapydNode, job: str, done: Callable[[dict[str, Any]], Any], timeout: float, what: str
) -> list[dict[str, Any]]:
    return poll_until(lambda: node.status(job), done, timeout=timeout, interval=0.1, what=what)


def run_until_found(node: ScrapydNode, job: str, count: int = PAUSE_AFTER) -> list[dict[str, Any]]:
    """The job's documents until it is running with ``count`` documents found."""

    def found(document: dict[str, Any]) -> bool:
        assert document["status"] in ("pending", "running"), document["status"]
        return document["status"] == "running" and document["total_documents_found"] >= count

    return readings_until(node, job, found, 60, f"job {job} to find {count} documents")


def pause_running(node: ScrapydNode, job: str) -> list[dict[str, Any]]:
    """Pause a running job: 202 pausing, then paused; the readings."""
    answer = pause(node, job)
    assert answer.code == 202, answer.body
    body = answer.json()
    assert body["status"] == "ok" and body["node_name"]
    assert body["prevstate"] == "running"
    assert body["job"]["status"] == "pausing" and body["job"]["is_active"] is True
    return readings_until(
        node, job, lambda d: d["status"] not in ("running", "pausing"), 60, f"{job} to pause"
    )


def wait_crawl_exit(node: ScrapydNode, job: str) -> None:
    """A paused crawl writes its status, then exits; then the job is neither
    queued, running nor finished for Scrapyd. (Resumed before, the job may be
    ended by the paused crawl's exit: see the test of that.)"""
    wait_for(lambda: node.scrapyd_state(job) is None, what=f"the crawl of {job} to exit")


def steps(document: dict[str, Any]) -> list[str]:
    return [event["step"] for event in document["history"]]


def assert_paused_then_resumed(document: dict[str, Any]) -> None:
    history = steps(document)
    assert "paused" in history and "resumed" in history, history
    assert history.index("paused") < history.index("resumed"), history


def never_down(readings: list[dict[str, Any]], field: str) -> None:
    values = [r[field] for r in readings if r[field] is not None]
    assert values, f"no {field} read"
    assert all(a <= b for a, b in zip(values, values[1:], strict=False)), values


def jobdir(node: ScrapydNode, job: str) -> Path:
    return node.workdir / "jobdirs" / jobdir_name(job)


def sigterm(node: ScrapydNode) -> None:
    """SIGTERM to scrapyd, and its exit (it waits for its crawls to pause)."""
    assert node.process is not None
    process, node.process = node.process, None
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("scrapyd did not exit within 60 s of its SIGTERM") from None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def has_exited(pid: int) -> bool:
    """The process is gone, or a zombie: a crawl left behind by a stopped
    scrapyd has no parent to reap it but the system's."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def hold(pid: int) -> bool:
    """Stop a process (SIGSTOP): whether it is held, rather than already
    gone or exiting."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False

    def state() -> str:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return "gone"

    return (
        wait_for(lambda: (s := state()) in ("T", "Z", "gone") and s, what=f"process {pid} to stop")
        == "T"
    )


def stored(node: ScrapydNode, job: str) -> tuple[str, str | None, list[str]]:
    """The job's status, node and history steps, read from the node's store
    (for when scrapyd is down)."""
    store = open_store(str(node.db), readonly=True)
    try:
        state = store.get(job)
        assert state is not None, job
        return str(state.status), state.node, [event.step for event in store.history(job)]
    finally:
        store.close()


def slow_job(
    node: ScrapydNode, site: str, *, count: int, delay: float, prefix: str, **settings: Any
) -> str:
    job = unique(prefix)
    answer = node.schedule(
        job=job,
        urls=slow_urls(site, count, delay),
        settings={"CONCURRENT_REQUESTS": 1, **settings},
    )
    assert answer.json()["status"] == "ok", answer.body
    return job


def force_end(node: ScrapydNode, job: str) -> None:
    node.post("jobcancel.json", {"job": job, "force": "1"})
    node.wait_status(job, *TERMINAL)


# -- pause and resume -------------------------------------------------------------


def test_paused_job_resumes_with_the_same_documents_as_an_uninterrupted_run(
    node: ScrapydNode, site: str, reference: Reference
) -> None:
    job = schedule_documents(node, site, prefix="paused")
    readings = run_until_found(node, job)
    readings += pause_running(node, job)
    paused = readings[-1]
    assert paused["status"] == "paused", paused
    assert paused["is_active"] is False and paused["completion_reason"] is None
    assert paused["pausable"] is True
    assert 0 < paused["total_documents_found"] < DOCUMENTS
    wait_crawl_exit(node, job)
    assert len(document_urls(node, job)) == paused["total_documents_found"]

    again = pause(node, job)
    assert again.code == 200, again.body
    assert again.json()["prevstate"] == "paused"
    assert again.json()["job"]["status"] == "paused"

    resumed = resume(node, job)
    assert resumed.code == 200, resumed.body
    assert resumed.json()["status"] == "ok" and resumed.json()["prevstate"] == "paused"
    assert resumed.json()["job"]["status"] == "pending"

    readings += readings_until(
        node, job, lambda d: d["status"] in TERMINAL, 90, f"{job} to complete"
    )
    done = readings[-1]
    assert done["status"] == "completed", done
    never_down(readings, "progress")
    never_down(readings, "total_documents_found")
    never_down(readings, "total_pages_crawled")
    assert done["progress"] == 100

    urls = document_urls(node, job)
    assert_same_documents(urls, reference.urls())
    assert done["total_documents_found"] == len(urls) == DOCUMENTS
    assert_paused_then_resumed(done)
    history = steps(done)
    assert history.index("pause requested") < history.index("paused"), history

    feeds = done["feeds"]
    assert len(feeds) == 2, feeds
    assert all(f["uri"].endswith(f"{job}.jl") for f in feeds), feeds
    assert feeds[0]["items"] == paused["total_documents_found"]
    assert sum(f["items"] for f in feeds) == len(urls)
    wait_for(lambda: not jobdir(node, job).exists(), timeout=20, what="the JOBDIR to go")
    node.wait_idle()


def test_paused_job_resumes_after_the_node_restarts(
    node: ScrapydNode, site: str, reference: Reference
) -> None:
    expected = reference.urls()  # done before the node stops
    job = schedule_documents(node, site, prefix="restart")
    run_until_found(node, job)
    paused = pause_running(node, job)[-1]
    assert paused["status"] == "paused", paused

    node.stop(kill_crawls=False)
    node.start()
    assert node.status(job)["status"] == "paused"
    assert jobdir(node, job).is_dir()

    answer = resume(node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
    done = assert_completes_with(node, job, expected)
    assert_paused_then_resumed(done)
    node.wait_idle()


def test_sigterm_to_scrapyd_queues_its_pausable_job_again(
    node: ScrapydNode, site: str, reference: Reference
) -> None:
    expected = reference.urls()  # done before the node stops
    job = schedule_documents(node, site, prefix="sigterm")
    run_until_found(node, job)
    pid = node.crawl_pid(job)

    sigterm(node)
    assert not is_alive(pid), "the crawl outlived its node"
    store = open_store(str(node.db), readonly=True)
    try:
        state = store.get(job)
        history = [event.step for event in store.history(job)]
    finally:
        store.close()
    assert state is not None
    assert str(state.status) == "pending" and state.node is None, (state.status, state.node)
    assert 0 < state.total_documents_found < DOCUMENTS
    assert "queued again" in history, history
    assert history.index("paused") < history.index("queued again"), history

    node.start()
    done = assert_completes_with(node, job, expected)
    assert "resumed" in steps(done)
    node.wait_idle()


def test_crawl_left_pausing_by_a_node_that_stopped_waiting_is_queued_again(
    brief_node: ScrapydNode, site: str
) -> None:
    node = brief_node
    job = slow_job(node, site, count=3, delay=6, prefix="wait-out", JOBSTATUS_CANCEL_GRACE=60)
    readings_until(
        node,
        job,
        lambda d: d["status"] == "running" and d["requests_in_flight"] >= 1,
        30,
        f"the first request of {job}",
    )
    pid = node.crawl_pid(job)

    sigterm(node)
    # scrapyd gave up waiting (shutdown_wait = 1) while the request was in
    # flight: the crawl goes on pausing by itself.
    status, _, history = stored(node, job)
    assert status in ("running", "pausing") and "paused" not in history, (status, history)
    assert is_alive(pid), "the crawl died with its node"
    readings = poll_until(
        lambda: stored(node, job),
        lambda reading: reading[0] not in ("running", "pausing"),
        timeout=30,
        interval=0.1,
        what=f"{job} to pause after its node stopped",
    )
    assert all(status != "failed" for status, _, _ in readings), readings
    status, owner, history = readings[-1]
    assert (status, owner) == ("pending", None), readings[-1]
    assert history.index("paused") < history.index("queued again"), history
    wait_for(lambda: has_exited(pid), what=f"the paused crawl {pid} to exit")
    assert stored(node, job)[0] == "pending"

    node.start()
    done = node.wait_status(job, *TERMINAL, timeout=60)
    assert done["status"] == "completed", done
    assert done["attempt"] == 1 and "failed" not in steps(done), steps(done)
    assert "resumed" in steps(done)
    assert done["total_pages_crawled"] == 3, done
    urls = [item["url"] for item in read_lines(items_file(node, job, "batch"))]
    assert sorted(urls) == sorted(slow_urls(site, 3, 6).split(","))
    node.wait_idle()


def test_job_a_user_asked_to_pause_stays_paused_through_a_sigterm(
    node: ScrapydNode, site: str
) -> None:
    # The crawl reads the store every 5 s: the request waits when scrapyd stops.
    job = slow_job(node, site, count=6, delay=1, prefix="user-pause", JOBSTATUS_INTERVAL=5)
    node.wait_status(job, "running", timeout=30)
    pid = node.crawl_pid(job)
    answer = pause(node, job)
    assert answer.code == 202, answer.body
    sigterm(node)

    readings = poll_until(
        lambda: stored(node, job),
        lambda reading: reading[0] not in ("running", "pausing"),
        timeout=30,
        interval=0.1,
        what=f"{job} to pause",
    )
    status, _, history = readings[-1]
    assert status == "paused", readings[-1]
    assert "queued again" not in history, history
    wait_for(lambda: has_exited(pid), what=f"the paused crawl {pid} to exit")
    assert stored(node, job)[0] == "paused"

    node.start()
    # A job queued after it runs; the paused one waits for its resume.
    later = slow_job(node, site, count=1, delay=0.1, prefix="after-user-pause")
    assert node.wait_status(later, *TERMINAL)["status"] == "completed"
    still = node.status(job)
    assert still["status"] == "paused" and "resumed" not in steps(still), still

    answer = resume(node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
    done = node.wait_status(job, *TERMINAL)
    assert done["status"] == "completed", done
    assert_paused_then_resumed(done)
    assert done["total_pages_crawled"] == 6, done
    urls = [item["url"] for item in read_lines(items_file(node, job, "batch"))]
    assert sorted(urls) == sorted(slow_urls(site, 6, 1).split(","))
    node.wait_idle()


# -- the answers ------------------------------------------------------------------


def test_pending_job_is_paused_at_once_and_not_started_until_resumed(
    node: ScrapydNode, site: str
) -> None:
    blockers = [slow_job(node, site, count=2, delay=30, prefix="blocker") for _ in range(2)]
    for blocker in blockers:
        node.wait_status(blocker, "running")
    job = slow_job(node, site, count=1, delay=0.1, prefix="pending")
    assert node.status(job)["status"] == "pending"

    answer = pause(node, job)
    assert answer.code == 200, answer.body
    assert answer.json()["prevstate"] == "pending"
    assert answer.json()["job"]["status"] == "paused"
    again = pause(node, job)
    assert again.code == 200 and again.json()["job"]["status"] == "paused"

    # A running job: resuming it does nothing.
    running = resume(node, blockers[0])
    assert running.code == 200, running.body
    assert running.json()["prevstate"] == "running"
    assert running.json()["job"]["status"] == "running"
    assert "pause withdrawn" not in steps(running.json()["job"])

    # A slot frees: a job queued after the paused one runs in it, the paused
    # one does not.
    force_end(node, blockers[0])
    later = slow_job(node, site, count=1, delay=0.1, prefix="later")
    assert node.wait_status(later, *TERMINAL)["status"] == "completed"
    still = node.status(job)
    assert still["status"] == "paused" and still["started_at"] is None, still

    answer = resume(node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
    done = node.wait_status(job, *TERMINAL)
    assert done["status"] == "completed" and done["total_pages_crawled"] == 1, done
    force_end(node, blockers[1])
    node.wait_idle()


def test_completed_unknown_invalid_and_other_project_jobs(
    node: ScrapydNode, reference: Reference
) -> None:
    reference.urls()
    done = node.status(reference.job)
    for answer in (pause(node, reference.job), pause(node, reference.job)):
        assert answer.code == 400, answer.body
        body = answer.json()
        assert body["status"] == "error"
        assert body["message"] == (
            f"job '{reference.job}' is completed: only a pending or running job can be paused"
        )
        assert body["job"]["status"] == "completed"
    answer = resume(node, reference.job)
    assert answer.code == 400, answer.body
    assert answer.json()["message"] == (
        f"job '{reference.job}' is completed: only a paused job can be resumed"
    )
    after = node.status(reference.job)
    assert after == {**done, "updated_at": after["updated_at"]}

    for endpoint in ("jobpause.json", "jobresume.json"):
        for job, code in (
            ("no-such-job", 404),
            ("a" * 300, 400),
            ("../../etc/passwd", 400),
        ):
            answer = node.post(endpoint, {"job": job})
            assert answer.code == code, (endpoint, job, answer.body)
            assert answer.json()["status"] == "error"
        other = node.post(endpoint, {"job": reference.job, "project": "other"})
        assert other.code == 404, (endpoint, other.body)
        assert node.post(endpoint, {}).code == 400
    assert node.status(reference.job)["status"] == "completed"


def test_running_job_of_a_node_without_pausable_cannot_be_paused(
    plain_node: ScrapydNode, site: str
) -> None:
    job = slow_job(plain_node, site, count=2, delay=30, prefix="plain")
    plain_node.wait_status(job, "running")
    answer = pause(plain_node, job)
    assert answer.code == 400, answer.body
    body = answer.json()
    assert body["status"] == "error" and "JOBSTATUS_PAUSABLE" in body["message"]
    assert body["message"].startswith(f"job '{job}' runs without a JOBDIR and cannot be paused")
    running = plain_node.status(job)
    assert running["status"] == "running" and running["pausable"] is False
    assert "pause requested" not in steps(running)
    force_end(plain_node, job)
    plain_node.wait_idle()


def test_a_job_setting_makes_it_pausable_on_a_node_without_pausable(
    plain_node: ScrapydNode, site: str
) -> None:
    job = slow_job(plain_node, site, count=8, delay=0.5, prefix="setting", JOBSTATUS_PAUSABLE=True)
    readings_until(
        plain_node,
        job,
        lambda d: d["status"] == "running" and d["total_pages_crawled"] >= 1,
        30,
        f"{job} to crawl a page",
    )
    assert plain_node.status(job)["pausable"] is True
    paused = pause_running(plain_node, job)[-1]
    assert paused["status"] == "paused", paused
    assert 1 <= paused["total_pages_crawled"] < 8
    assert jobdir(plain_node, job).is_dir()
    wait_crawl_exit(plain_node, job)

    answer = resume(plain_node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
    done = plain_node.wait_status(job, *TERMINAL)
    assert done["status"] == "completed", done
    # Every page once: the ones crawled before the pause are not asked again.
    assert done["total_pages_crawled"] == 8
    urls = [item["url"] for item in read_lines(items_file(plain_node, job, "batch"))]
    assert sorted(urls) == sorted(slow_urls(site, 8, 0.5).split(","))
    assert_paused_then_resumed(done)
    plain_node.wait_idle()


def test_job_resumed_before_its_paused_crawl_has_exited_runs_to_the_end(
    node: ScrapydNode, site: str
) -> None:
    """A paused crawl exits a moment after it reports ``paused``; a client
    may resume the job at once, and the node start the new crawl before the
    old one is gone. The old crawl's exit must not end the job."""
    for _ in range(5):
        job = slow_job(node, site, count=8, delay=0.5, prefix="quick-resume")
        readings_until(
            node,
            job,
            lambda d: d["status"] == "running" and d["total_pages_crawled"] >= 1,
            30,
            f"{job} to crawl a page",
        )
        old = node.crawl_pid(job)
        paused = pause_running(node, job)[-1]
        assert paused["status"] == "paused", paused
        # The old crawl, slow to exit: held until the new one has started.
        if hold(old):
            break
        # It had exited before it could be held (the test was slow to see
        # the job paused, on a busy machine): again, with another job.
        assert node.post("jobcancel.json", {"job": job}).code == 200
    else:
        pytest.fail("each paused crawl exited before it could be held")
    try:
        answer = resume(node, job)
        assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
        new = wait_for(
            lambda: next(
                (
                    p["pid"]
                    for p in node.get("listjobs.json").json()["running"]
                    if p["id"] == job and p["pid"] != old
                ),
                None,
            ),
            what=f"a new crawl of {job}",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
    wait_for(lambda: not is_alive(old), what=f"the paused crawl {old} to exit")
    done = node.wait_status(job, *TERMINAL)
    assert done["status"] == "completed", done
    assert "unmonitored" not in (done["message"] or ""), done["message"]
    assert_paused_then_resumed(done)
    assert done["total_pages_crawled"] == 8, done
    wait_for(lambda: not is_alive(new), what=f"the new crawl {new} to exit")
    urls = [item["url"] for item in read_lines(items_file(node, job, "batch"))]
    assert sorted(urls) == sorted(slow_urls(site, 8, 0.5).split(","))
    node.wait_idle()


# -- cancels ----------------------------------------------------------------------


def test_paused_job_cancelled_loses_its_jobdir(node: ScrapydNode, site: str) -> None:
    job = slow_job(node, site, count=10, delay=0.5, prefix="cancel-paused")
    readings_until(
        node,
        job,
        lambda d: d["status"] == "running" and d["total_pages_crawled"] >= 1,
        30,
        f"{job} to crawl a page",
    )
    paused = pause_running(node, job)[-1]
    assert paused["status"] == "paused", paused
    marker = jobdir(node, job) / "jobstatus.json"
    assert json.loads(marker.read_text()) == {"job_id": job, "resumable": True}

    answer = node.post("jobcancel.json", {"job": job})
    assert answer.code == 200, answer.body
    assert answer.json()["prevstate"] == "paused"
    assert answer.json()["job"]["status"] == "cancelled"
    assert answer.json()["job"]["completion_reason"] == "cancelled"
    wait_for(lambda: not jobdir(node, job).exists(), timeout=20, what=f"the JOBDIR of {job} to go")
    assert node.status(job)["status"] == "cancelled"
    node.wait_idle()


def test_scrapyd_cancel_of_a_pausable_running_job_ends_it_cancelled(
    node: ScrapydNode, site: str
) -> None:
    job = schedule_documents(node, site, prefix="scrapyd-cancel")
    run_until_found(node, job)
    answer = node.post("cancel.json", {"project": PROJECT, "job": job})
    assert answer.json()["status"] == "ok" and answer.json()["prevstate"] == "running"
    readings = readings_until(node, job, lambda d: d["status"] in TERMINAL, 60, f"{job} to end")
    assert "paused" not in [r["status"] for r in readings]
    done = readings[-1]
    assert done["status"] == "cancelled" and done["completion_reason"] == "cancelled", done
    urls = document_urls(node, job)
    assert 0 < len(urls) == done["total_documents_found"] < DOCUMENTS
    assert len(set(urls)) == len(urls)
    wait_for(lambda: not jobdir(node, job).exists(), timeout=20, what=f"the JOBDIR of {job} to go")
    node.wait_idle()


def test_scrapyd_cancel_of_a_paused_job_whose_crawl_is_exiting(
    node: ScrapydNode, site: str
) -> None:
    job = slow_job(node, site, count=10, delay=0.5, prefix="cancel-exiting")
    readings_until(
        node,
        job,
        lambda d: d["status"] == "running" and d["total_pages_crawled"] >= 1,
        30,
        f"{job} to crawl a page",
    )
    pid = node.crawl_pid(job)
    assert pause(node, job).code == 202
    poll_until(
        lambda: node.status(job)["status"],
        lambda status: status not in ("running", "pausing"),
        timeout=30,
        interval=0.01,
        what=f"{job} to pause",
    )
    # The paused crawl, held before it exits: Scrapyd still has its process.
    os.kill(pid, signal.SIGSTOP)
    try:
        assert node.status(job)["status"] == "paused"
        assert node.scrapyd_state(job) == "running", "the paused crawl exited too soon"
        answer = node.post("cancel.json", {"project": PROJECT, "job": job})
        assert answer.json()["status"] == "ok", answer.body
        assert answer.json()["prevstate"] == "running"
        assert node.status(job)["status"] == "cancelled"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not is_alive(pid), what=f"the paused crawl {pid} to exit")
    node.wait_idle()
    done = node.status(job)
    assert (done["status"], done["completion_reason"]) == ("cancelled", "cancelled"), done
    assert steps(done).index("paused") < steps(done).index("cancelled"), steps(done)
    wait_for(lambda: not jobdir(node, job).exists(), timeout=20, what=f"the JOBDIR of {job} to go")
    assert node.status(job)["status"] == "cancelled"


# -- Scrapyd's files ----------------------------------------------------------------


def test_files_of_a_paused_job_outlive_jobs_to_keep(
    brief_node: ScrapydNode, site: str, reference: Reference
) -> None:
    node = brief_node
    job = schedule_documents(node, site, prefix="kept")
    run_until_found(node, job)
    paused = pause_running(node, job)[-1]
    assert paused["status"] == "paused", paused
    wait_crawl_exit(node, job)
    assert len(document_urls(node, job)) == paused["total_documents_found"]
    assert log_file(node, job).exists()

    # Three short jobs of the same spider, one after the other: each start
    # deletes the spider's files beyond the newest one, but the paused job's.
    short = []
    for _ in range(3):
        other = unique("short")
        answer = node.schedule("documents", job=other, url=site + "/pages/0?links=1&max=2&docs=1")
        assert answer.json()["status"] == "ok", answer.body
        assert node.wait_status(other, *TERMINAL)["status"] == "completed"
        short.append(other)
    assert not items_file(node, short[0]).exists() and not log_file(node, short[0]).exists()
    assert items_file(node, short[2]).exists() and log_file(node, short[2]).exists()
    assert items_file(node, job).exists() and log_file(node, job).exists()

    answer = resume(node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "pending", answer.body
    done = assert_completes_with(node, job, reference.urls())
    assert_paused_then_resumed(done)
    node.wait_idle()
