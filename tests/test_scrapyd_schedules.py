"""Periodic schedules on real Scrapyd nodes with the real queue: one job a
tick on one node and on three sharing PostgreSQL (one killed mid-way), the
overlap policies with real crawls, ticks missed while every node was down,
and the services' refusals."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.postgres import PostgresServer, postgres_server, temporary_database
from tests.scrapyd_node import PROJECT, ScrapydNode, running_node, slow_urls, unique
from tests.webhook_receiver import JOB_SECRET, webhook_receiver

ACTIVE = ("pending", "running", "pausing", "cancelling", "finalizing")
CROSS_SITE = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("schedules"), options={"poll_interval": "0.5", "max_proc": "4"}
    )


def add(node: ScrapydNode, name: str, **params: str) -> dict[str, Any]:
    params.setdefault("spider", "batch")
    response = node.post("addschedule.json", {"project": PROJECT, "name": name, **params})
    assert response.code == 200, response.body
    return response.json()["schedule"]


def disable(node: ScrapydNode, name: str) -> None:
    response = node.post("addschedule.json", {"project": PROJECT, "name": name, "enabled": "0"})
    assert response.code == 200, response.body
    assert response.json()["schedule"]["enabled"] is False


def shown(node: ScrapydNode, name: str) -> dict[str, Any]:
    response = node.get("listschedules.json", {"project": PROJECT, "name": name, "history": "1"})
    [schedule] = response.json()["schedules"]
    return schedule


def jobs(node: ScrapydNode, name: str) -> list[dict[str, Any]]:
    answer = node.get("jobs.json", {"schedule": name, "limit": 1000}).json()
    assert answer["total"] == len(answer["jobs"])
    return answer["jobs"]


def instant(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def assert_one_job_per_tick(listed: list[dict[str, Any]], name: str, every: int) -> list[float]:
    """Each job's id is its tick's, and the ticks follow each other, none
    left out."""
    ticks = sorted(instant(j["scheduled_for"]) for j in listed)
    for job in listed:
        assert job["schedule"] == name
        tick = datetime.fromisoformat(job["scheduled_for"].replace("Z", "+00:00"))
        assert job["job_id"] == f"{name}-{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert ticks == [ticks[0] + i * every for i in range(len(ticks))]
    return ticks


def test_every_two_seconds_for_thirty_seconds_gives_fifteen_jobs_each_once(
    node: ScrapydNode, site: str
) -> None:
    name = unique("every")
    add(node, name, every="2", urls=f"{site}/sample/")
    # From the moment the schedule exists (addschedule.json checks the
    # spider first, which takes seconds on a busy machine).
    started = time.time()
    wait_for(lambda: time.time() - started >= 30, timeout=40, interval=0.2, what="30 s")
    stopped = time.time()
    disable(node, name)
    listed = jobs(node, name)
    ticks = assert_one_job_per_tick(listed, name, 2)
    # The ticks between the two requests, each fired.
    expected = math.floor(stopped / 2) - math.floor(started / 2)
    assert abs(len(ticks) - expected) <= 1 and abs(len(ticks) - 15) <= 1
    schedule = shown(node, name)
    assert (schedule["fired"], schedule["skipped"], schedule["missed"]) == (len(ticks), 0, 0)
    assert schedule["last_job"] == max(listed, key=lambda j: j["scheduled_for"])["job_id"]
    # The jobs ran: the real queue, the real crawls.
    for job in listed:
        node.wait_status(job["job_id"], "completed")
    metrics = dict(
        line.rsplit(" ", 1)
        for line in node.get("metrics").body.decode().splitlines()
        if line.startswith("jobstatus_schedule")
    )
    assert float(metrics['jobstatus_schedule_ticks_total{outcome="fired"}']) >= len(ticks)
    assert float(metrics["jobstatus_schedule_firing_lag_seconds_count"]) >= len(ticks)
    assert float(metrics['jobstatus_schedules{state="disabled"}']) >= 1


def test_skip_leaves_out_the_ticks_of_a_job_still_running(node: ScrapydNode, site: str) -> None:
    name = unique("skip")
    with webhook_receiver(JOB_SECRET) as receiver:
        add(
            node,
            name,
            every="1",
            overlap="skip",
            urls=slow_urls(site, 1, 3),
            webhook=receiver.url,
            webhook_secret=JOB_SECRET,
        )
        # Each skipped tick is a schedule.skipped event, signed with the
        # schedule's own key.
        event = wait_for(lambda: receiver.of_type("schedule.skipped"), what="schedule.skipped")
        data = event[0].payload["data"]
        assert (data["schedule"], data["outcome"], data["count"]) == (name, "skipped", 1)
        assert "is still active" in data["details"]
    wait_for(
        lambda: shown(node, name)["skipped"] >= 3 and shown(node, name)["fired"] >= 2,
        timeout=60,
        interval=0.5,
        what="ticks skipped",
    )
    disable(node, name)
    listed = jobs(node, name)
    for job in listed:
        node.wait_status(job["job_id"], "completed", "cancelled", "failed")
    documents = sorted((node.status(j["job_id"]) for j in listed), key=lambda d: d["created_at"])
    # Never two at once: each job was queued after the one before had ended.
    for before, after in zip(documents, documents[1:], strict=False):
        assert before["completed_at"] <= after["created_at"]
    history = shown(node, name)["history"]
    skipped = [line for line in history if line["outcome"] == "skipped"]
    assert skipped and all("is still active" in line["details"] for line in skipped)
    assert all(line["job_id"] is None for line in skipped)


def test_replace_cancels_the_running_job_for_the_new_tick(node: ScrapydNode, site: str) -> None:
    name = unique("replace")
    add(node, name, every="4", overlap="replace", urls=slow_urls(site, 2, 20))
    first = wait_for(lambda: jobs(node, name), timeout=30, what="a first job")[0]["job_id"]
    node.wait_status(first, "running")
    second = wait_for(
        lambda: [j for j in jobs(node, name) if j["job_id"] != first],
        timeout=30,
        what="the next tick's job",
    )[0]["job_id"]
    disable(node, name)
    ended = node.wait_status(first, "cancelled", timeout=60)
    assert ended["completion_reason"] == "cancelled"
    # Replaced gracefully: through the store's cancel request.
    assert ended["cancel_requested_at"] is not None
    node.post("jobcancel.json", {"job": second, "force": "1"})
    node.wait_status(second, "cancelled", timeout=60)


def test_run_now_and_the_overlap_of_a_one_off_job(node: ScrapydNode, site: str) -> None:
    name = unique("manual")
    add(node, name, cron="0 0 1 1 *", overlap="skip", urls=slow_urls(site, 1, 10))
    run = node.post("runschedule.json", {"project": PROJECT, "name": name})
    assert run.code == 200, run.body
    job = run.json()["jobid"]
    assert job.startswith(f"{name}-") and job.endswith("Z")
    document = node.status(job)
    assert (document["schedule"], document["scheduled_for"]) == (name, job[len(name) + 1 :])
    again = node.post("runschedule.json", {"project": PROJECT, "name": name})
    assert (again.code, again.json()["active"]) == (409, job)
    missing = node.post("runschedule.json", {"project": PROJECT, "name": "no-such"})
    assert missing.code == 404

    # schedule.json's overlap=skip: refused in Scrapyd's way while a job of
    # the spider is active; another overlap_key is not held up.
    key = unique("key")
    first = node.schedule(
        job=unique("alone"), urls=slow_urls(site, 1, 10), overlap="skip", overlap_key=key
    )
    assert first.json()["status"] == "ok", first.body
    refused = node.schedule(job=unique("alone"), urls=f"{site}/sample/", overlap="skip")
    assert (refused.code, refused.json()["status"]) == (200, "error")
    assert "is still active (overlap=skip)" in refused.json()["message"]
    same_key = node.schedule(
        job=unique("alone"), urls=f"{site}/sample/", overlap="skip", overlap_key=key
    )
    assert "is still active" in same_key.json()["message"]
    other_key = node.schedule(
        job=unique("alone"), urls=f"{site}/sample/", overlap="skip", overlap_key=unique("key")
    )
    assert other_key.json()["status"] == "ok"
    for active in node.get("jobs.json", {"limit": 1000}).json()["jobs"]:
        if active["status"] in ACTIVE:
            node.post("jobcancel.json", {"job": active["job_id"], "force": "1"})
    node.wait_idle()


def test_refusals_are_one_line_and_write_nothing(node: ScrapydNode) -> None:
    cases = [
        ({"cron": "61 * * * *"}, "cron: '61 * * * *' is not a valid cron expression"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "is not an IANA time zone"),
        ({"every": "0"}, "every: must be 1 to"),
        ({"every": "5", "spider": "nope"}, "spider 'nope' not found"),
        ({"every": "5", "name": "a/b"}, "name: 'a/b' is not a schedule name"),
        ({"every": "5", "jobid": "x"}, "a schedule names its own jobs"),
        ({"every": "5", "overlap": "sometimes"}, "overlap: 'sometimes' is not one of"),
        ({"every": "5", "setting": "JOBSTATUS_DB=x"}, "JOBSTATUS_DB is set by the node"),
        ({"every": "5", "timeout": "99999"}, "is above this node's maximum"),
        ({"every": "5", "webhook": "http://127.0.0.1:9/h"}, "webhook needs webhook_secret"),
        ({"every": "5", "project": "nope"}, "project 'nope' not found"),
        ({}, "give spider and cron or every"),
    ]
    for params, message in cases:
        body = {"project": PROJECT, "name": "refused", "spider": "batch", **params}
        if not params:
            body = {"project": PROJECT, "name": "refused"}
        response = node.post("addschedule.json", body)
        answer = response.json()
        assert (response.code, answer["status"]) == (400, "error"), (params, response.body)
        assert message in answer["message"] and "\n" not in answer["message"], answer
    body = {"project": PROJECT, "name": "refused", "enabled": "0", "overlap": "skip"}
    answer = node.post("addschedule.json", body).json()
    assert answer["message"] == "'overlap': without spider and cron or every, only enabled changes"
    switched = node.post("addschedule.json", {"project": PROJECT, "name": "nope", "enabled": "1"})
    assert switched.code == 404
    assert node.post("delschedule.json", {"project": PROJECT, "name": "nope"}).code == 404
    listed = node.get("listschedules.json", {"project": PROJECT}).json()["schedules"]
    assert "refused" not in [s["name"] for s in listed]


def test_a_cross_site_post_is_refused(node: ScrapydNode) -> None:
    for service in ("addschedule.json", "delschedule.json", "runschedule.json"):
        params = {"project": PROJECT, "name": "evil", "spider": "batch", "every": "1"}
        response = node.post(service, params, headers=CROSS_SITE)
        assert response.code == 403, (service, response.body)
    listed = node.get("listschedules.json").json()["schedules"]
    assert "evil" not in [s["name"] for s in listed]


def test_ticks_missed_while_every_node_was_down(
    tmp_path_factory: pytest.TempPathFactory, site: str
) -> None:
    for node in running_node(tmp_path_factory.mktemp("schedules-down")):
        check_missed_ticks(node, site)


def check_missed_ticks(node: ScrapydNode, site: str) -> None:
    urls = f"{site}/sample/"
    add(node, "none", every="2", urls=urls)
    add(node, "latest", every="2", catch_up="latest", starting_deadline="60", urls=urls)
    wait_for(lambda: jobs(node, "none") and jobs(node, "latest"), what="the first ticks")
    node.stop()
    stopped = time.time()
    # Down across more than two ticks older than the 5 s of grace.
    wait_for(lambda: time.time() - stopped > 11, timeout=20, interval=0.2, what="11 s")
    node.start()
    wait_for(lambda: shown(node, "none")["missed"] >= 2, timeout=30, what="ticks missed")
    wait_for(lambda: shown(node, "latest")["missed"] >= 1, timeout=30, what="ticks missed")

    none = shown(node, "none")
    [missed] = [line for line in none["history"] if line["outcome"] == "missed"]
    last, count = instant(missed["tick"]), missed["count"]
    gone = {last - 2 * i for i in range(count)}
    assert count >= 2
    assert not gone & {instant(j["scheduled_for"]) for j in jobs(node, "none")}

    latest = shown(node, "latest")
    [missed] = [line for line in latest["history"] if line["outcome"] == "missed"]
    late = [
        line
        for line in latest["history"]
        if line["outcome"] == "fired" and instant(line["recorded_at"]) - instant(line["tick"]) > 5
    ]
    # The latest missed tick ran, once; the ones before it are counted.
    assert len(late) == 1
    assert instant(late[0]["tick"]) == instant(missed["tick"]) + 2
    assert late[0]["job_id"] in {j["job_id"] for j in jobs(node, "latest")}
    disable(node, "none")
    disable(node, "latest")


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    with temporary_database(postgres_url) as url:
        yield url


@pytest.mark.slow
def test_three_nodes_on_postgresql_one_killed_give_one_job_per_tick(
    tmp_path_factory: pytest.TempPathFactory, database: str, site: str
) -> None:
    root = tmp_path_factory.mktemp("schedules-cluster")
    nodes = [
        ScrapydNode(
            root / f"node{i}",
            options={"node_name": f"node{i}", "poll_interval": "0.5"},
            jobstatus={"db": database, "node_timeout": "10"},
        )
        for i in (1, 2, 3)
    ]
    try:
        for node in nodes:
            node.start()
        nodes[0].deploy()
        add(nodes[1], "cluster", every="1", urls=f"{site}/sample/")
        wait_for(lambda: len(jobs(nodes[0], "cluster")) >= 5, timeout=30, what="5 ticks")
        # kill -9 mid-way: whatever it was doing, the others go on.
        process = nodes[1].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed = time.time()
        wait_for(lambda: time.time() - killed > 6, timeout=10, interval=0.2, what="6 s")
        disable(nodes[0], "cluster")
        listed = jobs(nodes[2], "cluster")
        ticks = assert_one_job_per_tick(listed, "cluster", 1)
        assert ticks[-1] > killed + 4
        schedule = shown(nodes[0], "cluster")
        assert (schedule["fired"], schedule["missed"]) == (len(ticks), 0)
        claimed = {line["node"] for line in schedule["history"]}
        assert claimed <= {"node1", "node2", "node3"}
        assert claimed - {"node2"}
    finally:
        for node in nodes:
            node.stop()


def test_ticks_missed_while_the_store_was_away_are_counted_and_firing_goes_on(
    tmp_path_factory: pytest.TempPathFactory, site: str
) -> None:
    with postgres_server() as server, server.database() as url:
        workdir = tmp_path_factory.mktemp("schedules-outage")
        for node in running_node(workdir, jobstatus={"db": url}):
            check_outage(node, server, site)


def check_outage(node: ScrapydNode, server: PostgresServer, site: str) -> None:
    add(node, "outage", every="2", urls=f"{site}/sample/")
    wait_for(lambda: jobs(node, "outage"), what="a first tick")
    server.halt()
    try:
        halted = time.time()
        wait_for(lambda: time.time() - halted > 10, timeout=15, interval=0.2, what="10 s")
    finally:
        server.resume()
    resumed = time.time()

    def fired_after() -> bool:
        if node.get("jobs.json").code != 200:
            return False
        return any(instant(j["scheduled_for"]) > resumed for j in jobs(node, "outage"))

    wait_for(fired_after, timeout=30, what="a tick fired after the outage")
    schedule = shown(node, "outage")
    [missed] = [line for line in schedule["history"] if line["outcome"] == "missed"]
    assert missed["count"] >= 2
    gone = {instant(missed["tick"]) - 2 * i for i in range(missed["count"])}
    fired = {instant(j["scheduled_for"]) for j in jobs(node, "outage")}
    assert not gone & fired
    assert schedule["fired"] == len(fired)
    disable(node, "outage")
