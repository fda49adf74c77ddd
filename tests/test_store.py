from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from scrapy_jobstatus._model import HistoryEvent, JobError, JobState, JobStatus
from scrapy_jobstatus._store import JobNotFound, JobStore


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "sub" / "jobs.db")
    yield store
    store.close()


def running(job_id: str, **kwargs) -> JobState:
    now = time.time()
    return JobState(job_id=job_id, spider="batch", status=JobStatus.RUNNING, created_at=now,
                    started_at=now, updated_at=now, pid=os.getpid(), node=None, **kwargs)


def pending(job_id: str, **kwargs) -> JobState:
    return JobState(job_id=job_id, spider="batch", project="p", status=JobStatus.PENDING,
                    created_at=time.time(), **kwargs)


def test_the_store_creates_its_directory_and_uses_wal(store, tmp_path):
    assert store.add_job(pending("j1"))
    assert (tmp_path / "sub" / "jobs.db").exists()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_job_id_is_recorded_once(store):
    assert store.add_job(pending("j1"))
    assert not store.add_job(pending("j1"))


def test_a_pending_job_keeps_its_creation_time_and_arguments_when_it_starts(store):
    job = pending("j1", args={"urls": "http://a/"})
    store.add_job(job)
    started = store.start_job(running("j1"))
    assert started.status is JobStatus.RUNNING
    stored = store.get("j1")
    assert stored.status is JobStatus.RUNNING
    assert stored.created_at == job.created_at
    assert stored.args == {"urls": "http://a/"}
    assert stored.project == "p"


def test_a_job_cancelled_while_pending_never_starts(store):
    store.add_job(pending("j1"))
    assert store.request_cancel("j1").code == 200
    assert store.start_job(running("j1")).status is JobStatus.CANCELLED
    assert store.get("j1").status is JobStatus.CANCELLED


def test_cancel_codes_and_idempotence(store):
    store.start_job(running("run"))
    first = store.request_cancel("run")
    assert (first.before, first.after, first.code) == (JobStatus.RUNNING, JobStatus.CANCELLING, 202)
    requested = store.get("run").cancel_requested_at
    assert requested is not None
    again = store.request_cancel("run", force=True)
    assert again.code == 202
    assert store.get("run").cancel_requested_at == requested  # the first request stands

    store.add_job(pending("pend"))
    assert store.request_cancel("pend").code == 200
    assert store.request_cancel("pend").code == 200  # already cancelled: still fine
    record = store.document("pend")
    assert record["status"] == "cancelled" and record["completion_reason"] == "cancelled"

    store.start_job(running("done"))
    done = running("done", completion_reason="done")
    done.status = JobStatus.COMPLETED
    store.save(done)
    before = store.document("done")
    assert store.request_cancel("done").code == 400
    after = store.document("done")
    assert after["status"] == "completed" and after["cancel_requested_at"] is None
    assert after["updated_at"] == before["updated_at"]

    with pytest.raises(JobNotFound):
        store.request_cancel("nope")


def test_save_polls_the_cancel_request_and_its_force_flag(store):
    state = running("j1")
    store.start_job(state)
    assert store.save(state) == (True, None, False)
    store.request_cancel("j1", force=True)
    written, cancel_at, force = store.save(state)
    assert written and cancel_at is not None and force


def test_a_terminal_job_is_never_overwritten(store):
    state = running("j1")
    store.start_job(state)
    assert store.fail_job("j1", "the process died")
    state.total_pages_crawled = 99
    written, _, _ = store.save(state)
    assert not written
    doc = store.document("j1")
    assert doc["status"] == "failed" and doc["total_pages_crawled"] == 0
    assert not store.fail_job("j1", "again")


def test_errors_are_all_kept_and_the_document_holds_the_latest(store):
    state = running("j1")
    store.start_job(state)
    for batch in range(3):
        errors = [JobError(error_type="http_error", error_message=f"HTTP {500 + i}",
                           page_url=f"http://x/{batch}/{i}", http_status=500 + i,
                           timestamp=time.time()) for i in range(10)]
        store.save(state, errors, [HistoryEvent(step=f"step {batch}", timestamp=time.time(),
                                                status="running")])
    assert len(list(store.errors("j1"))) == 30
    doc = store.document("j1", errors_kept=5)
    assert doc["error_count"] == 30
    assert [e["page_url"] for e in doc["errors"]] == [f"http://x/2/{i}" for i in range(5, 10)]
    assert [h["step"] for h in doc["history"]] == ["step 0", "step 1", "step 2"]


def test_listing_is_newest_first_with_filters_and_total(store):
    for i in range(5):
        job = pending(f"j{i}")
        job.created_at = 1000.0 + i
        job.spider = "batch" if i % 2 else "documents"
        store.add_job(job)
    states, total = store.list_jobs(limit=2)
    assert total == 5 and [s.job_id for s in states] == ["j4", "j3"]
    states, total = store.list_jobs(spider="batch")
    assert total == 2 and [s.job_id for s in states] == ["j3", "j1"]
    states, total = store.list_jobs(offset=4)
    assert [s.job_id for s in states] == ["j0"]
    assert store.list_jobs(spider="x' OR '1'='1") == ([], 0)


def test_listing_summaries_carry_each_jobs_error_count(store):
    for job_id, errors in (("a", 3), ("b", 0)):
        state = running(job_id)
        store.start_job(state)
        store.save(state, [JobError(error_type="other", error_message="x", timestamp=1.0)] * errors)
    summaries = {d["job_id"]: d for d in store.summaries(store.list_jobs()[0])}
    assert (summaries["a"]["error_count"], summaries["a"]["has_errors"]) == (3, True)
    assert (summaries["b"]["error_count"], summaries["b"]["has_errors"]) == (0, False)
    assert summaries["a"]["errors"] == [] and summaries["a"]["history"] == []
    assert store.summaries([]) == []
    assert store.list_jobs(status="cancelled") == ([], 0)


