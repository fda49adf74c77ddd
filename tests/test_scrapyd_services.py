"""End to end: the job services and the schedule.json override against a real
``scrapyd`` with the shipped config and the egg scrapyd-deploy built; Scrapyd's
own API answers as its clients expect."""

from __future__ import annotations

import csv
import io
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import poll_until, wait_for
from tests.scrapyd_node import (
    BIN,
    PROJECT,
    ScrapydNode,
    build_egg,
    running_node,
    sample_urls,
    slow_urls,
    unique,
)
from tests.test_documents import EXPECTED, PAGES_FETCHED
from tests.test_listings import DETAIL_ARGS, PRODUCT_ARGS

# The error object of the contract, in its order (the CSV header's).
ERROR_FIELDS = [
    "error_id", "stage", "error_type", "error_message", "page_url", "http_status", "timestamp",
    "is_recoverable",
]  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    # One slot, so that a job waits in Scrapyd's queue behind another.
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-services"),
        options={"max_proc": "1", "poll_interval": "0.2"},
    )


@pytest.fixture(scope="module")
def lifecycle(node: ScrapydNode, site: str) -> dict[str, Any]:
    """A job seen pending behind another, then running, then completed; its
    status read all along while it runs."""
    blocker = unique("blocker")
    assert node.schedule(job=blocker, urls=slow_urls(site, 2, 1.5)).json()["status"] == "ok"
    node.wait_status(blocker, "running")

    job = unique("lifecycle")
    # Eight pages of 1 s, two at a time, then two error pages: a run of 4 s
    # and more, with the status written every second (JOBSTATUS_INTERVAL).
    urls = sample_urls(site, delay=1) + f",{site}/status/404,{site}/sample/nope"
    answer = node.schedule(job=job, urls=urls, settings={"CONCURRENT_REQUESTS": 2}).json()
    seen: dict[str, Any] = {"job": job, "urls": urls, "schedule": answer}
    seen["pending"] = node.status(job)
    seen["pending_scrapyd"] = node.scrapyd_state(job)
    seen["pending_listjobs"] = node.get("listjobs.json").json()
    seen["running"] = node.wait_status(job, "running")
    seen["running_scrapyd"] = node.scrapyd_state(job)
    seen["readings"] = poll_until(
        lambda: node.status(job),
        lambda document: not document["is_active"],
        timeout=60,
        what=f"job {job} to end",
    )
    seen["completed"] = seen["readings"][-1]
    wait_for(lambda: node.scrapyd_state(job) == "finished", what="Scrapyd to see the job finished")
    seen["finished_listjobs"] = node.get("listjobs.json").json()
    return seen


def test_schedule_answers_as_scrapyd(lifecycle: dict[str, Any]) -> None:
    assert lifecycle["schedule"] == {
        "status": "ok",
        "jobid": lifecycle["job"],
        "node_name": lifecycle["schedule"]["node_name"],
    }


def test_queued_job_is_pending_with_its_spider_and_arguments(lifecycle: dict[str, Any]) -> None:
    pending = lifecycle["pending"]
    assert pending["status"] == "pending"
    assert pending["is_active"] is True
    assert pending["job_id"] == lifecycle["job"]
    assert pending["project"] == PROJECT
    assert pending["spider"] == "batch"
    assert pending["created_at"] is not None
    assert pending["started_at"] is None
    assert pending["args"] == {"urls": lifecycle["urls"]}
    assert lifecycle["pending_scrapyd"] == "pending"
    queued = [
        job for job in lifecycle["pending_listjobs"]["pending"] if job["id"] == lifecycle["job"]
    ]
    assert queued and queued[0]["spider"] == "batch" and queued[0]["project"] == PROJECT


def test_running_job_reports_progress(lifecycle: dict[str, Any]) -> None:
    running = lifecycle["running"]
    assert running["started_at"] is not None
    assert running["created_at"] == lifecycle["pending"]["created_at"]
    assert running["running_time"] is not None
    assert lifecycle["running_scrapyd"] in ("running", "finished")
    readings = lifecycle["readings"]
    # While it runs, its status shows a part of the pages done, and their count.
    during = [r for r in readings if r["status"] == "running"]
    partial = [r for r in during if r["progress"] is not None and 0 < r["progress"] < 100]
    assert partial, [(r["status"], r["progress"]) for r in readings]
    for reading in partial:
        assert 0 < reading["total_pages_crawled"] < 10
        assert reading["total_documents_found"] == reading["progress"] / 10
    # From less than 100 to 100, never backwards, and the counters with it.
    progress = [r["progress"] or 0.0 for r in readings]
    assert progress[0] < 100 and progress[-1] == 100.0 and progress == sorted(progress)
    for counter in ("total_pages_crawled", "total_documents_found", "responses_failed"):
        values = [r[counter] for r in readings]
        assert values == sorted(values) and values[0] < values[-1], counter
    running_times = [r["running_time"] for r in during]
    assert running_times == sorted(running_times)


