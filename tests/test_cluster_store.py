"""The store's queue, nodes and eggs, on both backends: what a cluster of
Scrapyd nodes shares."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from scrapy_jobstatus._model import JobState, JobStatus, pending_job
from scrapy_jobstatus._store import NodeInfo, StoreError, open_store
from tests.test_store import opened


def queued(job_id: str, priority: float = 0.0, created_at: float | None = None, project="p"):
    return pending_job(
        job_id, project=project, spider="s", node=None, priority=priority, created_at=created_at
    )


def node(name: str, last_seen: float, running: int = 0) -> NodeInfo:
    return NodeInfo(name, f"http://{name}/", 2, running, "1.0", last_seen - 60, last_seen)


def test_jobs_are_claimed_by_priority_then_age_and_once(store):
    store.add_pending(queued("old", created_at=1.0))
    store.add_pending(queued("new", created_at=2.0))
    store.add_pending(queued("urgent", priority=5, created_at=3.0))
    store.add_pending(queued("other", created_at=0.5, project="q"))
    store.add_pending(queued("cancelled", priority=9))
    store.request_cancel("cancelled")
    assert [s.job_id for s in store.queued_jobs()] == ["urgent", "other", "old", "new"]
    assert [s.job_id for s in store.queued_jobs("p")] == ["urgent", "old", "new"]
    assert store.count_queued() == 4 and store.count_queued("q") == 1

    assert store.claim_job("n1", "p").job_id == "urgent"
    claimed = store.claim_job("n2")
    assert claimed.job_id == "other" and claimed.node == "n2"
    assert [store.claim_job("n1").job_id for _ in range(2)] == ["old", "new"]
    assert store.claim_job("n1") is None and store.count_queued() == 0
    # Claimed, not started: pending, with its node.
    assert store.get("other").status is JobStatus.PENDING and store.get("other").node == "n2"


def test_the_queue_keeps_what_scrapyd_needs_to_run_the_job(store):
    store.add_pending(
        pending_job(
            "j",
            project="p",
            spider="s",
            node=None,
            args={"a": "1"},
            settings={"X": "2"},
            priority=1.5,
            version="r7",
        )
    )
    claimed = store.claim_job("n")
    assert (claimed.args, claimed.settings, claimed.priority, claimed.version) == (
        {"a": "1"},
        {"X": "2"},
        1.5,
        "r7",
    )


def _claim_all(where: str, barrier, results) -> None:
    barrier.wait(30)
    with opened(where) as claimer:
        name = f"n{multiprocessing.current_process().name}"
        while (job := claimer.claim_job(name)) is not None:
            results.put(job.job_id)


def test_nodes_claiming_at_once_never_get_the_same_job(store, location):
    for i in range(200):
        store.add_pending(queued(f"j{i:03}"))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    claimers = [
        context.Process(target=_claim_all, args=(location, barrier, results)) for _ in range(4)
    ]
    for p in claimers:
        p.start()
    claimed = [results.get(timeout=120) for _ in range(200)]
    for p in claimers:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(claimed) == [f"j{i:03}" for i in range(200)]  # each once
    assert results.empty() and store.count_queued() == 0


def test_a_dead_nodes_jobs_fail_naming_it_unless_their_crawl_still_reports(store):
    now = time.time()
    store.beat(node("alive", now))
    store.beat(node("dead", now - 100))
    stale = JobState(
        job_id="stale", spider="s", status=JobStatus.RUNNING, node="dead", pid=1,
        interval=1.0, created_at=now - 200, started_at=now - 200, updated_at=now - 60,
    )  # fmt: skip
    fresh = JobState(
        job_id="fresh", spider="s", status=JobStatus.RUNNING, node="dead", pid=2,
        interval=1.0, created_at=now - 200, started_at=now - 200, updated_at=now,
    )  # fmt: skip
    other = JobState(
        job_id="other", spider="s", status=JobStatus.RUNNING, node="alive", pid=3,
        interval=1.0, created_at=now - 200, started_at=now - 200, updated_at=now - 60,
    )  # fmt: skip
    for state in (stale, fresh, other):
        store.start_job(state)
    store.add_pending(queued("claimed"))
    store.claim_job("dead")

    reaped = store.reap_dead_nodes(timeout=30)
    assert sorted((r.job_id, r.node, r.requeued) for r in reaped) == [
        ("claimed", "dead", True),
        ("stale", "dead", False),
    ]
    failed = store.document("stale")
    assert failed["status"] == "failed" and "node 'dead'" in failed["error_message"]
    assert store.get("fresh").status is JobStatus.RUNNING
    assert store.get("other").status is JobStatus.RUNNING  # its node lives: not this check's
    assert [s.job_id for s in store.queued_jobs()] == ["claimed"]
    assert store.reap_dead_nodes(timeout=30) == []  # once


def test_heartbeats_update_a_node(store):
    store.beat(node("b", 100.0))
    store.beat(node("a", 50.0))
    store.beat(node("b", 200.0, running=2))
    nodes = store.nodes()
    assert [(n.name, n.last_seen, n.running) for n in nodes] == [("a", 50.0, 0), ("b", 200.0, 2)]
    shown = nodes[1].to_dict(now=210.0, timeout=30)
    assert shown["alive"] and shown["last_seen"].startswith("1970-01-01T00:03:20")
    assert not nodes[0].to_dict(now=210.0, timeout=30)["alive"]


def test_eggs_are_kept_by_project_and_version(store):
    egg = bytes(range(256)) * 1000  # binary, 256 kB
    store.put_egg("p", "r1", egg)
    store.put_egg("p", "r2", b"two")
    store.put_egg("q", "r1", b"q1")
    store.put_egg("p", "r1", b"one again")  # a version deployed again replaces it
    assert store.egg_projects() == ["p", "q"]
    assert store.egg_versions("p") == ["r2", "r1"]
    assert store.get_egg("p", "r1") == b"one again" and store.get_egg("p", "r9") is None
    store.put_egg("q", "big", egg)
    assert store.get_egg("q", "big") == egg
    assert store.delete_eggs("p", "r2") == 1 and store.egg_versions("p") == ["r1"]
    assert store.delete_eggs("q") == 2 and store.egg_projects() == ["p"]


def test_a_reader_sees_the_queue_and_cannot_claim(location):
    with opened(location) as writer:
        writer.add_pending(queued("j"))
    reader = open_store(location, readonly=True)
    try:
        assert reader.count_queued() == 1
        with pytest.raises(StoreError):
            reader.claim_job("n")
    finally:
        reader.close()
    with opened(location) as writer:
        assert writer.claim_job("n").job_id == "j"


def test_finished_jobs_are_those_whose_crawl_ran_latest_end_first(store):
    now = time.time()
    for i, job in enumerate(("first", "second", "third")):
        state = JobState(
            job_id=job, spider="s", status=JobStatus.RUNNING, pid=100 + i,
            created_at=now, started_at=now, updated_at=now,
        )  # fmt: skip
        store.start_job(state)
    store.add_pending(queued("never-ran"))
    store.request_cancel("never-ran")  # cancelled while pending: it never ran
    store.end_job("second", JobStatus.FAILED, "died", unstarted=False)
    store.end_job("first", JobStatus.FAILED, "died", unstarted=False)
    assert [s.job_id for s in store.finished_jobs(10)] == ["first", "second"]
    assert store.count_finished(10) == 2 and store.count_finished(1) == 1
    assert [s.job_id for s in store.finished_jobs(1)] == ["first"]


def test_a_restarted_node_gives_back_its_unstarted_claims_and_old_nodes_go(store):
    store.add_pending(queued("mine", created_at=1.0))
    store.add_pending(queued("young", created_at=time.time()))
    store.claim_job("n1")
    assert store.requeue_claims("n1") == ["mine"] and store.requeue_claims("n2") == []
    assert [s.job_id for s in store.queued_jobs(created_before=10.0)] == ["mine"]
    store.beat(node("gone-long-ago", time.time() - 2 * 86400))
    store.beat(node("recent", time.time()))
    store.reap_dead_nodes(timeout=30)
    assert [n.name for n in store.nodes()] == ["recent"]


def test_sqlite_claims_through_the_queue_index(sqlite_store):
    sqlite_store.add_pending(queued("q"))
    plan = sqlite_store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs INDEXED BY jobs_queue"
        " WHERE status = 'pending' AND node IS NULL ORDER BY priority DESC, created_at, id"
    ).fetchall()
    assert any("jobs_queue" in row[-1] for row in plan) and not any(
        "TEMP B-TREE" in row[-1] for row in plan
    )
    assert sqlite_store.claim_job("n").job_id == "q"
