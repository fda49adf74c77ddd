"""End to end: three Scrapyd nodes on one PostgreSQL store behave as one
Scrapyd, with one queue and one job view.

Real parts: three ``scrapyd`` processes with the shipped scrapyd.conf (each
its own port, directory and node_name), a throwaway PostgreSQL server, the
project deployed by scrapyd-deploy to node 1 only, and real crawls of the
local site.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.postgres import temporary_database
from tests.scrapyd_node import PROJECT, ScrapydNode, slow_urls, unique

pytestmark = pytest.mark.slow

MAX_PROC = 2
NODE_TIMEOUT = 10
ENDED = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    with temporary_database(postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[list[ScrapydNode]]:
    root = tmp_path_factory.mktemp("cluster")
    nodes = [
        ScrapydNode(
            root / f"node{i}",
            options={
                "node_name": f"node{i}",
                "max_proc": str(MAX_PROC),
                "poll_interval": "0.5",
                "items_dir": "items",
            },
            # One directory of JOBDIRs for every node: a job paused on one
            # node resumes on another.
            jobstatus={
                "db": database,
                "node_timeout": str(NODE_TIMEOUT),
                "jobdirs": str(root / "jobdirs"),
            },
        )
        for i in (1, 2, 3)
    ]
    try:
        for node in nodes:
            node.start()
        nodes[0].deploy()  # to node 1 only: the egg is in the shared store
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def jobs_of(node: ScrapydNode, prefix: str) -> dict[str, dict]:
    listed = node.get("jobs.json", {"limit": 1000}).json()["jobs"]
    return {j["job_id"]: j for j in listed if j["job_id"].startswith(prefix)}


def wait_ended(node: ScrapydNode, jobs: list[str], timeout: float = 120) -> dict[str, dict]:
    def ended() -> dict[str, dict] | None:
        documents = {job: node.status(job) for job in jobs}
        return documents if all(d["status"] in ENDED for d in documents.values()) else None

    return wait_for(ended, timeout=timeout, interval=0.5, what=f"{len(jobs)} jobs to end")


def crawls_started(nodes: list[ScrapydNode], job: str) -> int:
    """How many crawls of the job the nodes' launchers started, from their
    logs (Scrapyd keeps only the latest crawls' own log files)."""
    line = f"Process started: project='{PROJECT}' spider='batch' job='{job}' "
    return sum(node.log.read_text().count(line) for node in nodes)


def running_on(node: ScrapydNode, name: str, prefix: str) -> list[str]:
    return [
        job
        for job, document in jobs_of(node, prefix).items()
        if document["status"] == "running" and document["node"] == name
    ]


def fill_slots(
    cluster: list[ScrapydNode], site: str, prefix: str, pages: int
) -> tuple[list[str], list[str]]:
    """As many long jobs as the cluster has slots, scheduled on node 1: each
    node runs two. The jobs, and the two node 2 runs."""
    jobs = [f"{prefix}-{i}" for i in range(3 * MAX_PROC)]
    for job in jobs:
        cluster[0].schedule(
            job=job, urls=slow_urls(site, pages, 2), settings={"CONCURRENT_REQUESTS": 1}
        )
    on_second = wait_for(
        lambda: (
            (found := running_on(cluster[0], "node2", prefix)) and len(found) == MAX_PROC and found
        ),
        timeout=60,
        what="node 2 to run two jobs",
    )
    return jobs, on_second


def test_jobs_scheduled_on_one_node_run_once_each_spread_over_every_node(
    cluster: list[ScrapydNode], site: str
):
    first, _, third = cluster
    prefix = unique("spread")
    jobs = [f"{prefix}-{i:02}" for i in range(30)]
    for job in jobs:
        answer = first.schedule(job=job, urls=slow_urls(site, 2, 0.5)).json()
        assert answer == {"status": "ok", "jobid": job, "node_name": "node1"}

    busiest = {node.url: 0 for node in cluster}

    def all_ended() -> bool:
        for node in cluster:  # no node runs more than its max_proc
            running = node.get("daemonstatus.json").json()["running"]
            busiest[node.url] = max(busiest[node.url], running)
        return all(j["status"] in ENDED for j in jobs_of(third, prefix).values())

    wait_for(all_ended, timeout=180, interval=0.2, what="30 jobs to end")
    documents = jobs_of(third, prefix)  # one job view, on any node
    assert sorted(documents) == jobs
    assert {d["status"] for d in documents.values()} == {"completed"}
    ran_on = {d["node"] for d in documents.values()}
    assert ran_on == {"node1", "node2", "node3"}  # the egg went to node 1 only
    assert max(busiest.values()) <= MAX_PROC
    for job in jobs:  # never twice
        assert crawls_started(cluster, job) == 1, job

    # Scrapyd's own listjobs.json: finished jobs of every node, on any node.
    finished = {j["id"] for j in third.get("listjobs.json").json()["finished"]}
    assert set(jobs) <= finished

    nodes = first.get("nodes.json").json()["nodes"]
    assert [(n["name"], n["url"], n["max_proc"], n["alive"]) for n in nodes] == [
        (node.get("daemonstatus.json").json()["node_name"], node.url, MAX_PROC, True)
        for node in cluster
    ]
    assert all("Scrapyd 1.6" in n["version"] for n in nodes)


def test_a_job_running_on_one_node_is_cancelled_through_another(
    cluster: list[ScrapydNode], site: str
):
    _, _, third = cluster
    jobs, on_second = fill_slots(cluster, site, unique("cancel"), pages=20)
    graceful, forced = on_second

    answer = third.post("jobcancel.json", {"job": graceful})
    assert answer.code == 202 and answer.json()["job"]["status"] == "cancelling"
    # Scrapyd's cancel.json, on a node that does not run the job.
    answer = third.post("cancel.json", {"project": PROJECT, "job": forced, "signal": "KILL"})
    assert answer.json()["prevstate"] == "running"
    for job in (graceful, forced):
        done = third.wait_status(job, *ENDED, timeout=60)
        assert (done["status"], done["node"]) == ("cancelled", "node2")
    for job in jobs:
        third.post("jobcancel.json", {"job": job})
    wait_ended(third, jobs)


def test_a_dead_nodes_jobs_fail_naming_it_and_the_others_run_on(
    cluster: list[ScrapydNode], site: str
):
    first, second, third = cluster
    prefix = unique("dead")
    long_jobs, on_second = fill_slots(cluster, site, prefix, pages=12)
    # More than the slots: a queue is waiting.
    queued = [f"{prefix}-queued-{i}" for i in range(4)]
    for job in queued:
        first.schedule(job=job, urls=slow_urls(site, 1, 0.2))

    # kill -9 node 2's scrapyd and one of its crawls; the other crawl lives on.
    doomed, survivor = on_second
    doomed_pid = second.crawl_pid(doomed)
    assert second.process is not None
    second.process.send_signal(signal.SIGKILL)
    os.kill(doomed_pid, signal.SIGKILL)
    second.process.wait(10)
    second.process = None
    try:
        documents = wait_ended(first, long_jobs + queued, timeout=NODE_TIMEOUT + 120)
        assert documents[doomed]["status"] == "failed"
        assert "node 'node2'" in documents[doomed]["error_message"]
        # A crawl still reporting keeps its job, whatever happened to its node.
        assert (documents[survivor]["status"], documents[survivor]["node"]) == (
            "completed",
            "node2",
        )
        others = [job for job in long_jobs + queued if job != doomed]
        assert {documents[job]["status"] for job in others} == {"completed"}
        # The queue went to the living nodes.
        assert {documents[job]["node"] for job in queued} <= {"node1", "node3"}
        alive = {n["name"]: n["alive"] for n in third.get("nodes.json").json()["nodes"]}
        assert alive == {"node1": True, "node2": False, "node3": True}
    finally:
        second.start()


def test_a_job_paused_by_its_nodes_shutdown_resumes_on_another_node(
    cluster: list[ScrapydNode], site: str
):
    first = cluster[0]
    job = unique("pause")
    url = f"{site}/pages/0?links=3&max=60&docs=2&delay=0.3"
    first.schedule(
        "documents",
        job=job,
        url=url,
        settings={"JOBSTATUS_PAUSABLE": "True", "CONCURRENT_REQUESTS": 2},
    )
    running = wait_for(
        lambda: (d := first.status(job))["total_documents_found"] > 10 and d,
        timeout=60,
        what="the job to be half-way",
    )
    stopping = next(
        n for n in cluster if n.get("daemonstatus.json").json()["node_name"] == running["node"]
    )
    others = [n for n in cluster if n is not stopping]
    stopping.stop(kill_crawls=False)  # SIGTERM: its pausable crawl pauses, its job is queued again
    try:
        done = others[0].wait_status(job, *ENDED, timeout=120)
        assert done["status"] == "completed"
        assert done["node"] != running["node"]
        steps = [event["step"] for event in done["history"]]
        assert steps.index("paused") < steps.index("queued again") < steps.index("resumed")
        # Each node wrote the items of its run to its own items file.
        items = [
            json.loads(line)["url"]
            for node in cluster
            for path in (node.workdir / "items").rglob(f"{job}.jl")
            for line in path.read_text().splitlines()
        ]
        assert len(items) == len(set(items)) == 122 == done["total_documents_found"]
        assert len(done["feeds"]) == 2
        assert sum(feed["items"] for feed in done["feeds"]) == 122
    finally:
        stopping.start()