def test_completed_job_has_the_right_counters(lifecycle: dict[str, Any]) -> None:
    done = lifecycle["completed"]
    assert done["status"] == "completed", done
    assert done["completion_reason"] == "done"
    assert done["close_reason"] == "finished"
    assert done["total_pages_crawled"] == 10
    assert done["total_documents_found"] == 10
    assert done["responses_failed"] == 2
    assert done["failure_ratio"] == 0.2
    assert done["progress"] == 100.0
    assert done["error_count"] == 2 and done["has_errors"] is True
    assert done["requests_in_flight"] == 0
    assert done["processing_time"] > 0
    assert done["project"] == PROJECT
    finished = [
        job for job in lifecycle["finished_listjobs"]["finished"] if job["id"] == lifecycle["job"]
    ]
    assert finished and {"start_time", "end_time", "log_url"} <= set(finished[0])


def test_error_report_json_has_every_error_with_all_fields(
    node: ScrapydNode, lifecycle: dict[str, Any], site: str
) -> None:
    answer = node.get("joberrors.json", {"job": lifecycle["job"]})
    assert answer.code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["node_name"]
    assert body["job"]["job_id"] == lifecycle["job"] and body["job"]["status"] == "completed"
    assert body["error_count"] == 2
    assert all(set(error) == set(ERROR_FIELDS) for error in body["errors"])
    assert sorted(e["page_url"] for e in body["errors"]) == [
        f"{site}/sample/nope",
        f"{site}/status/404",
    ]
    assert {e["error_type"] for e in body["errors"]} == {"http_error"}
    assert {e["http_status"] for e in body["errors"]} == {404}


def test_error_report_csv_has_a_header_row(node: ScrapydNode, lifecycle: dict[str, Any]) -> None:
    answer = node.get("joberrors.json", {"job": lifecycle["job"], "format": "csv"})
    assert answer.code == 200
    assert answer.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.body.decode())))
    assert rows[0] == ERROR_FIELDS
    assert len(rows) == 3
    assert {row[5] for row in rows[1:]} == {"404"}


def test_error_report_of_unknown_job_is_404(node: ScrapydNode) -> None:
    for fmt in ("json", "csv"):
        answer = node.get("joberrors.json", {"job": "no-such-job", "format": fmt})
        assert answer.code == 404
        assert answer.json()["status"] == "error"


def test_jobstatus_unknown_missing_and_invalid(node: ScrapydNode) -> None:
    unknown = node.get("jobstatus.json", {"job": "no-such-job"})
    assert unknown.code == 404
    assert unknown.json() == {
        "status": "error",
        "message": "job 'no-such-job' not found",
        "node_name": unknown.json()["node_name"],
    }
    missing = node.get("jobstatus.json")
    assert missing.code == 400 and "'job' parameter is required" in missing.json()["message"]
    invalid = node.get("jobstatus.json", {"job": "not/valid"})
    assert invalid.code == 400 and "invalid job id" in invalid.json()["message"]
    # Any text up to 200 UTF-8 bytes without '/' or control characters is an id.
    for valid in ("x" * 200, "a b", "caf\u00e9 #1"):
        answer = node.get("jobstatus.json", {"job": valid})
        assert answer.code == 404, (valid, answer.json())


def test_jobstatus_with_project(node: ScrapydNode, lifecycle: dict[str, Any]) -> None:
    assert node.get("jobstatus.json", {"job": lifecycle["job"], "project": PROJECT}).code == 200
    other = node.get("jobstatus.json", {"job": lifecycle["job"], "project": "other"})
    assert other.code == 404


def test_jobs_lists_newest_first_with_total(node: ScrapydNode, lifecycle: dict[str, Any]) -> None:
    body = node.get("jobs.json").json()
    assert body["status"] == "ok"
    assert body["total"] >= 2 and body["limit"] == 50 and body["offset"] == 0
    created = [job["created_at"] for job in body["jobs"]]
    assert created == sorted(created, reverse=True)
    ids = [job["job_id"] for job in body["jobs"]]
    assert lifecycle["job"] in ids
    assert "history" in body["jobs"][0] and body["jobs"][0]["history"] == []


