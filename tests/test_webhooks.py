"""Webhook deliveries from the store's outbox to a real HTTP receiver that
verifies each with the ``standardwebhooks`` package: retries and backoff,
Retry-After, no retry on a refusal, timeouts, credentials, the age limit;
then a plain ``scrapy crawl`` delivering its own events, and ``scrapy
jobnotify`` delivering what a crawl left."""

from __future__ import annotations

import base64
import json
import time

import pytest

from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._store import open_store
from scrapy_jobstatus._webhooks import (
    InvalidWebhook,
    WebhookPolicy,
    WebhookSender,
    check_secret,
    job_webhooks,
    webhook_urls,
)
from tests.helpers import run_crawl, scrapy, start_crawl, wait_for
from tests.webhook_receiver import JOB_SECRET, SECRET, verifies, webhook_receiver

FAST = WebhookPolicy(timeout=2, retry_delay=0.2, max_age=60)


def started_job(
    location, job_id: str, urls: list[str], own: list[str] | None = None, key: str | None = None
) -> None:
    now = time.time()
    with_store = open_store(location)
    try:
        with_store.start_job(
            JobState(
                job_id=job_id,
                spider="s",
                project="p",
                status=JobStatus.RUNNING,
                pid=1,
                interval=1.0,
                created_at=now,
                started_at=now,
                updated_at=now,
                webhooks=urls,
                job_webhooks=own or [],
                job_webhook_secret=key,
            )  # fmt: skip
        )
    finally:
        with_store.close()


def sender_for(location, policy=FAST, secret=SECRET, jitter=lambda: 0.0) -> WebhookSender:
    return WebhookSender(str(location), secret, policy, jitter=jitter)


def deliver_until_done(sender: WebhookSender, job_id: str | None = None, timeout=30):
    def done() -> bool:
        sender.deliver_due(job_id=job_id)
        return sender.store.count_undelivered(job_id) == 0

    wait_for(done, timeout=timeout, interval=0.05, what="the deliveries to end")


def test_a_failing_receiver_gets_one_accepted_delivery_after_backoff(location):
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: 503 if attempt <= 2 else 200
        started_job(location, "j", [receiver.url])
        sender = sender_for(location)
        try:
            deliver_until_done(sender)
            log = sender.store.webhook_log("j")
        finally:
            sender.close()
    (accepted,) = receiver.accepted()
    assert accepted.payload["type"] == "job.started"
    assert accepted.payload["data"]["job_id"] == "j"
    attempts = receiver.attempts(accepted.event_id)
    assert [a.answered for a in attempts] == [503, 503, 200]
    assert {a.body for a in attempts} == {accepted.body}  # the same signed bytes
    # Spaced by the backoff: 0.1 s, then 0.2 s (equal jitter at its least).
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2
    (delivery,) = log
    assert delivery["status"] == "delivered"
    assert [a["http_status"] for a in delivery["attempts"]] == [503, 503, 200]
    assert all(a["next_retry"] for a in delivery["attempts"][:2])


def test_retry_after_is_honoured_and_a_refusal_is_not_retried(location):
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: 429 if attempt == 1 else 404
        receiver.retry_after = "2"
        started_job(location, "j", [receiver.url])
        sender = sender_for(location)
        try:
            (first,) = sender.deliver_due()
            assert not first.delivered and first.next_attempt_at >= first.attempted_at + 2
            assert sender.deliver_due() == []  # not before Retry-After
            deliver_until_done(sender)
            (delivery,) = sender.store.webhook_log("j")
        finally:
            sender.close()
    assert delivery["status"] == "failed"  # a 404 ends it
    assert [a["http_status"] for a in delivery["attempts"]] == [429, 404]
    assert delivery["attempts"][1]["next_retry"] is None


def test_a_receiver_that_hangs_times_out_and_is_retried(location):
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: None if attempt == 1 else 200
        started_job(location, "j", [receiver.url])
        sender = sender_for(location, WebhookPolicy(timeout=0.5, retry_delay=0.2, max_age=60))
        try:
            (first,) = sender.deliver_due()
            assert first.http_status is None and "timed out" in first.error
            assert first.duration_ms < 2000
            receiver.released.set()
            deliver_until_done(sender)
        finally:
            sender.close()
    assert len(receiver.accepted()) == 1


