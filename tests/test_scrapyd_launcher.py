"""End to end: the launcher override passes the store to every crawl, marks a
crawl that dies without a final status failed at once, and the statuses of
finished jobs outlive a Scrapyd restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import scrapy
from tests.postgres import temporary_database
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-launcher"),
        options={"max_proc": "1", "poll_interval": "0.2"},
    )


def test_crawl_gets_the_node_store_and_its_project(node: ScrapydNode, site: str) -> None:
    job = unique("settings")
    node.schedule(job=job, urls=f"{site}/sample/")
    # The crawl itself wrote running and completed into the node's store.
    done = node.wait_status(job, "completed")
    assert done["project"] == PROJECT
    assert [event["step"] for event in done["history"]][:1] == ["opened"]
    # ... and no store of its own beside the project.
    assert not list(node.workdir.glob("**/.scrapy/jobstatus.db"))
    node.wait_idle()


def test_killed_crawl_is_failed_at_once_with_its_exit_code(node: ScrapydNode, site: str) -> None:
    job = unique("killed")
    copies = set(node.tmpdir.glob(f"{PROJECT}-*.egg"))
    node.schedule(job=job, urls=slow_urls(site, 2, 20))
    node.wait_status(job, "running")
    os.kill(node.crawl_pid(job), signal.SIGKILL)
    killed = time.monotonic()
    failed = node.wait_status(job, "failed", "completed", "cancelled", timeout=10)
    # At once: not after the heartbeat goes stale (5 intervals).
    assert time.monotonic() - killed < 4
    assert failed["status"] == "failed" and failed["completion_reason"] == "error"
    assert "exit code -9 (killed by SIGKILL)" in failed["error_message"]
    assert failed["is_active"] is False and failed["requests_in_flight"] == 0
    node.wait_idle()
    assert node.scrapyd_state(job) == "finished"
    # The crawl ran the egg from the node's eggs_dir: its death left no copy.
    assert list((node.workdir / "eggs" / PROJECT).glob("*.egg"))
    assert set(node.tmpdir.glob(f"{PROJECT}-*.egg")) == copies


def test_a_job_scheduled_with_the_extension_disabled_runs_unmonitored_not_failed(
    node: ScrapydNode, site: str
) -> None:
    job = unique("unmonitored")
    node.schedule(job=job, settings={"JOBSTATUS_ENABLED": "False"}, urls=f"{site}/sample/")
    done = node.wait_status(job, "completed", "failed", "cancelled")
    assert (done["status"], done["completion_reason"]) == ("completed", "done")
    assert "ran unmonitored" in done["message"] and "exit code 0" in done["message"]
    assert any(warning.startswith("unmonitored") for warning in done["warnings"])
    # Nothing was counted: the extension never ran.
    assert done["total_pages_crawled"] == 0 and done["started_at"] is None
    node.wait_idle()
    assert node.scrapyd_state(job) == "finished"


def test_crawl_that_crashes_before_reporting_is_failed(node: ScrapydNode) -> None:
    job = unique("crashed")
    # The spider cannot even be loaded: the process exits before the job opens.
    node.schedule(
        job=job, settings={"SPIDER_MODULES": "no_such_module"}, urls="http://127.0.0.1:1/"
    )
    failed = node.wait_status(job, "failed", "completed", "cancelled", timeout=30)
    assert failed["status"] == "failed"
    assert "exit code 1 " in failed["error_message"]
    node.wait_idle()


def test_finished_statuses_outlive_a_restart_and_a_queued_job_still_runs(
    node: ScrapydNode, site: str
) -> None:
    finished = unique("finished")
    node.schedule(job=finished, urls=f"{site}/sample/")
    before = node.wait_status(finished, "completed")
    node.wait_idle()

    blocker = unique("blocker")
    node.schedule(job=blocker, urls=slow_urls(site, 2, 20))
    node.wait_status(blocker, "running")
    queued = unique("queued")
    node.schedule(job=queued, urls=f"{site}/sample/")
    assert node.status(queued)["status"] == "pending"

    node.stop(kill_crawls=False)
    # While Scrapyd is down, the running crawl is cancelled through the
    # store, with the local command.
    result = scrapy("jobcancel", blocker, "--db", str(node.db), "--force")
    assert result.returncode == 0, result.stderr
    node.start()

    after = node.status(finished)
    assert after["status"] == "completed" and after["completed_at"] == before["completed_at"]
    assert after["total_pages_crawled"] == before["total_pages_crawled"]
    assert node.wait_status(blocker, "cancelled")["status"] == "cancelled"
    assert node.wait_status(queued, "completed", "failed", "cancelled")["status"] == "completed"
    listed = [job["job_id"] for job in node.get("jobs.json").json()["jobs"]]
    assert {finished, blocker, queued} <= set(listed)
    # Scrapyd's finished jobs are the store's: they survive the restart.
    assert node.get("status.json", {"job": finished}).json()["currstate"] == "finished"
    finished_jobs = node.get("listjobs.json").json()["finished"]
    assert finished in [j["id"] for j in finished_jobs]
    node.wait_idle()


@pytest.mark.parametrize(
    ("options", "shared", "expected"),
    [
        (
            {"spiderqueue": "scrapyd.spiderqueue.SqliteSpiderQueue"},
            False,
            "the job launcher needs spiderqueue = scrapy_jobstatus.scrapyd.SpiderQueue",
        ),
        ({"poller": "scrapyd.poller.QueuePoller"}, False, "needs poller = "),
        (
            {"eggstorage": "scrapyd.eggstorage.FilesystemEggStorage"},
            True,
            "needs eggstorage = scrapy_jobstatus.scrapyd.EggStorage in [scrapyd]"
            " (the store is shared by several nodes)",
        ),
    ],
)
def test_a_node_without_the_store_s_queue_refuses_to_start_in_one_line(
    tmp_path, request: pytest.FixtureRequest, options: dict, shared: bool, expected: str
) -> None:
    with contextlib.ExitStack() as stack:
        jobstatus = {}
        if shared:
            url = request.getfixturevalue("postgres_url")
            jobstatus["db"] = stack.enter_context(temporary_database(url))
        node = ScrapydNode(tmp_path, options=options, jobstatus=jobstatus)
        with pytest.raises(AssertionError, match="scrapyd exited"):
            node.start()
    lines = node.log.read_text().strip().splitlines()
    assert lines == [lines[0]] and expected in lines[0]


def test_a_crawl_that_cannot_start_fails_its_job_and_frees_its_slot(
    tmp_path: Path, site: str
) -> None:
    # Scrapyd cannot make the crawl's log directory: a file is in the way.
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    for started in running_node(tmp_path / "node", options={"logs_dir": str(blocker)}):
        job = unique("unstartable")
        assert started.schedule(job=job, urls=f"{site}/sample/").json()["status"] == "ok"
        status = started.wait_status(job, "failed", timeout=60)
        assert status["message"].startswith("The crawl could not start")
        started.wait_idle()
        assert "Could not record" not in started.log_text()
