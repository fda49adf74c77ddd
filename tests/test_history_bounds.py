"""A job's history and stages_completed keep their first and last 100
entries and count those left out, whatever a spider reports: in the tracker
(a fake clock, no crawl), in the store (both backends), and in a real crawl
whose spider reports a stage on every page."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from scrapy_jobstatus._model import (
    DETAILS_CHARS,
    HISTORY_KEPT,
    STAGE_CHARS,
    HistoryEvent,
    JobError,
    JobState,
    JobStatus,
    bounded,
    keep_ends,
)
from scrapy_jobstatus._store import open_store
from scrapy_jobstatus._tracker import JobTracker
from tests.spider_jobs import run_job
from tests.test_store import running
from tests.test_tracker import Clock


def test_keep_ends_drops_the_middle_and_counts_it() -> None:
    entries = list(range(250))
    assert keep_ends(entries) == 50
    assert entries == [*range(100), *range(150, 250)]
    short = list(range(200))
    assert keep_ends(short) == 0 and short == list(range(200))
    assert keep_ends(entries, kept=2) == 196 and entries == [0, 1, 248, 249]


def test_a_stage_a_page_keeps_the_first_and_last_100_in_the_tracker() -> None:
    clock = Clock()
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock())
    tracker = JobTracker(state, clock=clock)
    for page in range(500):
        clock.now += 1
        tracker.set_stage(f"page {page}")
    assert state.stage == "page 499"
    assert state.stages_completed == [
        *(f"page {n}" for n in range(100)),
        *(f"page {n}" for n in range(399, 499)),
    ]
    assert state.stages_omitted == 299
    steps = [event.step for event in tracker.history]
    assert steps == [
        *(f"stage page {n}" for n in range(100)),
        *(f"stage page {n}" for n in range(400, 500)),
    ]
    assert state.history_omitted == 300
    # Every event still goes to the store (events.json streams them), once.
    errors, events = tracker.take_unsaved()
    assert len(events) == 500 and not errors
    document = state.to_document([], tracker.history, clock())
    assert document["stages_omitted"] == 299 and document["history_omitted"] == 300
    assert len(document["stages_completed"]) == len(document["history"]) == 2 * HISTORY_KEPT


def test_a_short_job_leaves_nothing_out() -> None:
    clock = Clock()
    tracker = JobTracker(JobState(job_id="j", status=JobStatus.RUNNING), clock=clock)
    tracker.set_stage("a")
    tracker.set_stage("b")
    document = tracker.state.to_document([], tracker.history, clock())
    assert document["stages_completed"] == ["a"] and document["stages_omitted"] == 0
    assert len(document["history"]) == 2 and document["history_omitted"] == 0


def test_bounded_cuts_long_text_and_says_so() -> None:
    assert bounded("abc", 3) == "abc"
    assert bounded("abcdef", 5) == "ab..."
    assert len(bounded("B" * 2_000_000, STAGE_CHARS)) == STAGE_CHARS


def test_a_spiders_long_text_is_cut_in_the_tracker() -> None:
    clock = Clock()
    state = JobState(job_id="j", status=JobStatus.RUNNING, started_at=clock())
    tracker = JobTracker(state, clock=clock)
    huge = "B" * 2_000_000
    for page in range(5000):
        tracker.report("stage", f"page {page} {huge}")
    assert state.stage == bounded(f"page 4999 {huge}", STAGE_CHARS)
    assert state.stage.endswith("...") and len(state.stage) == STAGE_CHARS
    assert {len(stage) for stage in state.stages_completed} == {STAGE_CHARS}
    assert state.stages_completed[1].startswith("page 1 B")
    # Stages that differ beyond the cut are one stage.
    tracker.report("stage", f"page 4999 {huge}C")
    assert state.stages_omitted == 4999 - 2 * HISTORY_KEPT
    tracker.response_received("https://example.com/" + huge, None)
    tracker.record_error(
        JobError(error_type="spider_error", error_message=huge, page_url="https://e.x/" + huge)
    )
    tracker.fail(huge)
    tracker.closed(huge)
    tracker.finish()
    errors, _ = tracker.take_unsaved()
    assert len(errors[0].error_message) == DETAILS_CHARS and len(errors[0].page_url or "") < 2100
    assert len(state.error_message or "") == DETAILS_CHARS
    assert len(state.close_reason or "") == STAGE_CHARS
    assert all(len(event.details or "") <= DETAILS_CHARS for event in tracker.history)
    assert all(len(event.step) <= STAGE_CHARS + 10 for event in tracker.history)
    document = state.to_document(errors, tracker.history, clock())
    assert len(json.dumps(document)) < 200_000


def event(n: int) -> HistoryEvent:
    return HistoryEvent(step=f"stage {n}", timestamp=1000.0 + n, status="running")


def test_the_store_keeps_a_jobs_first_and_last_100_events(location: str) -> None:
    store = open_store(location)
    try:
        state = running("j1")
        assert store.start_job(state).started
        other = running("j2")
        assert store.start_job(other).started
        for batch in range(5):  # 5 writes of 100 events
            store.save(state, events=[event(batch * 100 + n) for n in range(100)])
            store.save(other, events=[event(batch)])
        document = store.document("j1")
        assert document is not None
        steps = [e["step"] for e in document["history"]]
        assert steps == [
            *(f"stage {n}" for n in range(100)),
            *(f"stage {n}" for n in range(400, 500)),
        ]
        assert document["history_omitted"] == 300
        assert store.history("j1") == [event(n) for n in (*range(100), *range(400, 500))]
        # Another job's events are its own.
        other_document = store.document("j2")
        assert other_document is not None
        assert len(other_document["history"]) == 5 and other_document["history_omitted"] == 0
        # The crawl's own writes of its job leave the count alone.
        store.save(state)
        assert store.document("j1")["history_omitted"] == 300  # type: ignore[index]
        # events.json reads what is kept.
        kept = [row for row in store.events_after(0, job_id="j1", limit=1000)]
        assert len(kept) == 200
    finally:
        store.close()


def test_a_store_of_version_4_gets_the_count(tmp_path: Path) -> None:
    from scrapy_jobstatus import _sqlite

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for script in _sqlite._MIGRATIONS[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    store = open_store(db)
    try:
        state = running("old")
        assert store.start_job(state).started
        store.save(state, events=[event(n) for n in range(201)])
        assert store.document("old")["history_omitted"] == 1  # type: ignore[index]
    finally:
        store.close()


def test_a_crawl_reporting_a_stage_on_every_page_stays_small(tmp_path: Path, site: str) -> None:
    job = run_job(
        tmp_path,
        "stage_per_page",
        {"url": f"{site}/pages/0?links=1&max=499"},
        {"CONCURRENT_REQUESTS": "1"},
        timeout=180,
    )
    doc = job.doc
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["total_pages_crawled"] == 500
    # 500 page stages and "finalizing"; the history: those, and "opened",
    # "first response", "closing", "feeds closed" and "finished".
    assert len(doc["stages_completed"]) == 200
    assert doc["stages_completed"][:2] == ["page 0", "page 1"]
    assert doc["stages_completed"][-2:] == ["page 499", "finalizing"]
    assert doc["stages_omitted"] == 501 - 200
    steps = [event["step"] for event in doc["history"]]
    assert len(steps) == 200
    assert steps[:3] == ["opened", "first response", "stage page 0"]
    assert steps[-3:] == ["stage finalizing", "feeds closed", "finished"]
    assert doc["history_omitted"] == 506 - 200
    assert len(json.dumps(doc)) < 60_000
    store = sqlite3.connect(tmp_path / "jobs.db")
    try:
        (row_size,) = store.execute(
            "SELECT LENGTH(state) FROM jobs WHERE job_id = 'job1'"
        ).fetchone()
        (events,) = store.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        store.close()
    assert row_size < 10_000 and events == 200


def test_a_crawl_reporting_huge_stage_names_stays_small(tmp_path: Path, site: str) -> None:
    job = run_job(
        tmp_path,
        "stage_per_page",
        {"url": f"{site}/pages/0?links=1&max=49", "stage_chars": "2000000"},
        {"CONCURRENT_REQUESTS": "1"},
        timeout=180,
    )
    doc = job.doc
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["total_pages_crawled"] == 50
    stages = doc["stages_completed"]
    assert len(stages) == 51 and stages[-1] == "finalizing"
    assert all(len(stage) == STAGE_CHARS and stage.endswith("B...") for stage in stages[:-1])
    assert stages[0].startswith("page 0 BBB") and stages[49].startswith("page 49 BBB")
    assert all(len(event["step"]) <= STAGE_CHARS + 10 for event in doc["history"])
    assert len(json.dumps(doc)) < 60_000