def test_an_unreachable_receiver_is_given_up_after_the_age_limit(location, tmp_path):
    started_job(location, "j", ["http://127.0.0.1:9/hook"])
    sender = sender_for(location, WebhookPolicy(timeout=1, retry_delay=0.2, max_age=0.5))
    try:
        deliver_until_done(sender)
        (delivery,) = sender.store.webhook_log("j")
    finally:
        sender.close()
    assert delivery["status"] == "failed" and len(delivery["attempts"]) >= 2
    assert "refused" in delivery["attempts"][0]["error"].lower()


def test_credentials_of_a_url_are_sent_as_basic_auth_and_never_shown(location):
    with webhook_receiver() as receiver:
        url = receiver.url.replace("http://", "http://hook-user:p%40ss@")
        started_job(location, "j", [url])
        sender = sender_for(location)
        try:
            deliver_until_done(sender)
            (delivery,) = sender.store.webhook_log("j")
            document = sender.store.document("j")
        finally:
            sender.close()
    (accepted,) = receiver.accepted()
    assert accepted.headers["authorization"] == "Basic aG9vay11c2VyOnBAc3M="  # hook-user:p@ss
    assert "p%40ss" not in json.dumps(delivery) and "hook-user:***@" in delivery["url"]
    assert document["webhooks"] == [delivery["url"]]


def test_urls_and_secrets_are_checked_in_one_line():
    assert webhook_urls("http://a.example/x, https://b.example/y") == [
        "http://a.example/x",
        "https://b.example/y",
    ]
    for bad in ("ftp://a.example/x", "file:///etc/passwd", "javascript:alert(1)", "http://"):
        with pytest.raises(InvalidWebhook, match="only http and https"):
            webhook_urls(bad)
    for bad in ("secret", "whsec_", "whsec_!!!"):
        with pytest.raises(InvalidWebhook):
            check_secret(bad)
    assert check_secret(SECRET) == SECRET


def test_a_job_s_own_webhooks_need_their_own_key_of_24_bytes_at_most_10_urls():
    urls = "http://127.0.0.1:1/a http://127.0.0.1:1/b"
    assert job_webhooks(urls, JOB_SECRET) == (
        ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"],
        JOB_SECRET,
    )
    assert job_webhooks(None, None) == ([], None)
    short = "whsec_" + base64.b64encode(b"k" * 23).decode()
    ten = " ".join(f"http://127.0.0.1:1/{n}" for n in range(10))
    assert len(job_webhooks(ten, JOB_SECRET)[0]) == 10
    refused = {
        (urls, None): "webhook needs webhook_secret",
        (urls, ""): "webhook needs webhook_secret",
        (urls, short): "24 bytes or more, not 23",
        (urls, "k" * 40): "starts with whsec_",
        (urls, "whsec_!!!!"): "whsec_ followed by base64",
        (None, JOB_SECRET): "webhook_secret goes with webhook",
        (ten + " http://127.0.0.1:1/x", JOB_SECRET): "at most 10 webhook URLs a job, not 11",
    }
    for (given, key), expected in refused.items():
        with pytest.raises(InvalidWebhook) as info:
            job_webhooks(given, key)
        message = str(info.value)
        assert expected in message and "\n" not in message
        assert not key or key not in message


def test_a_job_s_own_receiver_verifies_with_its_own_key_the_node_s_with_the_node_s(location):
    with webhook_receiver() as node_receiver, webhook_receiver(JOB_SECRET) as own:
        # The same URL named by the node and by the job gets both deliveries.
        started_job(location, "j", [node_receiver.url], [own.url, node_receiver.url], JOB_SECRET)
        sender = sender_for(location)
        try:
            deliver_until_done(sender)
            log = sender.store.webhook_log("j")
        finally:
            sender.close()
    (mine,) = own.received
    assert mine.verified and verifies(mine, JOB_SECRET) and not verifies(mine, SECRET)
    signed_by_node = [r for r in node_receiver.received if verifies(r, SECRET)]
    signed_by_job = [r for r in node_receiver.received if verifies(r, JOB_SECRET)]
    assert len(signed_by_node) == len(signed_by_job) == 1
    # Two keys, two webhook-ids: a receiver deduplicating drops neither.
    assert signed_by_node[0].event_id != signed_by_job[0].event_id
    assert JOB_SECRET not in json.dumps(log) and "secret" not in json.dumps(log)


