"""The store's queue, nodes and eggs, on both backends: what a cluster of
Scrapyd nodes shares."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from scrapy_jobstatus._model import JobState, JobStatus, pending_job
from scrapy_jobstatus._store import NodeInfo, StoreError, open_store
from tests.test_store import execute, opened, schema_version


def queued(job_id: str, priority: float = 0.0, created_at: float | None = None, project="p"):
    return pending_job(
        job_id, project=project, spider="s", node=None, priority=priority, created_at=created_at
    )


def node(name: str, last_seen: float, running: int = 0) -> NodeInfo:
    return NodeInfo(name, f"http://{name}/", 2, running, "1.0", last_seen - 60, last_seen)


def seen(store, name: str, last_seen: float, running: int = 0) -> float:
    """A heartbeat recorded at a given time (a node's, long ago)."""
    return store.beat(node(name, last_seen, running), store_clock=False)


def running(job_id: str, node: str, updated_at: float, **fields) -> JobState:
    return JobState(
        job_id=job_id, spider="s", status=JobStatus.RUNNING, node=node, pid=1, interval=1.0,
        created_at=updated_at - 100, started_at=updated_at - 100, updated_at=updated_at, **fields,
    )  # fmt: skip


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
    now = store.clock()
    store.beat(node("alive", 0))
    seen(store, "dead", now - 100)
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
    # Crawls written before leases: judged by their heartbeat.
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


def test_heartbeats_are_recorded_at_the_stores_clock(store):
    before = time.time()
    recorded = store.beat(node("n", 12.0))  # the node's own clock is not used
    after = time.time()
    # The store's clock is this machine's: a server on another would differ.
    assert before - 1 <= recorded <= after + 1
    assert store.clock() >= recorded
    assert [n.last_seen for n in store.nodes()] == [recorded]


def test_a_crawl_keeps_its_job_while_its_lease_holds_whatever_its_node(store):
    now = store.clock()
    seen(store, "dead", now - 100)
    # Its last write was long ago by its own clock, but its lease, by the
    # store's, holds.
    store.start_job(running("held", "dead", updated_at=now - 60), lease=60)
    assert store.reap_dead_nodes(timeout=30) == []
    assert store.get("held").status is JobStatus.RUNNING
    # A lease that has run out: taken over.
    store.start_job(running("lapsed", "dead", updated_at=now), lease=-1)
    assert [(r.job_id, r.requeued) for r in store.reap_dead_nodes(timeout=30)] == [
        ("lapsed", False)
    ]
    assert store.get("lapsed").status is JobStatus.FAILED


def test_a_save_renews_the_lease(store):
    now = store.clock()
    seen(store, "dead", now - 100)
    state = running("renewed", "dead", updated_at=now)
    store.start_job(state, lease=-1)  # run out
    assert store.save(state, lease=60).written
    assert store.reap_dead_nodes(timeout=30) == []
    assert store.save(state, lease=-1).written
    assert len(store.reap_dead_nodes(timeout=30)) == 1


def test_a_job_taken_over_is_retried_its_attempt_superseded_and_the_old_crawl_locked_out(store):
    now = store.clock()
    seen(store, "cut-off", now - 100)
    first = running("retried", "cut-off", updated_at=now, retries=1, retry_delay=0.0)
    store.start_job(first, lease=-1)
    assert store.reap_dead_nodes(timeout=30)[0].job_id == "retried"
    document = store.document("retried")
    assert (document["status"], document["attempt"]) == ("pending", 2)
    superseded = document["attempts"][0]
    assert (superseded["attempt"], superseded["status"], superseded["node"]) == (
        1,
        "superseded",
        "cut-off",
    )
    assert "node 'cut-off'" in superseded["error_message"]
    assert [e["step"] for e in document["history"]][-2:] == ["failed", "retry"]

    # The cut-off crawl's write, while the next attempt waits: refused.
    first.updated_at = store.clock()
    result = store.save(first, lease=20)
    assert result.lost and result.status == "pending"
    # The next attempt runs on another node; the old crawl still cannot write.
    second = running("retried", "other", updated_at=store.clock())
    assert store.start_job(second, lease=20).started and second.attempt == 2
    first.total_pages_crawled = 99
    assert store.save(first, lease=20).lost
    assert store.save(second, lease=20).written
    document = store.document("retried")
    assert (document["node"], document["attempt"], document["total_pages_crawled"]) == (
        "other",
        2,
        0,
    )
    assert [a["status"] for a in document["attempts"]] == ["superseded", "running"]


def test_a_store_of_version_6_keeps_each_jobs_attempt(location, monkeypatch):
    from scrapy_jobstatus import _postgres, _sqlite

    backend = _postgres if location.startswith("postgresql://") else _sqlite
    with monkeypatch.context() as m:
        m.setattr(backend, "_MIGRATIONS", backend._MIGRATIONS[:6])
        m.setattr(backend, "SCHEMA_VERSION", 6)
        with opened(location) as store:
            store.get("j")  # makes the schema of version 6
    execute(
        location,
        "INSERT INTO jobs (job_id, project, spider, status, node, created_at, state)"
        """ VALUES ('j', 'p', 's', 'running', 'n', 1.0, '{"attempt": 3}')""",
    )
    with opened(location) as store:
        assert store.get("j").attempt == 3
        # Its crawl's writes go on (the attempt that holds the job).
        assert store.save(running("j", "n", updated_at=2.0, attempt=3), lease=20).written
    assert schema_version(location) == backend.SCHEMA_VERSION


def test_heartbeats_update_a_node(store):
    seen(store, "b", 100.0)
    seen(store, "a", 50.0)
    seen(store, "b", 200.0, running=2)
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
    seen(store, "gone-long-ago", store.clock() - 2 * 86400)
    store.beat(node("recent", 0))
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
