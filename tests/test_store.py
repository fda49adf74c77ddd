from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scrapy_jobstatus._model import HistoryEvent, JobError, JobState, JobStatus, pending_job
from scrapy_jobstatus._store import (
    JobFilter,
    JobNotFound,
    StoreError,
    open_store,
    process_alive,
)
from tests.postgres import PASSWORD, PASSWORD_ROLE, free_port, temporary_database

ALL = JobFilter()


@pytest.fixture
def pg_location(postgres_url) -> Iterator[str]:
    with temporary_database(postgres_url) as url:
        yield url


@contextlib.contextmanager
def opened(location, readonly=False):
    store = open_store(location, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


def execute(location: str, sql: str) -> None:
    """Change a store behind its back."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(sql)
    else:
        with contextlib.closing(sqlite3.connect(location)) as conn, conn:
            conn.execute(sql)


def save_errors(store, state, errors, events=()):
    """What a crawl does: count its errors, then write them once."""
    state.error_count += len(errors)
    return store.save(state, errors, events)


def ids(page):
    return [s.job_id for s in page.jobs]


def running(job_id: str, **kwargs) -> JobState:
    now = time.time()
    return JobState(
        job_id=job_id,
        spider="batch",
        status=JobStatus.RUNNING,
        created_at=now,
        started_at=now,
        updated_at=now,
        pid=os.getpid(),
        node=None,
        **kwargs,
    )


def pending(job_id: str, args=None, created_at=None, spider="batch") -> JobState:
    return pending_job(
        job_id, project="p", spider=spider, node="n", args=args, created_at=created_at
    )


def test_the_store_creates_its_directory_and_uses_wal(sqlite_store, tmp_path):
    assert sqlite_store.add_pending(pending("j1"))
    assert (tmp_path / "sub" / "jobs.db").exists()
    assert sqlite_store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_job_id_is_recorded_once(store):
    assert store.add_pending(pending("j1"))
    assert not store.add_pending(pending("j1"))


def test_a_pending_job_keeps_its_creation_time_and_arguments_when_it_starts(store):
    job = pending("j1", args={"urls": "http://a/"})
    store.add_pending(job)
    started = store.start_job(running("j1"))
    assert started.started and started.job.status is JobStatus.RUNNING
    stored = store.get("j1")
    assert stored.status is JobStatus.RUNNING
    assert stored.created_at == job.created_at
    assert stored.args == {"urls": "http://a/"}
    assert stored.project == "p"


def test_a_job_cancelled_while_pending_never_starts(store):
    store.add_pending(pending("j1"))
    assert store.request_cancel("j1").after is JobStatus.CANCELLED
    refused = store.start_job(running("j1"))
    assert not refused.started and refused.job.status is JobStatus.CANCELLED
    assert store.get("j1").status is JobStatus.CANCELLED


def test_cancel_results_and_idempotence(store):
    store.start_job(running("run"))
    first = store.request_cancel("run")
    assert (first.before, first.after) == (JobStatus.RUNNING, JobStatus.CANCELLING)
    requested = store.get("run").cancel_requested_at
    assert requested is not None
    again = store.request_cancel("run", force=True)
    assert again.after is JobStatus.CANCELLING
    assert store.get("run").cancel_requested_at == requested  # the first request stands

    store.add_pending(pending("pend"))
    assert store.request_cancel("pend").after is JobStatus.CANCELLED
    # already cancelled: still fine
    assert store.request_cancel("pend").before is JobStatus.CANCELLED
    record = store.document("pend")
    assert record["status"] == "cancelled" and record["completion_reason"] == "cancelled"

    store.start_job(running("done"))
    done = running("done", completion_reason="done")
    done.status = JobStatus.COMPLETED
    store.save(done)
    before = store.document("done")
    assert store.request_cancel("done").after is JobStatus.COMPLETED
    after = store.document("done")
    assert after["status"] == "completed" and after["cancel_requested_at"] is None
    assert after["updated_at"] == before["updated_at"]

    with pytest.raises(JobNotFound):
        store.request_cancel("nope")


def test_save_polls_the_cancel_request_and_its_force_flag(store):
    state = running("j1")
    store.start_job(state)
    first = store.save(state)
    assert (first.written, first.cancel_requested_at, first.cancel_force) == (True, None, False)
    store.request_cancel("j1", force=True)
    polled = store.save(state)
    assert polled.written and polled.cancel_requested_at is not None and polled.cancel_force


def test_a_write_that_fails_leaves_nothing_of_it_behind(store):
    state = running("j1")
    store.start_job(state)
    errors = [JobError(error_type="http_error", error_message="HTTP 404", http_status=404)]
    events = [HistoryEvent(step="parsing", timestamp=time.time(), status="running")]
    # A job without a heartbeat has no point of the series to write: the
    # write fails after its errors and events, which go with it.
    state.updated_at = None
    with pytest.raises(StoreError):
        save_errors(store, state, errors, events)
    assert store.errors("j1") == [] and store.document("j1")["error_count"] == 0
    assert "parsing" not in [e.step for e in store.history("j1")]
    state.updated_at = time.time()
    assert store.save(state, errors, events).written
    assert len(store.errors("j1")) == 1 and store.document("j1")["error_count"] == 1
    assert [e.step for e in store.history("j1")].count("parsing") == 1


def test_a_terminal_job_is_never_overwritten(store):
    state = running("j1")
    store.start_job(state)
    assert store.end_job("j1", JobStatus.FAILED, "the process died", unstarted=False)
    state.total_pages_crawled = 99
    assert not store.save(state).written
    doc = store.document("j1")
    assert doc["status"] == "failed" and doc["total_pages_crawled"] == 0
    assert not store.end_job("j1", JobStatus.FAILED, "again", unstarted=False)


def test_errors_are_all_kept_and_the_document_holds_the_latest(store):
    state = running("j1")
    store.start_job(state)
    for batch in range(3):
        errors = [
            JobError(
                error_type="http_error",
                error_message=f"HTTP {500 + i}",
                page_url=f"http://x/{batch}/{i}",
                http_status=500 + i,
                timestamp=time.time(),
            )
            for i in range(10)
        ]
        save_errors(
            store,
            state,
            errors,
            [HistoryEvent(step=f"step {batch}", timestamp=time.time(), status="running")],
        )
    assert len(store.errors("j1")) == 30
    # In batches, after an error id: the report's stream.
    first = store.errors("j1", limit=12)
    rest = store.errors("j1", after=first[-1].error_id)
    assert [e.page_url for e in first + rest] == [e.page_url for e in store.errors("j1")]
    doc = store.document("j1", errors_kept=5)
    assert doc["error_count"] == 30
    assert [e["page_url"] for e in doc["errors"]] == [f"http://x/2/{i}" for i in range(5, 10)]
    assert [h["step"] for h in doc["history"]] == ["step 0", "step 1", "step 2"]


def test_listing_is_newest_first_with_filters_and_total(store):
    for i in range(5):
        store.add_pending(
            pending(f"j{i}", created_at=1000.0 + i, spider="batch" if i % 2 else "documents")
        )
    page = store.list_jobs(ALL, limit=2)
    assert page.total == 5 and ids(page) == ["j4", "j3"]
    page = store.list_jobs(JobFilter(spider="batch"))
    assert page.total == 2 and ids(page) == ["j3", "j1"] and page.next_cursor is None
    assert ids(store.list_jobs(ALL, offset=4)) == ["j0"]
    page = store.list_jobs(JobFilter(spider="x' OR '1'='1"))
    assert (page.jobs, page.total) == ([], 0)


def test_a_cursor_pages_through_every_job_once_in_order(store):
    for i in range(7):
        # Two jobs per creation time: the cursor keeps them apart.
        store.add_pending(pending(f"j{i}", created_at=1000.0 + i // 2))
    seen, cursor = [], None
    while True:
        page = store.list_jobs(ALL, limit=3, cursor=cursor)
        assert page.total == 7
        seen += ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids(store.list_jobs(ALL, limit=100))
    assert sorted(seen) == [f"j{i}" for i in range(7)]


def test_listing_summaries_carry_each_jobs_error_count(store):
    for job_id, errors in (("a", 3), ("b", 0)):
        state = running(job_id)
        store.start_job(state)
        save_errors(
            store, state, [JobError(error_type="other", error_message="x", timestamp=1.0)] * errors
        )
    summaries = {s.job_id: s.to_document([], [], time.time()) for s in store.list_jobs(ALL).jobs}
    assert (summaries["a"]["error_count"], summaries["a"]["has_errors"]) == (3, True)
    assert (summaries["b"]["error_count"], summaries["b"]["has_errors"]) == (0, False)
    assert store.list_jobs(JobFilter(status="cancelled")).total == 0


def test_prune_keeps_active_jobs_and_the_newest_finished_ones(store, location):
    for i in range(6):
        job = pending(f"j{i}")
        job.created_at = 1000.0 + i
        store.add_pending(job)
        if i < 5:
            store.request_cancel(f"j{i}")  # cancelled now: finished
    assert store.prune(keep=2) == 3
    assert set(ids(store.list_jobs(ALL))) == {"j5", "j4", "j3"}
    assert store.prune(older_than=3600) == 0
    execute(location, "UPDATE jobs SET completed_at = 0 WHERE job_id = 'j3'")
    assert store.prune(older_than=3600) == 1
    assert store.get("j5").status is JobStatus.PENDING
    assert store.errors("j3") == []


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_reaping_ends_a_job_whose_process_died_and_reads_never_do(store):
    state = running("j1", interval=1.0)
    state.node = store.node
    state.pid = dead_pid()
    state.updated_at = time.time() - 60
    store.start_job(state)
    # A read reports what is stored: reads never write.
    assert store.document("j1")["status"] == "running"
    assert store.reap_dead_jobs(store.node, process_alive) == ["j1"]
    doc = store.document("j1")
    assert doc["status"] == "failed"
    assert doc["completion_reason"] == "error"
    assert "died" in doc["error_message"] and str(state.pid) in doc["error_message"]
    assert doc["history"][-1]["step"] == "failed"
    assert store.reap_dead_jobs(store.node, process_alive) == []


@pytest.mark.parametrize("case", ["alive", "fresh heartbeat", "other node"])
def test_reaping_leaves_a_live_or_remote_job_alone(store, case):
    state = running("j1", interval=1.0)
    state.node = store.node if case != "other node" else "elsewhere"
    state.pid = os.getpid() if case == "alive" else dead_pid()
    state.updated_at = time.time() - (1 if case == "fresh heartbeat" else 60)
    store.start_job(state)
    assert store.reap_dead_jobs(store.node, process_alive) == []
    assert store.get("j1").status is JobStatus.RUNNING


def test_a_zombie_process_is_dead():
    # Ended but not waited for by its parent: kill(pid, 0) still succeeds.
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    try:
        assert not process_alive(process.pid)
        assert process_alive(os.getpid())
    finally:
        process.wait()


def test_a_deleted_store_file_gets_the_record_again_from_the_crawl(sqlite_store):
    store = sqlite_store
    state = running("j1")
    store.start_job(state)
    save_errors(store, state, [JobError(error_type="other", error_message="e", timestamp=1.0)])
    os.unlink(store.location)
    history = [
        HistoryEvent(step="opened", timestamp=1.0, status="running"),
        HistoryEvent(step="tick", timestamp=2.0, status="running"),
    ]
    state.total_pages_crawled = 5
    result = store.save(state, [], history[1:], history)
    assert result.written and result.recreated
    with opened(store.location, readonly=True) as fresh:
        doc = fresh.document("j1")
    assert doc["total_pages_crawled"] == 5 and doc["error_count"] == 1
    assert [h["step"] for h in doc["history"]] == ["opened", "tick"]
    assert not store.save(state).recreated


def test_a_deleted_record_is_written_again_from_the_crawl(store, location):
    state = running("j1")
    store.start_job(state)
    save_errors(store, state, [JobError(error_type="other", error_message="e", timestamp=1.0)])
    for table, key in (("errors", "job"), ("events", "job"), ("jobs", "id")):
        execute(location, f"DELETE FROM {table} WHERE {key} IN (SELECT id FROM jobs)")  # noqa: S608
    history = [
        HistoryEvent(step="opened", timestamp=1.0, status="running"),
        HistoryEvent(step="tick", timestamp=2.0, status="running"),
    ]
    state.total_pages_crawled = 5
    result = store.save(state, [], history[1:], history)
    assert result.written and result.recreated
    doc = store.document("j1")
    assert doc["total_pages_crawled"] == 5 and doc["error_count"] == 1
    assert [h["step"] for h in doc["history"]] == ["opened", "tick"]
    assert not store.save(state).recreated


def test_a_store_of_a_newer_schema_is_refused_in_one_line(tmp_path):
    path = tmp_path / "jobs.db"
    open_store(path).get("x")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError) as info:
        open_store(path).get("x")
    assert "schema version 99" in str(info.value) and "\n" not in str(info.value)


def test_a_finished_job_without_errors_takes_at_most_1_5_kb(tmp_path):
    path = tmp_path / "jobs.db"
    store = open_store(path)
    for i in range(2000):
        state = running(f"{i:032x}", interval=1.0)
        state.project = "crawler"
        state.args = {"urls": "https://example.com/a,https://example.com/b"}
        store.start_job(state)
        events = [
            HistoryEvent(
                step=step, timestamp=time.time(), status="running", duration_ms=12, details=details
            )
            for step, details in (
                ("opened", "pid 4242"),
                ("stage fetch", None),
                ("first response", "https://example.com/a"),
                ("closing", "close reason finished"),
                ("stage finalizing", None),
                ("feeds closed", None),
            )
        ]
        state.total_pages_crawled = state.total_documents_found = 2
        state.responses_finished = 2
        state.progress = 100.0
        state.stages_completed = ["fetch", "finalizing"]
        state.status = JobStatus.COMPLETED
        state.completion_reason = "done"
        state.close_reason = "finished"
        state.message = "The job completed."
        state.completed_at = time.time()
        store.save(state, [], events)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.conn.execute("VACUUM")
    assert os.path.getsize(path) / 2000 <= 1536


def _writer(path: str, job_id: str, rounds: int, expect_cancel: bool) -> None:
    with opened(path) as store:
        _write_job(store, job_id, rounds, expect_cancel)


def _write_job(store, job_id: str, rounds: int, expect_cancel: bool) -> None:
    state = running(job_id)
    store.start_job(state)
    cancel_seen = None
    for i in range(rounds):
        state.total_pages_crawled = i + 1
        cancel_seen = save_errors(
            store,
            state,
            [JobError(error_type="other", error_message=f"e{i}", timestamp=time.time())],
            [HistoryEvent(step=f"tick {i}", timestamp=time.time(), status="running")],
        ).cancel_requested_at
    deadline = time.monotonic() + 30
    while expect_cancel and cancel_seen is None and time.monotonic() < deadline:
        cancel_seen = store.save(state).cancel_requested_at
    if expect_cancel and cancel_seen is None:
        raise SystemExit("the cancel request never reached the crawl")
    state.status = JobStatus.CANCELLED if expect_cancel else JobStatus.COMPLETED
    store.save(state)


def _canceller(path: str, job_ids: list[str]) -> None:
    with opened(path) as store:
        for job_id in job_ids:
            while True:
                try:
                    store.request_cancel(job_id)
                    break
                except JobNotFound:
                    time.sleep(0.001)


def test_concurrent_writers_and_readers_lose_nothing(location):
    path = location
    with opened(path) as store:
        store.get("w0")  # schema first
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(path, f"w{i}", 200, i < 2)) for i in range(4)]
    canceller = context.Process(target=_canceller, args=(path, ["w0", "w1"]))
    for process in [*writers, canceller]:
        process.start()
    reader = open_store(path, readonly=True)
    try:
        _read_while_they_write(reader, writers, canceller)
    finally:
        reader.close()


def _read_while_they_write(reader, writers, canceller) -> None:
    reads = 0
    while any(p.is_alive() for p in writers):
        for job in reader.list_jobs(ALL).jobs:
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


@pytest.mark.parametrize("errors_kept", [0, 1, 20, 150])
def test_the_document_holds_the_latest_errors_and_shows_a_cancel_request(store, errors_kept):
    state = running("run")
    store.start_job(state)
    save_errors(
        store,
        state,
        [
            JobError(error_type="other", error_message=f"e{i}", timestamp=float(i))
            for i in range(120)
        ],
    )
    store.request_cancel("run")
    doc = store.document("run", errors_kept)
    assert doc["status"] == "cancelling" and doc["error_count"] == 120
    assert [e["error_message"] for e in doc["errors"]] == [
        f"e{i}" for i in range(120 - min(errors_kept, 120), 120)
    ]


# -- PostgreSQL ------------------------------------------------------------------


def test_a_postgres_store_of_a_newer_schema_is_refused_in_one_line(pg_location):
    with opened(pg_location) as store:
        store.get("x")
    execute(pg_location, "UPDATE jobstatus_schema SET version = 99")
    for readonly in (False, True):
        with opened(pg_location, readonly=readonly) as store, pytest.raises(StoreError) as info:
            store.get("x")
        message = str(info.value)
        assert "schema version 99" in message and "upgrade scrapy-jobstatus" in message
        assert "\n" not in message


def test_a_store_of_schema_version_1_is_upgraded_by_its_first_writer(location, monkeypatch):
    from scrapy_jobstatus import _postgres, _sqlite

    backend = _postgres if location.startswith("postgresql://") else _sqlite
    # A store made by the release of schema version 1.
    with monkeypatch.context() as m:
        m.setattr(backend, "_MIGRATIONS", backend._MIGRATIONS[:1])
        m.setattr(backend, "SCHEMA_VERSION", 1)
        with opened(location) as store:
            store.get("j1")  # makes the schema
    execute(
        location,
        "INSERT INTO jobs (job_id, project, spider, status, node, created_at, state)"
        " VALUES ('j1', 'p', 'batch', 'pending', 'n', 1.0, '{}')",
    )
    # A reader cannot upgrade it: it says how, in one line.
    with opened(location, readonly=True) as reader, pytest.raises(StoreError) as info:
        reader.get("j1")
    assert "schema version 1, older" in str(info.value) and "\n" not in str(info.value)
    with opened(location) as store:
        assert store.get("j1").status is JobStatus.PENDING
        store.add_pending(pending_job("q1", project="p", spider="s", node=None))
        # The queue of version 2, which the pending job of version 1 joined.
        assert [store.claim_job("n1").job_id for _ in range(2)] == ["j1", "q1"]
    with opened(location, readonly=True) as reader:
        assert reader.get("j1").node == reader.get("q1").node == "n1"
    assert schema_version(location) == backend.SCHEMA_VERSION


def schema_version(location: str) -> int:
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return conn.execute("SELECT max(version) FROM jobstatus_schema").fetchone()[0]
    with contextlib.closing(sqlite3.connect(location)) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_tables_not_made_by_a_postgres_store_are_left_alone(pg_location):
    execute(pg_location, "CREATE TABLE jobs (id INTEGER)")
    with opened(pg_location) as store, pytest.raises(StoreError) as info:
        store.get("x")
    assert "not made by scrapy-jobstatus" in str(info.value)


def _open_at_once(url: str, barrier) -> None:
    barrier.wait(30)
    with opened(url) as store:
        store.add_pending(pending(f"j{os.getpid()}"))


def test_processes_making_the_postgres_schema_at_once_all_succeed(pg_location):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [
        context.Process(target=_open_at_once, args=(pg_location, barrier)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    with opened(pg_location, readonly=True) as store:
        assert store.list_jobs(ALL).total == 4
    from scrapy_jobstatus._postgres import SCHEMA_VERSION

    assert schema_version(pg_location) == SCHEMA_VERSION


def _server(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


@pytest.mark.parametrize("case", ["wrong password", "unreachable", "password in the query"])
def test_a_postgres_store_that_cannot_connect_says_why_in_one_line_without_the_password(
    postgres_url, case
):
    server = _server(postgres_url)
    url = {
        "wrong password": f"postgresql://{PASSWORD_ROLE}:{PASSWORD}x@{server}/postgres",
        "unreachable": f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db",
        "password in the query": f"postgres://{PASSWORD_ROLE}@{server}/postgres"
        f"?password={PASSWORD}x",
    }[case]
    store = open_store(url)
    assert PASSWORD not in store.location and "***" in store.location
    with pytest.raises(StoreError) as info:
        store.get("x")
    message = str(info.value)
    assert PASSWORD not in message and "\n" not in message
    assert message.startswith(f"cannot open the job store {store.location}: ")
    expected = {
        "wrong password": "password authentication failed",
        "unreachable": "Connection refused",
        "password in the query": "password authentication failed",
    }[case]
    assert expected in message
    store.close()


def test_the_right_password_opens_a_postgres_store(pg_location):
    server = _server(pg_location)
    database = urlsplit(pg_location).path
    execute(pg_location, f"GRANT ALL ON SCHEMA public TO {PASSWORD_ROLE}")
    with opened(f"postgresql://{PASSWORD_ROLE}:{PASSWORD}@{server}{database}") as store:
        assert store.add_pending(pending("j1"))
        assert store.get("j1").status is JobStatus.PENDING


def test_a_reader_never_makes_nor_writes_a_store(location):
    with opened(location, readonly=True) as reader, pytest.raises(StoreError) as info:
        reader.get("x")
    assert "no job store" in str(info.value)
    with opened(location) as writer:
        writer.add_pending(pending("j1"))
    with opened(location, readonly=True) as reader:
        assert reader.get("j1").status is JobStatus.PENDING
        with pytest.raises(StoreError) as info:
            reader.request_cancel("j1")
        assert "\n" not in str(info.value)
        assert reader.get("j1").status is JobStatus.PENDING


def test_text_with_nul_characters_is_stored(store):
    state = running("j1")
    store.start_job(state)
    message = "bad byte \x00 in the body"
    save_errors(
        store,
        state,
        [JobError(error_type="other", error_message=message, page_url="http://x/\x00")],
        [HistoryEvent(step="tick", timestamp=1.0, status="running", details="\x00")],
    )
    # PostgreSQL text cannot hold a NUL: it becomes U+FFFD there.
    (error,) = store.errors("j1")
    assert error.error_message.replace("\ufffd", "\x00") == message
    assert store.history("j1")[0].details in ("\x00", "\ufffd")


def test_open_store_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError) as info:
        open_store("postgresql://localhost/jobs")
    assert "pip install 'scrapy-jobstatus[postgres]'" in str(info.value)
    assert "\n" not in str(info.value)