def test_prune_keeps_active_jobs_and_the_newest_finished_ones(store):
    for i in range(6):
        job = pending(f"j{i}")
        job.created_at = 1000.0 + i
        store.add_job(job)
        if i < 5:
            store.request_cancel(f"j{i}")  # cancelled now: finished
    assert store.prune(keep=2) == 3
    assert {s.job_id for s in store.list_jobs()[0]} == {"j5", "j4", "j3"}
    assert store.prune(older_than=3600) == 0
    store.conn.execute("UPDATE jobs SET completed_at = 0 WHERE job_id = 'j3'")
    assert store.prune(older_than=3600) == 1
    assert store.get("j5").status is JobStatus.PENDING
    assert list(store.errors("j3")) == []


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_reader_marks_a_job_failed_when_its_process_died(store):
    state = running("j1", interval=1.0)
    state.node = store.node
    state.pid = dead_pid()
    state.updated_at = time.time() - 60
    store.start_job(state)
    store.conn.execute("UPDATE jobs SET updated_at = ? WHERE job_id = 'j1'", (state.updated_at,))
    doc = store.document("j1")
    assert doc["status"] == "failed"
    assert doc["completion_reason"] == "error"
    assert "died" in doc["error_message"] and str(state.pid) in doc["error_message"]
    assert doc["history"][-1]["step"] == "failed"
    # recorded, not just reported
    assert JobStore(store.path).get("j1").status is JobStatus.FAILED


@pytest.mark.parametrize("case", ["alive", "fresh heartbeat", "other node"])
def test_a_reader_leaves_a_live_or_remote_job_alone(store, case):
    state = running("j1", interval=1.0)
    state.node = store.node if case != "other node" else "elsewhere"
    state.pid = os.getpid() if case == "alive" else dead_pid()
    state.updated_at = time.time() - (1 if case == "fresh heartbeat" else 60)
    store.start_job(state)
    store.conn.execute("UPDATE jobs SET updated_at = ? WHERE job_id = 'j1'", (state.updated_at,))
    assert store.get("j1").status is JobStatus.RUNNING


def _writer(path: str, job_id: str, rounds: int, expect_cancel: bool) -> None:
    store = JobStore(path)
    state = running(job_id)
    store.start_job(state)
    cancel_seen = None
    for i in range(rounds):
        state.total_pages_crawled = i + 1
        _, cancel_seen, _ = store.save(
            state, [JobError(error_type="other", error_message=f"e{i}", timestamp=time.time())],
            [HistoryEvent(step=f"tick {i}", timestamp=time.time(), status="running")])
    deadline = time.monotonic() + 30
    while expect_cancel and cancel_seen is None and time.monotonic() < deadline:
        _, cancel_seen, _ = store.save(state)
    if expect_cancel and cancel_seen is None:
        raise SystemExit("the cancel request never reached the crawl")
    state.status = JobStatus.CANCELLED if expect_cancel else JobStatus.COMPLETED
    store.save(state)


def _canceller(path: str, job_ids: list[str]) -> None:
    store = JobStore(path)
    for job_id in job_ids:
        while True:
            try:
                store.request_cancel(job_id)
                break
            except JobNotFound:
                time.sleep(0.001)


def test_concurrent_writers_and_readers_lose_nothing(tmp_path):
    path = str(tmp_path / "jobs.db")
    JobStore(path).conn  # schema first
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(path, f"w{i}", 200, i < 2)) for i in range(4)]
    canceller = context.Process(target=_canceller, args=(path, ["w0", "w1"]))
    for process in [*writers, canceller]:
        process.start()
    reader = JobStore(path)
    reads = 0
    while any(p.is_alive() for p in writers):
        jobs, _ = reader.list_jobs()
        for job in jobs:
            reader.document(job.job_id)
        reads += 1
    for process in [*writers, canceller]:
        process.join(60)
        assert process.exitcode == 0
    assert reads > 0
    for i in range(4):
        doc = reader.document(f"w{i}", errors_kept=1000)
        assert doc["total_pages_crawled"] == 200
        assert doc["error_count"] == 200
        assert len(doc["history"]) == 200
    # A cancel request written between two saves of the crawl is never lost:
    # the crawl saw it (or its process exited non-zero) and it is still stored.
    for job_id in ("w0", "w1"):
        assert reader.get(job_id).cancel_requested_at is not None
        assert reader.get(job_id).status is JobStatus.CANCELLED


@pytest.mark.parametrize("errors_kept", [0, 1, 20, 100, 150])
def test_the_rendered_document_is_what_a_full_read_gives(store, errors_kept):
    store.add_job(pending("pend"))
    state = running("run")
    store.start_job(state)
    store.save(state, [JobError(error_type="other", error_message=f"e{i}", timestamp=float(i))
                       for i in range(120)],
               [HistoryEvent(step="opened", timestamp=1.0, status="running")])
    store.request_cancel("run")
    done = running("done")
    store.start_job(done)
    done.status = JobStatus.COMPLETED
    store.save(done)
    for job_id in ("pend", "run", "done"):
        fast = store.document(job_id, errors_kept)
        full = store._document(store.get(job_id), errors_kept)
        if fast["running_time"] is not None:
            assert fast["running_time"] == pytest.approx(full["running_time"], abs=0.5)
            fast["running_time"] = full["running_time"]
        assert fast == full
    assert store.document("run", errors_kept)["status"] == "cancelling"
    assert len(store.document("run", errors_kept)["errors"]) == min(errors_kept, 120)