def test_jobs_filters_and_pages(node: ScrapydNode, lifecycle: dict[str, Any]) -> None:
    everything = node.get("jobs.json", {"project": PROJECT, "spider": "batch"}).json()
    first = node.get("jobs.json", {"limit": 1}).json()
    second = node.get("jobs.json", {"limit": 1, "offset": 1}).json()
    assert len(first["jobs"]) == 1 and first["total"] == everything["total"]
    assert first["jobs"][0]["job_id"] == everything["jobs"][0]["job_id"]
    assert second["jobs"][0]["job_id"] == everything["jobs"][1]["job_id"]
    completed = node.get("jobs.json", {"status": "completed"}).json()
    assert completed["jobs"] and all(job["status"] == "completed" for job in completed["jobs"])
    assert node.get("jobs.json", {"project": "other"}).json()["total"] == 0


def test_a_cursor_pages_through_every_job_once(
    node: ScrapydNode, lifecycle: dict[str, Any]
) -> None:
    everything = node.get("jobs.json", {"limit": 1000}).json()
    assert everything["next"] is None
    seen, params = [], {"limit": 1}
    while True:
        page = node.get("jobs.json", params).json()
        assert page["total"] == everything["total"]
        seen += [job["job_id"] for job in page["jobs"]]
        if page["next"] is None:
            break
        params = {"limit": 1, "cursor": page["next"]}
    assert seen == [job["job_id"] for job in everything["jobs"]]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"cursor": "nonsense"}, "cursor"),
        ({"cursor": "nan_1"}, "cursor"),
        ({"status": "done"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"project": "../crawler"}, "project"),
        ({"spider": "batch' OR '1'='1"}, "spider"),
    ],
)
def test_jobs_refuses_invalid_filters_naming_them(
    node: ScrapydNode, params: dict[str, str], named: str
) -> None:
    answer = node.get("jobs.json", params)
    assert answer.code == 400
    assert answer.json()["status"] == "error"
    assert answer.json()["message"].startswith(named)


def test_unknown_parameters_are_ignored(node: ScrapydNode, lifecycle: dict[str, Any]) -> None:
    assert node.get("jobstatus.json", {"job": lifecycle["job"], "verbose": "1"}).code == 200
    assert node.get("jobs.json", {"sort": "oldest"}).code == 200


def test_oversized_parameters_are_refused(node: ScrapydNode) -> None:
    assert node.get("jobstatus.json", {"job": "a" * 5000}).code == 400
    answer = node.get("jobs.json", {"whatever": "x" * 5000})
    assert answer.code == 400 and "too long" in answer.json()["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job": "../../etc/passwd"}, "invalid job id"),
        ({"job": "x" * 201}, "invalid job id"),
        ({"job": "\u00e9" * 101}, "invalid job id"),  # 101 characters, 202 UTF-8 bytes
        ({"job": "a\nb"}, "invalid job id"),
        ({"settings": {"JOBSTATUS_TIMEOUT": "soon"}}, "JOBSTATUS_TIMEOUT must be a number"),
        ({"settings": {"JOBSTATUS_TIMEOUT": "nan"}}, "JOBSTATUS_TIMEOUT must be a number"),
        ({"settings": {"JOBSTATUS_TIMEOUT": "-1"}}, "JOBSTATUS_TIMEOUT must not be negative"),
        ({"settings": {"JOBSTATUS_TIMEOUT": "1801"}}, "above this node's maximum of 1800 seconds"),
        (
            {"settings": {"JOBSTATUS_DB": "/tmp/elsewhere.db"}},  # noqa: S108 (never written)
            "JOBSTATUS_DB is set by the node",
        ),
    ],
)
def test_schedule_refuses_before_queueing(
    node: ScrapydNode, site: str, change: dict[str, Any], message: str
) -> None:
    before = node.get("jobs.json").json()["total"]
    job = change.get("job", unique("refused"))
    answer = node.schedule(job=job, urls=f"{site}/sample/", settings=change.get("settings"))
    assert answer.code == 200  # Scrapyd's own error shape
    body = answer.json()
    assert body["status"] == "error" and message in body["message"], body
    assert node.get("jobs.json").json()["total"] == before
    assert all(job != queued["id"] for queued in node.get("listjobs.json").json()["pending"])


def test_schedule_refuses_a_used_job_id(
    node: ScrapydNode, lifecycle: dict[str, Any], site: str
) -> None:
    answer = node.schedule(job=lifecycle["job"], urls=f"{site}/sample/").json()
    assert answer["status"] == "error" and "already used" in answer["message"]
    assert node.status(lifecycle["job"])["status"] == "completed"


def test_schedule_keeps_scrapyd_errors(node: ScrapydNode) -> None:
    answer = node.post("schedule.json", {"project": "nope", "spider": "batch"})
    assert answer.code == 200 and answer.json()["status"] == "error"
    assert answer.json()["message"] == "project 'nope' not found"
    answer = node.post("schedule.json", {"project": PROJECT, "spider": "nope"})
    assert answer.json() == {
        "status": "error",
        "message": "spider 'nope' not found",
        "node_name": answer.json()["node_name"],
    }


