"""The store's webhook outbox, event stream, series and figures, on both
backends: written with the status changes they report, never lost."""

from __future__ import annotations

import json
import time

from scrapy_jobstatus._model import HistoryEvent, JobState, JobStatus, pending_job
from scrapy_jobstatus._store import Attempt

HOOK = "https://user:s3cret@hooks.example/in"


def running(job_id: str, **kwargs) -> JobState:
    now = time.time()
    return JobState(
        job_id=job_id, spider="s", project="p", status=JobStatus.RUNNING, pid=1, interval=1.0,
        created_at=now, started_at=now, updated_at=now, **kwargs,
    )  # fmt: skip


def types_of(store, job_id: str) -> list[str]:
    return [d["type"] for d in store.webhook_log(job_id)]


def test_status_changes_put_their_webhooks_in_the_outbox_once(store):
    state = running("j", webhooks=[HOOK, "http://second.example/"])
    store.start_job(state)
    state.total_pages_crawled = 3
    store.save(state)  # a heartbeat: no event
    stalled = HistoryEvent(step="stalled", timestamp=time.time(), status="running")
    store.save(state, events=[stalled])
    state.status, state.completed_at = JobStatus.COMPLETED, time.time()
    store.save(state)
    store.save(state)  # the final write again (a retry): refused, no second event
    assert types_of(store, "j") == ["job.started"] * 2 + ["job.stalled"] * 2 + ["job.completed"] * 2
    log = store.webhook_log("j")
    assert {d["url"] for d in log} == {
        "https://user:***@hooks.example/in",
        "http://second.example/",
    }
    assert len({d["event_id"] for d in log}) == 3  # one id per event, the same for each URL

    deliveries = store.claim_deliveries(time.time(), lease=30, limit=10)
    assert len(deliveries) == 6
    body = json.loads(next(d for d in deliveries if d.event_type == "job.completed").body)
    assert body["type"] == "job.completed" and body["data"]["status"] == "completed"
    assert body["data"]["total_pages_crawled"] == 3 and body["data"]["job_id"] == "j"
    assert [h["step"] for h in body["data"]["history"]] == ["stalled"]


def test_a_job_without_webhooks_writes_no_delivery(store):
    store.start_job(running("quiet"))
    assert store.webhook_log("quiet") == [] and store.count_undelivered() == 0


def test_ends_made_by_others_call_the_webhooks_too(store):
    store.add_pending(pending_job("p1", project="p", spider="s", node=None, webhooks=[HOOK]))
    store.request_cancel("p1")  # cancelled while pending
    store.start_job(running("k", webhooks=[HOOK]))
    store.end_job("k", JobStatus.FAILED, "killed", unstarted=False)  # a crawl killed -9
    assert types_of(store, "p1") == ["job.cancelled"]
    assert types_of(store, "k") == ["job.started", "job.failed"]
    store.add_pending(pending_job("slow", project="p", spider="s", node=None, webhooks=[HOOK]))
    assert store.warn_pending("slow", "pending: waiting for more than 60 s")
    assert not store.warn_pending("slow", "pending: waiting for more than 60 s")  # once
    assert types_of(store, "slow") == ["job.stalled"]
    assert store.get("slow").warnings == ["pending: waiting for more than 60 s"]


def test_a_claimed_delivery_is_leased_then_retried_or_ended(store):
    store.start_job(running("j", webhooks=[HOOK]))
    now = time.time()
    (delivery,) = store.claim_deliveries(now, lease=30, limit=10)
    assert store.claim_deliveries(now, lease=30, limit=10) == []  # leased
    store.record_attempt(
        delivery, Attempt(now, 503, None, 12, delivered=False, next_attempt_at=now + 60)
    )
    assert store.claim_deliveries(now + 1, lease=30, limit=10) == []  # not due yet
    (again,) = store.claim_deliveries(now + 61, lease=30, limit=10)
    assert again.event_id == delivery.event_id and again.attempts == 1
    store.record_attempt(
        again, Attempt(now + 61, 200, None, 5, delivered=True, next_attempt_at=None)
    )
    (logged,) = store.webhook_log("j")
    assert logged["status"] == "delivered" and logged["next_attempt_at"] is None
    assert [a["http_status"] for a in logged["attempts"]] == [503, 200]
    assert logged["attempts"][0]["next_retry"] is not None
    assert store.count_undelivered() == 0 and store.delivery_counts() == {"delivered": 1}


