"""End to end: a Scrapyd node delivers its jobs' webhooks from the store's
outbox to a real receiver that verifies them with ``standardwebhooks``:
per node and per job, through a crawl killed with -9 and a restart of the
node, never holding up the node; two nodes on one PostgreSQL store deliver
each attempt once."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.postgres import temporary_database
from tests.scrapyd_node import ScrapydNode, running_node, sample_urls, slow_urls, unique
from tests.webhook_receiver import JOB_SECRET, SECRET, Receiver, verifies, webhook_receiver

ENDED = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-webhooks"),
        options={"max_proc": "2", "poll_interval": "0.2"},
        jobstatus={
            "webhooks": receiver.url,
            "webhook_secret": SECRET,
            "webhook_retry_delay": "0.5",
        },
    )


@pytest.fixture(autouse=True)
def answering(receiver: Receiver) -> None:
    receiver.answer = lambda attempt: 200
    receiver.retry_after = None


def events_of(receiver: Receiver, job: str) -> list[str]:
    return sorted(
        r.payload["type"] for r in receiver.accepted() if r.payload["data"]["job_id"] == job
    )


def wait_events(receiver: Receiver, job: str, expected: list[str], timeout: float = 30) -> None:
    wait_for(
        lambda: events_of(receiver, job) == sorted(expected),
        timeout=timeout,
        what=f"{expected} of job {job}",
    )


def test_a_job_s_events_are_delivered_signed_and_once(node: ScrapydNode, receiver: Receiver, site):
    receiver.answer = lambda attempt: 503 if attempt <= 2 else 200
    job = unique("hooked")
    assert node.schedule(job=job, urls=sample_urls(site)).json()["status"] == "ok"
    node.wait_status(job, *ENDED)
    wait_events(receiver, job, ["job.completed", "job.started"])
    completed = next(
        r for r in receiver.accepted()
        if r.payload["data"]["job_id"] == job and r.payload["type"] == "job.completed"
    )  # fmt: skip
    assert completed.payload["data"]["status"] == "completed"
    assert completed.payload["data"]["node"] == node.get("daemonstatus.json").json()["node_name"]
    assert [a.answered for a in receiver.attempts(completed.event_id)] == [503, 503, 200]
    # The node records an attempt once the receiver has answered.
    log = wait_for(
        lambda: (
            (found := node.get("webhooks.json", {"job": job}).json()["deliveries"])
            and all(d["status"] == "delivered" for d in found)
            and found
        ),
        what="the deliveries recorded",
    )
    assert sorted(d["type"] for d in log) == ["job.completed", "job.started"]
    assert all(len(d["attempts"]) == 3 for d in log)
    assert node.get("webhooks.json", {"job": "no-such-job"}).code == 404


def test_a_job_s_own_receiver_verifies_with_its_own_key_which_is_never_shown(
    node: ScrapydNode, receiver: Receiver, site
):
    with webhook_receiver(JOB_SECRET) as own:
        job = unique("own")
        answer = node.schedule(
            job=job, urls=f"{site}/sample/", webhook=own.url + "?job=own", webhook_secret=JOB_SECRET
        )
        assert answer.json()["status"] == "ok"
        node.wait_status(job, *ENDED)
        # Accepted: verified by each receiver with its own key.
        wait_events(own, job, ["job.completed", "job.started"])
        wait_events(receiver, job, ["job.completed", "job.started"])
        mine, node_s = own.attempts_of_job(job), receiver.attempts_of_job(job)
    assert all(verifies(r, JOB_SECRET) and not verifies(r, SECRET) for r in mine)
    assert all(verifies(r, SECRET) and not verifies(r, JOB_SECRET) for r in node_s)
    document = node.status(job)
    assert document["webhooks"] == [receiver.url, own.url + "?job=***"]
    assert "webhook_secret" not in document["args"]
    answers = [
        node.get(endpoint, params)
        for endpoint, params in [
            ("jobstatus.json", {"job": job}),
            ("jobs.json", {}),
            ("events.json", {"since": 0, "job": job}),
            ("webhooks.json", {"job": job}),
            ("joberrors.json", {"job": job}),
            ("metrics", {}),
            ("dashboard", {}),
            ("listjobs.json", {}),
            ("status.json", {"job": job}),
        ]
    ]
    assert all(a.code == 200 for a in answers), [(a.code, a.body[:200]) for a in answers]
    key = JOB_SECRET.encode()
    shown = [a.body for a in answers] + [r.body for r in mine + node_s]
    crawl_log = next(node.workdir.rglob(f"{job}.log"))
    shown += [node.log.read_bytes(), crawl_log.read_bytes()]
    assert not [text for text in shown if key in text or key[6:] in text]


def test_a_job_s_own_webhook_without_its_key_is_refused_before_queueing(node: ScrapydNode, site):
    short = "whsec_" + base64.b64encode(b"k" * 16).decode()
    eleven = " ".join(f"{site}/hook/{n}" for n in range(11))
    cases = [
        ({"webhook": f"{site}/hook"}, "webhook needs webhook_secret"),
        ({"webhook": f"{site}/hook", "webhook_secret": short}, "24 bytes or more"),
        ({"webhook": f"{site}/hook", "webhook_secret": SECRET[6:]}, "starts with whsec_"),
        ({"webhook_secret": JOB_SECRET}, "webhook_secret goes with webhook"),
        ({"webhook": eleven, "webhook_secret": JOB_SECRET}, "at most 10 webhook URLs"),
        ({"webhook": "ftp://x/", "webhook_secret": JOB_SECRET}, "only http and https"),
    ]
    for args, expected in cases:
        job = unique("refused")
        refused = node.schedule(job=job, urls=f"{site}/sample/", **args).json()
        assert refused["status"] == "error" and expected in refused["message"], refused
        assert "\n" not in refused["message"]
        assert not any(v in refused["message"] for k, v in args.items() if k == "webhook_secret")
        assert node.get("jobstatus.json", {"job": job}).code == 404


def test_a_crawl_killed_with_sigkill_still_produces_job_failed(
    node: ScrapydNode, receiver: Receiver, site
):
    job = unique("killed")
    node.schedule(job=job, urls=slow_urls(site, 4, 20))
    node.wait_status(job, "running")
    os.kill(node.crawl_pid(job), signal.SIGKILL)
    wait_events(receiver, job, ["job.failed", "job.started"])
    failed = next(r for r in receiver.of_type("job.failed") if r.payload["data"]["job_id"] == job)
    assert "SIGKILL" in failed.payload["data"]["error_message"]


def test_deliveries_pending_at_a_restart_are_made_after_it(
    node: ScrapydNode, receiver: Receiver, site
):
    receiver.answer = lambda attempt: 503  # down
    job = unique("restart")
    node.schedule(job=job, urls=f"{site}/sample/")
    node.wait_status(job, *ENDED)
    wait_for(lambda: len(receiver.attempts_of_job(job)) >= 2, what="failed attempts")
    node.stop()
    receiver.answer = lambda attempt: 200  # back
    node.start()
    wait_events(receiver, job, ["job.completed", "job.started"])


def test_a_receiver_that_hangs_never_holds_the_node(node: ScrapydNode, receiver: Receiver, site):
    receiver.answer = lambda attempt: None  # never answers
    job = unique("hang")
    node.schedule(job=job, urls=f"{site}/sample/")
    node.wait_status(job, *ENDED)
    wait_for(lambda: receiver.attempts_of_job(job), what="a delivery under way")
    # Deliveries hang in their own threads: the node answers at once.
    for _ in range(5):
        started = time.monotonic()
        assert node.get("jobstatus.json", {"job": job}).code == 200
        assert time.monotonic() - started < 2
    receiver.released.set()


# -- two nodes, one store ----------------------------------------------------------


def test_two_nodes_on_one_store_make_each_attempt_once(tmp_path, postgres_url, site):
    with webhook_receiver() as receiver, temporary_database(postgres_url) as db:
        nodes = [
            ScrapydNode(
                tmp_path / f"n{i}",
                options={"node_name": f"n{i}", "max_proc": "2", "poll_interval": "0.2"},
                jobstatus={"db": db, "webhooks": receiver.url, "webhook_secret": SECRET},
            )
            for i in (1, 2)
        ]
        try:
            for node in nodes:
                node.start()
            nodes[0].deploy()
            jobs = [unique("pair") for _ in range(6)]
            for job in jobs:
                nodes[0].schedule(job=job, urls=f"{site}/sample/")
            for job in jobs:
                wait_events(receiver, job, ["job.completed", "job.started"], timeout=60)
        finally:
            for node in nodes:
                node.stop()
        ids = [r.event_id for r in receiver.received]
        assert len(ids) == len(set(ids)) == 12  # every event once, no attempt twice


def test_a_job_pending_too_long_gets_a_warning_and_job_stalled(tmp_path, site):
    with webhook_receiver() as receiver:
        nodes = running_node(
            tmp_path,
            options={"max_proc": "1", "poll_interval": "0.2"},
            jobstatus={"webhooks": receiver.url, "webhook_secret": SECRET, "pending_timeout": "1"},
        )
        node = next(nodes)
        try:
            blocker, queued = unique("blocker"), unique("queued")
            node.schedule(job=blocker, urls=slow_urls(site, 2, 30))
            node.wait_status(blocker, "running")
            node.schedule(job=queued, urls=f"{site}/sample/")
            # The launcher looks every 5 s.
            wait_events(receiver, queued, ["job.stalled"], timeout=20)
            document = node.status(queued)
            assert document["status"] == "pending"
            assert document["warnings"] == ["stalled: pending for more than 1 s"]
            assert [h["step"] for h in document["history"]] == ["stalled"]
            node.post("jobcancel.json", {"job": blocker, "force": "1"})
            node.wait_status(queued, *ENDED)
            wait_events(receiver, queued, ["job.completed", "job.stalled", "job.started"])
        finally:
            nodes.close()