def test_schedule_takes_spider_arguments_of_any_length_as_scrapyd_does(
    node: ScrapydNode, site: str
) -> None:
    urls = ",".join(f"{site}/sample/apple?n={i}" for i in range(60))
    assert len(urls) > 2048
    job = unique("long-args")
    assert node.schedule(job=job, urls=urls).json()["status"] == "ok"
    done = node.wait_status(job, "completed", "failed", "cancelled")
    assert (done["status"], done["total_pages_crawled"]) == ("completed", 60)


def test_schedule_accepts_a_timeout_within_the_cap(node: ScrapydNode, site: str) -> None:
    job = unique("timeout")
    answer = node.schedule(
        job=job, urls=f"{site}/sample/", settings={"JOBSTATUS_TIMEOUT": "60"}
    ).json()
    assert answer["status"] == "ok"
    done = node.wait_status(job, "completed", "failed")
    assert done["status"] == "completed" and done["timeout"] == 60.0


def test_generated_job_id_is_recorded(node: ScrapydNode, site: str) -> None:
    answer = node.post(
        "schedule.json", {"project": PROJECT, "spider": "batch", "urls": f"{site}/sample/"}
    ).json()
    assert answer["status"] == "ok"
    assert node.wait_status(answer["jobid"], "completed")["spider"] == "batch"


def test_scrapyd_own_services_answer_as_before(
    node: ScrapydNode, lifecycle: dict[str, Any]
) -> None:
    daemon = node.get("daemonstatus.json").json()
    assert set(daemon) == {"status", "pending", "running", "finished", "node_name"}
    jobs = node.get("listjobs.json").json()
    assert set(jobs) == {"status", "pending", "running", "finished", "node_name"}
    assert node.get("status.json", {"job": lifecycle["job"]}).json()["currstate"] == "finished"
    assert node.get("status.json", {"job": "no-such-job"}).json() == {
        "status": "ok",
        "currstate": None,
        "node_name": daemon["node_name"],
    }
    assert node.get("listprojects.json").json()["projects"] == [PROJECT]
    assert "batch" in node.get("listspiders.json", {"project": PROJECT}).json()["spiders"]
    cancel = node.post("cancel.json", {"project": PROJECT, "job": "no-such-job"}).json()
    assert cancel == {"status": "ok", "prevstate": None, "node_name": daemon["node_name"]}


def test_scrapyd_deploy_egg_holds_the_crawler_project_alone(tmp_path: Path) -> None:
    source = build_egg(tmp_path)
    egg = tmp_path / "crawler.egg"
    result = subprocess.run(  # noqa: S603 (scrapyd-client's own command)
        [str(BIN / "scrapyd-deploy"), "--build-egg", str(egg)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(egg) as z:
        names = set(z.namelist())
        entry_points = z.read("EGG-INFO/entry_points.txt").decode()
    assert {"crawler/settings.py", "crawler/spiders/batch.py"} <= names
    # The node has the library installed: the egg is the project alone.
    assert not any(name.startswith(("tests/", "scrapy_jobstatus/")) for name in names)
    # Built elsewhere: an egg-info of the library's name in the project would
    # hide the installed library's commands, and a build/ directory would put
    # the project into a wheel built from the tree later.
    assert not list(source.glob("**/*.egg-info")) and not (source / "build").exists()
    assert "[scrapy]\nsettings = crawler.settings" in entry_points


def test_documents_and_listings_jobs_run_from_the_deployed_egg(
    node: ScrapydNode, site: str
) -> None:
    documents, listings = unique("documents"), unique("listings")
    node.schedule("documents", job=documents, url=f"{site}/docsite/index.html")
    node.schedule(
        "listings", job=listings, url=f"{site}/listing/products?page=1", total="p.count",
        **PRODUCT_ARGS, **DETAIL_ARGS,
    )  # fmt: skip
    done = node.wait_status(documents, "completed", "failed", "cancelled")
    assert done["status"] == "completed", done["error_message"]
    assert done["project"] == PROJECT
    assert done["total_documents_found"] == len(EXPECTED)
    assert done["total_pages_crawled"] == PAGES_FETCHED
    assert done["stages_completed"] == ["discovery", "finalizing"]
    done = node.wait_status(listings, "completed", "failed", "cancelled")
    assert done["status"] == "completed", done["error_message"]
    assert (done["total_documents_found"], done["current_page"]) == (7, 3)
    assert done["pagination_complete"] is True
    assert done["progress"] == 100.0
