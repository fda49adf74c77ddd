"""End to end: cancelling pending and running jobs through jobcancel.json and
Scrapyd's own cancel.json, with every code of the contract."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    # One slot: a job scheduled behind a running one stays pending.
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-cancel"), options={"max_proc": "1", "poll_interval": "0.2"}
    )


def start_running(
    node: ScrapydNode, site: str, *, count: int, delay: float, prefix: str = "running"
) -> str:
    """A job with ``count`` slow pages, two at a time, seen with requests in flight."""
    job = unique(prefix)
    answer = node.schedule(
        job=job, urls=slow_urls(site, count, delay), settings={"CONCURRENT_REQUESTS": 2}
    )
    assert answer.json()["status"] == "ok"
    node.wait_status(job, "running")
    wait_for(
        lambda: node.status(job)["requests_in_flight"] >= 1,
        what=f"job {job} to have requests in flight",
    )
    return job


def cancel(node: ScrapydNode, job: str, **params: str):
    return node.post("jobcancel.json", {"job": job, **params})


def force_end(node: ScrapydNode, job: str) -> None:
    cancel(node, job, force="1")
    node.wait_status(job, "cancelled", "completed", "failed")


def test_pending_job_is_taken_out_of_the_queue_and_never_starts(
    node: ScrapydNode, site: str
) -> None:
    blocker = start_running(node, site, count=2, delay=20, prefix="blocker")
    job = unique("pending")
    assert node.schedule(job=job, urls=f"{site}/sample/").json()["status"] == "ok"
    assert node.status(job)["status"] == "pending"

    answer = cancel(node, job)
    assert answer.code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["node_name"]
    assert body["prevstate"] == "pending"
    assert body["job"]["status"] == "cancelled"
    assert body["job"]["completion_reason"] == "cancelled"
    assert body["job"]["cancel_requested_at"] is not None
    assert node.scrapyd_state(job) is None  # out of Scrapyd's queue, never run
    assert job not in [queued["id"] for queued in node.get("listjobs.json").json()["pending"]]

    again = cancel(node, job)
    assert again.code == 200 and again.json()["job"]["status"] == "cancelled"
    assert again.json()["job"]["completed_at"] == body["job"]["completed_at"]

    force_end(node, blocker)
    node.wait_idle()
    after = node.status(job)
    assert after["status"] == "cancelled" and after["started_at"] is None
    assert job not in [done["id"] for done in node.get("listjobs.json").json()["finished"]]


def test_running_job_is_cancelling_then_cancelled_keeping_finished_results(
    node: ScrapydNode, site: str
) -> None:
    job = start_running(node, site, count=6, delay=3)
    requested = time.monotonic()
    answer = cancel(node, job)
    assert answer.code == 202
    body = answer.json()
    assert body["status"] == "ok" and body["prevstate"] == "running"
    assert body["job"]["status"] == "cancelling" and body["job"]["is_active"] is True

    repeated = cancel(node, job)
    assert repeated.code in (200, 202)  # cancelling still, or cancelled by now

    done = node.wait_status(job, "cancelled", "completed", "failed", timeout=30)
    # In-flight requests (3 s at most) finish, then the job ends.
    # Requests started before the crawl took the cancel up (one interval) may
    # also finish; a loaded machine gets a second of slack.
    assert time.monotonic() - requested < 1 + 3 + 1 + 1
    assert done["status"] == "cancelled" and done["completion_reason"] == "cancelled"
    assert 1 <= done["total_pages_crawled"] < 6
    assert done["total_documents_found"] == done["total_pages_crawled"]
    assert done["warnings"] == []

    final = cancel(node, job)
    assert final.code == 200 and final.json()["job"]["status"] == "cancelled"
    assert final.json()["job"]["completed_at"] == done["completed_at"]
    node.wait_idle()


def test_forced_cancel_ends_a_running_job_without_waiting(node: ScrapydNode, site: str) -> None:
    job = start_running(node, site, count=2, delay=20)
    requested = time.monotonic()
    answer = cancel(node, job, force="1")
    assert answer.code == 202 and answer.json()["job"]["status"] == "cancelling"
    done = node.wait_status(job, "cancelled", "completed", "failed", timeout=15)
    assert time.monotonic() - requested < 5
    assert done["status"] == "cancelled"
    assert done["total_pages_crawled"] == 0
    assert any(w.startswith("forced stop") for w in done["warnings"])
    node.wait_idle()


def test_completed_job_cannot_be_cancelled(node: ScrapydNode, site: str) -> None:
    job = unique("completed")
    node.schedule(job=job, urls=f"{site}/sample/")
    done = node.wait_status(job, "completed", "failed")
    for _ in range(2):
        answer = cancel(node, job)
        assert answer.code == 400
        body = answer.json()
        assert body["status"] == "error" and "completed already" in body["message"]
        assert body["job"] == {**done, "updated_at": body["job"]["updated_at"]}
    assert node.status(job)["status"] == "completed"
    node.wait_idle()


def test_failed_job_cannot_be_cancelled(node: ScrapydNode) -> None:
    job = unique("failed")
    node.schedule(job=job, urls="not-a-url")
    node.wait_status(job, "failed")
    answer = cancel(node, job)
    assert answer.code == 400 and answer.json()["job"]["status"] == "failed"
    node.wait_idle()


def test_cancel_of_unknown_or_invalid_job(node: ScrapydNode) -> None:
    assert cancel(node, "no-such-job").code == 404
    assert cancel(node, "../../etc/passwd").code == 400
    assert node.post("jobcancel.json", {}).code == 400
    assert node.post("jobcancel.json", {"job": "no-such-job", "force": "maybe"}).code == 400
    wrong_method = node.get("jobcancel.json", {"job": "no-such-job"})
    assert wrong_method.code == 405 and wrong_method.json()["status"] == "error"
    assert node.request("HEAD", "jobcancel.json", {"job": "no-such-job"}).code == 405


def test_cancel_in_another_project_is_404(node: ScrapydNode, site: str) -> None:
    job = unique("project")
    node.schedule(job=job, urls=f"{site}/sample/")
    assert cancel(node, job, project="other").code == 404
    node.wait_status(job, "completed")
    node.wait_idle()


def test_scrapyd_cancel_of_a_pending_job_records_it_cancelled(node: ScrapydNode, site: str) -> None:
    blocker = start_running(node, site, count=2, delay=20, prefix="blocker")
    job = unique("pending")
    node.schedule(job=job, urls=f"{site}/sample/")
    answer = node.post("cancel.json", {"project": PROJECT, "job": job})
    assert answer.json() == {
        "status": "ok",
        "prevstate": "pending",
        "node_name": answer.json()["node_name"],
    }
    cancelled = node.status(job)
    assert cancelled["status"] == "cancelled" and cancelled["completion_reason"] == "cancelled"
    force_end(node, blocker)
    node.wait_idle()
    assert node.status(job)["started_at"] is None


def test_scrapyd_cancel_of_a_running_job_ends_it_cancelled(node: ScrapydNode, site: str) -> None:
    job = start_running(node, site, count=4, delay=2)
    answer = node.post("cancel.json", {"project": PROJECT, "job": job})
    assert answer.json() == {
        "status": "ok",
        "prevstate": "running",
        "node_name": answer.json()["node_name"],
    }
    done = node.wait_status(job, "cancelled", "completed", "failed", timeout=30)
    assert done["status"] == "cancelled" and done["completion_reason"] == "cancelled"
    assert done["close_reason"] in ("shutdown", "cancelled")
    assert done["total_documents_found"] == done["total_pages_crawled"] < 4
    node.wait_idle()


def _starting(node: ScrapydNode, site: str, settings: dict[str, str] | None = None) -> str:
    """A job whose process Scrapyd has started but whose crawl has not opened yet."""
    job = unique("starting")
    node.schedule(job=job, urls=slow_urls(site, 2, 5), settings=settings or {})
    wait_for(
        lambda: job in [p["id"] for p in node.get("listjobs.json").json()["running"]],
        interval=0.02,
        what=f"Scrapyd to start {job}",
    )
    assert node.status(job)["status"] == "pending"
    return job


def test_scrapyd_cancel_of_a_starting_job_ends_it_cancelled(
    node: ScrapydNode, site: str, reactor_mode: dict[str, str]
) -> None:
    job = _starting(node, site, reactor_mode)
    answer = node.post("cancel.json", {"project": PROJECT, "job": job}).json()
    assert answer["prevstate"] == "running"
    node.wait_idle()
    done = node.status(job)
    assert done["status"] == "cancelled", done
    assert done["total_pages_crawled"] == 0


def test_jobcancel_of_a_starting_job_stops_it_before_it_crawls(
    node: ScrapydNode, site: str
) -> None:
    job = _starting(node, site)
    answer = cancel(node, job)
    assert answer.code == 200 and answer.json()["job"]["status"] == "cancelled"
    node.wait_idle()
    done = node.status(job)
    assert done["status"] == "cancelled" and done["started_at"] is None