def test_a_lease_ends_by_itself_and_a_late_attempt_changes_nothing(store):
    store.start_job(running("j", webhooks=[HOOK]))
    now = time.time()
    (slow,) = store.claim_deliveries(now, lease=30, limit=10)
    assert store.claim_deliveries(now + 31, lease=30, limit=10, job_id="other") == []
    (taken,) = store.claim_deliveries(now + 31, lease=30, limit=10, job_id="j")
    delivered = Attempt(now + 32, 200, None, 5, delivered=True, next_attempt_at=None)
    assert store.record_attempt(taken, delivered)
    # The first deliverer comes back after its lease: logged, nothing moved.
    late = Attempt(now + 40, None, "timed out", 10_000, delivered=False, next_attempt_at=now + 50)
    assert not store.record_attempt(slow, late)
    (logged,) = store.webhook_log("j")
    assert logged["status"] == "delivered" and len(logged["attempts"]) == 2
    assert store.claim_deliveries(now + 3600, lease=30, limit=10) == []


def test_given_up_deliveries_are_counted_as_failed(store):
    store.start_job(running("j", webhooks=[HOOK]))
    (delivery,) = store.claim_deliveries(time.time(), lease=30, limit=10)
    store.record_attempt(
        delivery, Attempt(time.time(), 404, None, 3, delivered=False, next_attempt_at=None)
    )
    assert store.delivery_counts() == {"failed": 1} and store.count_undelivered("j") == 0


def test_events_are_read_after_an_id_in_order(store):
    state = running("a")
    store.start_job(state)
    store.start_job(running("b"))
    for step in ("one", "two"):
        event = HistoryEvent(step=step, timestamp=time.time(), status="running")
        store.save(state, events=[event])
    events = store.events_after(0)
    assert [(job, e.step) for _, job, e in events] == [("a", "one"), ("a", "two")]
    first = events[0][0]
    assert [e.step for _, _, e in store.events_after(first)] == ["two"]
    assert store.events_after(first, job_id="b") == []
    assert store.last_event_id() == events[-1][0]


def test_the_series_keeps_at_most_500_points_and_the_whole_run(store):
    state = running("long")
    store.start_job(state)
    for i in range(1, 1200):
        state.total_pages_crawled, state.updated_at = i, state.started_at + i
        store.save(state)
    series = store.series("long")
    assert 250 <= len(series) <= 500
    pages = [p["pages"] for p in series]
    assert pages[0] == 0 and pages[-1] == 1199 and pages == sorted(pages)


def test_figures_for_metrics(store):
    store.start_job(running("r"))
    done = running("d")
    store.start_job(done)
    store.end_job("d", JobStatus.FAILED, "died", unstarted=False)
    store.add_pending(pending_job("q", project="p", spider="s", node=None))
    assert sorted(store.status_counts()) == [
        ("failed", "p", "s", 1),
        ("pending", "p", "s", 1),
        ("running", "p", "s", 1),
    ]
    assert store.reason_counts() == {"error": 1}


def _write_events(location: str, job_id: str, count: int, barrier) -> None:
    from scrapy_jobstatus._store import open_store

    store = open_store(location)
    state = running(job_id)
    store.start_job(state)
    barrier.wait(30)
    for i in range(count):
        store.save(
            state, events=[HistoryEvent(step=f"s{i}", timestamp=time.time(), status="running")]
        )
    store.close()


def test_a_reader_following_the_stream_misses_no_event_of_concurrent_writers(store, location):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    writers = [
        context.Process(target=_write_events, args=(location, f"w{i}", 60, barrier))
        for i in range(4)
    ]
    for writer in writers:
        writer.start()
    seen: list[int] = []
    since = 0
    while any(w.is_alive() for w in writers) or store.events_after(since):
        for event_id, _, _ in store.events_after(since, limit=1000):
            seen.append(event_id)
            since = event_id
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    everything = [event_id for event_id, _, _ in store.events_after(0, limit=10_000)]
    assert len(everything) == 240
    assert seen == everything  # followed by `since` alone, nothing was skipped


def test_event_ids_never_go_back_after_a_prune(store):
    for job_id in ("old", "new"):
        state = running(job_id)
        store.start_job(state)
        store.save(state, events=[HistoryEvent(step="x", timestamp=time.time(), status="running")])
    store.end_job("new", JobStatus.FAILED, "died", unstarted=False)  # the newest event is new's
    last = store.last_event_id()
    assert store.prune(keep=0) == 1
    state = running("later")
    store.start_job(state)
    store.save(state, events=[HistoryEvent(step="y", timestamp=time.time(), status="running")])
    assert [e.step for _, _, e in store.events_after(last)] == ["y"]