def test_a_deliverer_without_a_webhook_secret_makes_the_keyed_deliveries_only(location):
    with webhook_receiver() as node_receiver, webhook_receiver(JOB_SECRET) as own:
        started_job(location, "j", [node_receiver.url], [own.url], JOB_SECRET)
        sender = sender_for(location, secret=None)
        try:
            attempts = sender.deliver_due()
            left = sender.store.count_undelivered("j")
        finally:
            sender.close()
    assert [a.outcome for a in attempts] == ["delivered"]
    assert len(own.accepted()) == 1 and node_receiver.received == []
    assert left == 1  # for a deliverer that has the node's key


# -- a plain scrapy crawl --------------------------------------------------------


def webhook_settings(receiver, **more) -> dict[str, str]:
    return {
        "JOBSTATUS_WEBHOOKS": receiver.url,
        "JOBSTATUS_WEBHOOK_SECRET": SECRET,
        "JOBSTATUS_WEBHOOK_RETRY_DELAY": "0.2",
        **more,
    }


def test_a_crawl_delivers_its_own_events_once_each(tmp_path, site, reactor_mode):
    db = tmp_path / "jobs.db"
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: 503 if attempt <= 2 else 200
        code = run_crawl(
            "batch",
            db,
            tmp_path / "crawl.log",
            args={"urls": f"{site}/sample/,{site}/sample/apple", "_job": "hooked"},
            settings={**reactor_mode, **webhook_settings(receiver)},
        )
        assert code == 0, (tmp_path / "crawl.log").read_text()[-3000:]
        # Delivered before the crawl exited: nothing left to wait for.
        types = [r.payload["type"] for r in receiver.accepted()]
    assert sorted(types) == ["job.completed", "job.started"]
    (completed,) = [r.payload for r in receiver.accepted() if r.payload["type"] == "job.completed"]
    assert completed["data"]["status"] == "completed"
    assert completed["data"]["total_pages_crawled"] == 2


def test_a_receiver_that_hangs_does_not_hold_the_crawl(tmp_path, site, reactor_mode):
    db = tmp_path / "jobs.db"
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: None  # never answers
        started = time.monotonic()
        code = run_crawl(
            "batch",
            db,
            tmp_path / "crawl.log",
            args={"urls": f"{site}/sample/", "_job": "hung"},
            settings={**reactor_mode, **webhook_settings(receiver, JOBSTATUS_WEBHOOK_WAIT="1")},
        )
        took = time.monotonic() - started
    assert code == 0
    store = open_store(db, readonly=True)
    try:
        document = store.document("hung")
        left = store.count_undelivered("hung")
    finally:
        store.close()
    # The job's own time knows nothing of the receiver (its timeout is 10 s),
    # and the process waited JOBSTATUS_WEBHOOK_WAIT at most for it.
    assert document["status"] == "completed" and document["processing_time"] < 10
    assert took < 10 + 8
    assert left == 2  # started and completed, left for scrapy jobnotify
    log = (tmp_path / "crawl.log").read_text()
    assert "left for scrapy jobnotify" in log


