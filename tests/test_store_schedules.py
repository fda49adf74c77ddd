"""Periodic schedules in the store, on SQLite and PostgreSQL: each tick
claimed once whatever the nodes claiming at once, its job queued with it,
overlap and catch-up policies, one-off jobs alone. The claims are given
their time (``now``) but where the store's own clock is the point."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing

import pytest

from scrapy_jobstatus._model import JobStatus
from scrapy_jobstatus._schedule import AddResult, CatchUp, Outcome, Overlap, Rule, Schedule
from scrapy_jobstatus._store import JobFilter, JobStore, open_store
from tests.postgres import temporary_database

# A whole minute, for ticks that are the same on every run of the tests.
T0 = 1_796_695_200.0  # 2026-12-08T02:00:00Z


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "jobstatus.sqlite3")
    else:
        with temporary_database(request.getfixturevalue("postgres_url")) as url:
            yield url


@pytest.fixture
def store(location: str) -> Iterator[JobStore]:
    store = open_store(location)
    try:
        yield store
    finally:
        store.close()


def schedule(name: str = "nightly", **kwargs) -> Schedule:
    kwargs.setdefault("rule", Rule(every=60))
    return Schedule(project="crawler", name=name, spider="batch", args={"urls": "x"}, **kwargs)


def jobs_of(store: JobStore, name: str) -> list:
    return store.list_jobs(JobFilter(schedule=name), limit=1000).jobs


def info(store: JobStore, name: str = "nightly"):
    return store.schedules("crawler", name, history=100)[0]


def test_a_due_tick_queues_its_job_once_with_its_schedule_and_tick(store: JobStore) -> None:
    store.put_schedule(schedule(priority=3.0, retries=2, timeout=60.0), now=T0 - 30)
    assert info(store).next_tick == T0
    assert store.fire_schedules("n1", [], now=T0 - 1).records == []
    firing = store.fire_schedules("n1", ["http://127.0.0.1:1/hook"], now=T0 + 0.2)
    [record] = firing.records
    assert (record.outcome, record.job_id, record.node) == (
        Outcome.FIRED,
        "nightly-2026-12-08T02:00:00Z",
        "n1",
    )
    # The node sleeps until the schedule's next tick.
    assert firing.wait == pytest.approx(59.8)
    # The same tick again, by another node: nothing.
    assert store.fire_schedules("n2", [], now=T0 + 0.3).records == []
    [job] = jobs_of(store, "nightly")
    assert (job.job_id, job.status, job.node, job.schedule) == (
        "nightly-2026-12-08T02:00:00Z",
        JobStatus.PENDING,
        None,
        "nightly",
    )
    document = store.document(job.job_id)
    assert document is not None
    assert (document["schedule"], document["scheduled_for"]) == (
        "nightly",
        "2026-12-08T02:00:00.000Z",
    )
    assert (job.args, job.priority, job.retries, job.settings) == (
        {"urls": "x"},
        3.0,
        2,
        {"JOBSTATUS_TIMEOUT": "60"},
    )
    assert job.webhooks == ["http://127.0.0.1:1/hook"]
    shown = info(store).to_dict()
    assert (shown["last_job"], shown["last_job_status"], shown["fired"]) == (
        job.job_id,
        "pending",
        1,
    )
    assert shown["next_tick"] == "2026-12-08T02:01:00.000Z"
    # A queued job of a schedule is claimed like any other.
    assert store.claim_job("n1") is not None


def test_nodes_claiming_at_once_make_one_job_per_tick(location: str) -> None:
    """Three "nodes", each with a store of its own, claim an every-second
    schedule as fast as they can for 3 s of the store's clock."""
    with closing(open_store(location)) as setup:
        setup.put_schedule(schedule("tick", rule=Rule(every=1)))
    fired: list[tuple[str, float]] = []
    lock = threading.Lock()
    deadline = time.time() + 3.2

    def node(name: str) -> None:
        store = open_store(location)
        try:
            while time.time() < deadline:
                for record in store.fire_schedules(name, []).records:
                    with lock:
                        fired.append((record.outcome, record.tick))
        finally:
            store.close()

    threads = [threading.Thread(target=node, args=(f"n{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ticks = Counter(tick for outcome, tick in fired)
    assert fired and all(outcome == Outcome.FIRED for outcome, _ in fired)
    assert max(ticks.values()) == 1
    with closing(open_store(location)) as store:
        jobs = sorted(j.scheduled_for for j in jobs_of(store, "tick"))
        assert jobs == sorted(ticks)
        # Every second, none left out.
        assert jobs == [jobs[0] + i for i in range(len(jobs))]
        assert 2 <= len(jobs) <= 4
        assert info(store, "tick").fired == len(jobs)


def test_skip_makes_no_job_while_the_previous_one_is_active(store: JobStore) -> None:
    store.put_schedule(schedule(overlap=Overlap.SKIP), now=T0 - 30)
    [first] = store.fire_schedules("n1", [], now=T0).records
    [skipped] = store.fire_schedules("n1", [], now=T0 + 60).records
    assert skipped.outcome is Outcome.SKIPPED and skipped.job_id is None
    assert skipped.details == f"job {first.job_id} of the schedule is still active"
    assert len(jobs_of(store, "nightly")) == 1
    store.request_cancel(first.job_id)
    [fired] = store.fire_schedules("n1", [], now=T0 + 120).records
    assert fired.outcome is Outcome.FIRED
    shown = info(store)
    assert (shown.fired, shown.skipped, shown.missed) == (2, 1, 0)
    assert [t.outcome for t in shown.history] == [Outcome.FIRED, Outcome.SKIPPED, Outcome.FIRED]


def test_replace_cancels_the_active_job_and_queues_the_ticks(store: JobStore) -> None:
    store.put_schedule(schedule(overlap=Overlap.REPLACE), now=T0 - 30)
    [first] = store.fire_schedules("n1", [], now=T0).records
    [second] = store.fire_schedules("n1", [], now=T0 + 60).records
    assert second.outcome is Outcome.FIRED
    old, new = store.get(first.job_id), store.get(second.job_id)
    assert old is not None and new is not None
    assert (old.status, new.status) == (JobStatus.CANCELLED, JobStatus.PENDING)
    # A running one is asked to cancel, gracefully.
    assert store.claim_job("n1") is not None
    new.status, new.started_at, new.updated_at, new.pid = JobStatus.RUNNING, T0 + 61, T0 + 61, 1
    assert store.start_job(new).started
    [third] = store.fire_schedules("n1", [], now=T0 + 120).records
    running = store.document(second.job_id)
    assert running is not None and running["status"] == "cancelling"
    assert store.get(third.job_id).status is JobStatus.PENDING


def test_ticks_missed_while_nothing_ran_are_counted_not_run(store: JobStore) -> None:
    store.put_schedule(schedule(), now=T0 - 30)
    # Every node down from before T0 to T0 + 200 s: four ticks gone.
    firing = store.fire_schedules("n1", [], now=T0 + 200)
    [missed] = firing.records
    assert (missed.outcome, missed.count, missed.tick) == (Outcome.MISSED, 4, T0 + 180)
    assert jobs_of(store, "nightly") == []
    shown = info(store)
    assert (shown.missed, shown.fired, shown.next_tick) == (4, 0, T0 + 240)


def test_catch_up_latest_runs_the_latest_missed_tick_once(store: JobStore) -> None:
    store.put_schedule(schedule(catch_up=CatchUp.LATEST, starting_deadline=30.0), now=T0 - 30)
    records = store.fire_schedules("n1", [], now=T0 + 200).records
    assert [(r.outcome, r.count, r.tick) for r in records] == [
        (Outcome.MISSED, 3, T0 + 120),
        (Outcome.FIRED, 1, T0 + 180),
    ]
    assert [j.job_id for j in jobs_of(store, "nightly")] == ["nightly-2026-12-08T02:03:00Z"]
    # Past its starting deadline, the latest is missed too.
    records = store.fire_schedules("n1", [], now=T0 + 830).records
    assert [(r.outcome, r.count, r.tick) for r in records] == [(Outcome.MISSED, 10, T0 + 780)]


def test_a_disabled_schedule_fires_nothing_and_misses_its_ticks(store: JobStore) -> None:
    store.put_schedule(schedule(), now=T0 - 30)
    assert store.enable_schedule("crawler", "nightly", False)
    assert store.fire_schedules("n1", [], now=T0 + 100).records == []
    assert info(store).to_dict()["next_tick"] is None
    assert store.enable_schedule("crawler", "nightly", True)
    records = store.fire_schedules("n1", [], now=T0 + 180.5).records
    assert [(r.outcome, r.count) for r in records] == [(Outcome.MISSED, 3), (Outcome.FIRED, 1)]
    assert store.schedule_counts() == {True: 1}
    assert not store.enable_schedule("crawler", "nope", True)


def test_run_now_makes_a_job_as_the_overlap_allows(store: JobStore) -> None:
    store.put_schedule(schedule(overlap=Overlap.SKIP), now=T0 - 30)
    run = store.run_schedule("crawler", "nightly", [], now=T0 + 5.25)
    assert run is not None and run.queued
    assert run.job_id == "nightly-2026-12-08T02:00:05.250Z"
    state = store.get(run.job_id)
    assert state is not None and (state.schedule, state.scheduled_for) == ("nightly", T0 + 5.25)
    again = store.run_schedule("crawler", "nightly", [], now=T0 + 6)
    assert again is not None and (again.queued, again.active) == (False, run.job_id)
    # Its ticks are its own: the run leaves them be.
    assert info(store).next_tick == T0
    assert info(store).last_job == run.job_id
    assert store.run_schedule("crawler", "nope", []) is None


def test_replacing_keeps_the_history_and_deleting_leaves_the_jobs(store: JobStore) -> None:
    assert store.put_schedule(schedule(), now=T0 - 30)
    store.fire_schedules("n1", [], now=T0)
    assert not store.put_schedule(schedule(rule=Rule.parse("0 3 * * *", None, None)), now=T0 + 1)
    shown = info(store)
    assert (shown.fired, shown.schedule.rule.cron, shown.next_tick) == (1, "0 3 * * *", T0 + 3600)
    assert store.delete_schedule("crawler", "nightly")
    assert not store.delete_schedule("crawler", "nightly")
    assert store.schedules() == []
    assert len(jobs_of(store, "nightly")) == 1


def test_a_schedules_key_is_kept_to_sign_and_never_shown(store: JobStore) -> None:
    secret = "whsec_" + "QUJD" * 8
    store.put_schedule(
        schedule(job_webhooks=["http://u:p@127.0.0.1:1/h"], job_webhook_secret=secret),
        now=T0 - 30,
    )
    assert secret not in str(info(store).to_dict())
    [record] = store.fire_schedules("n1", [], now=T0).records
    job = store.get(record.job_id)
    assert job is not None and job.job_webhook_secret == secret


def test_overlap_skip_refuses_a_one_off_job_while_a_like_one_is_active(store: JobStore) -> None:
    def job(job_id: str, key: str | None = None):
        state = schedule().job(job_id, T0, [])
        state.schedule, state.scheduled_for, state.overlap_key = None, None, key
        return state

    assert store.add_alone(job("a")).added
    refused = store.add_alone(job("b"))
    assert (refused.added, refused.active) == (False, "a")
    # With a key, only a job of the same key stops it.
    assert store.add_alone(job("k1", key="x")).added
    assert store.add_alone(job("k2", key="y")).added
    assert store.add_alone(job("k3", key="x")) == AddResult(False, "k1")
    store.request_cancel("k1")
    assert store.add_alone(job("k3", key="x")).added
    assert store.get("b") is None


def test_a_skipped_or_missed_tick_is_a_webhook_event_in_the_same_write(store: JobStore) -> None:
    secret = "whsec_" + "QUJD" * 8
    store.put_schedule(
        schedule(
            overlap=Overlap.SKIP,
            job_webhooks=["http://127.0.0.1:1/own"],
            job_webhook_secret=secret,
        ),
        now=T0 - 30,
    )
    node = ["http://127.0.0.1:1/node"]
    store.fire_schedules("n1", node, now=T0)
    store.fire_schedules("n1", node, now=T0 + 60)  # skipped: the first job is pending
    store.fire_schedules("n1", node, now=T0 + 300)  # three ticks missed, one skipped
    deliveries = store.claim_deliveries(T0 + 400, 60, 100, due_by=T0 + 10**9)
    schedule_events = [d for d in deliveries if d.event_type.startswith("schedule.")]
    by_type = Counter((d.event_type, d.url, d.secret) for d in schedule_events)
    assert by_type == {
        ("schedule.skipped", "http://127.0.0.1:1/node", None): 2,
        ("schedule.skipped", "http://127.0.0.1:1/own", secret): 2,
        ("schedule.missed", "http://127.0.0.1:1/node", None): 1,
        ("schedule.missed", "http://127.0.0.1:1/own", secret): 1,
    }
    [missed] = {d.body for d in schedule_events if d.event_type == "schedule.missed"}
    body = json.loads(missed)
    assert body["type"] == "schedule.missed"
    assert {k: body["data"][k] for k in ("project", "schedule", "outcome", "count", "tick")} == {
        "project": "crawler",
        "schedule": "nightly",
        "outcome": "missed",
        "count": 3,
        "tick": "2026-12-08T02:04:00.000Z",
    }
    assert secret not in missed