def test_jobnotify_delivers_what_a_crawl_left(tmp_path, site):
    db = tmp_path / "jobs.db"
    with webhook_receiver() as receiver:
        receiver.answer = lambda attempt: 503  # down while the crawl runs
        settings = webhook_settings(receiver, JOBSTATUS_WEBHOOK_WAIT="1")
        code = run_crawl(
            "batch",
            db,
            tmp_path / "crawl.log",
            args={"urls": f"{site}/sample/", "_job": "later"},
            settings=settings,
        )
        assert code == 0 and receiver.accepted() == []
        receiver.answer = lambda attempt: 200  # back
        options = [o for name, value in settings.items() for o in ("-s", f"{name}={value}")]
        # A claim the crawl held as it exited ends within its lease (timeout + 10 s).
        result = scrapy("jobnotify", "--db", str(db), "--wait", "60", *options, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "2 delivered" in result.stdout and "0 left" in result.stdout
        assert sorted(r.payload["type"] for r in receiver.accepted()) == [
            "job.completed",
            "job.started",
        ]
    again = scrapy("jobnotify", "--db", str(db), *options)
    assert again.returncode == 0 and "0 delivered" in again.stdout


def test_jobnotify_signs_each_delivery_with_the_key_it_was_made_with(tmp_path):
    db = tmp_path / "jobs.db"
    with webhook_receiver() as node_receiver, webhook_receiver(JOB_SECRET) as own:
        started_job(db, "j", [node_receiver.url], [own.url], JOB_SECRET)
        # Without the node's key: the job's own receiver alone, with its key.
        keyed = scrapy("jobnotify", "--db", str(db))
        assert keyed.returncode == 0, keyed.stderr
        assert "1 delivered" in keyed.stdout and "1 left" in keyed.stdout
        assert "JOBSTATUS_WEBHOOK_SECRET is not set" in keyed.stderr
        both = scrapy("jobnotify", "--db", str(db), "-s", f"JOBSTATUS_WEBHOOK_SECRET={SECRET}")
        assert both.returncode == 0 and "0 left" in both.stdout, both.stderr
        (mine,) = own.received
        (node_s,) = node_receiver.received
    assert verifies(mine, JOB_SECRET) and not verifies(mine, SECRET)
    assert verifies(node_s, SECRET) and not verifies(node_s, JOB_SECRET)
    assert JOB_SECRET not in keyed.stdout + keyed.stderr + both.stdout + both.stderr


def test_bad_webhook_settings_fail_the_job_naming_the_setting(tmp_path, site):
    db = tmp_path / "jobs.db"
    code = run_crawl(
        "batch",
        db,
        tmp_path / "crawl.log",
        args={"urls": f"{site}/sample/", "_job": "bad"},
        settings={"JOBSTATUS_WEBHOOKS": "ftp://x.example/"},
    )
    assert code == 0  # Scrapy's exit status; the job's is in the store
    store = open_store(db, readonly=True)
    try:
        document = store.document("bad")
    finally:
        store.close()
    assert document["status"] == "failed"
    assert "JOBSTATUS_WEBHOOKS" in document["error_message"]


def test_a_crawl_killed_with_sigkill_gets_job_failed_through_jobnotify(tmp_path, site):
    db = tmp_path / "jobs.db"
    with webhook_receiver() as receiver:
        settings = webhook_settings(receiver, JOBSTATUS_INTERVAL="0.2")
        crawl = start_crawl(
            "batch",
            db,
            tmp_path / "crawl.log",
            args={"urls": f"{site}/slow?delay=30", "_job": "killed"},
            settings=settings,
        )
        try:
            wait_for(lambda: receiver.of_type("job.started"), what="job.started")
        finally:
            crawl.kill()
            crawl.wait()
        options = [o for name, value in settings.items() for o in ("-s", f"{name}={value}")]
        # Its heartbeat goes stale after five intervals (at least 5 s).
        wait_for(
            lambda: "1 delivered" in scrapy("jobnotify", "--db", str(db), *options).stdout,
            timeout=30,
            interval=1,
            what="jobnotify to find the dead crawl",
        )
        (failed,) = receiver.of_type("job.failed")
    assert failed.payload["data"]["job_id"] == "killed"
    assert "died" in failed.payload["data"]["error_message"]


def test_a_receiver_is_not_shown_the_other_receivers_urls(location):
    with webhook_receiver() as receiver:
        started_job(location, "j", [receiver.url, "https://hooks.example/other?token=t0p"])
        sender = sender_for(location)
        try:
            sender.deliver_due()
        finally:
            sender.close()
    (accepted,) = receiver.accepted()
    assert "webhooks" not in accepted.payload["data"] and b"t0p" not in accepted.body
