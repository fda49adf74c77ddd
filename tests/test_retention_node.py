"""A real Scrapyd node with small retention limits prunes its store by
itself, files and all, and events.json tells a follower what it missed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import yaml
from jsonschema import Draft202012Validator

from scrapy_jobstatus._jobdir import JobDir, jobdir_name
from scrapy_jobstatus._model import JobStatus
from scrapy_jobstatus._store import JobFilter, open_store
from tests.helpers import wait_for
from tests.scrapyd_node import ScrapydNode
from tests.test_retention import ended_job, pending, running
from tests.test_scrapyd_openapi import SPEC

if TYPE_CHECKING:
    from pathlib import Path


def test_a_node_prunes_its_store_by_itself(tmp_path: Path, location: str) -> None:
    workdir = tmp_path / "node"
    db = location if location.startswith("postgresql://") else str(workdir / "dbs" / "jobs.db")
    store = open_store(db)
    now = time.time()
    files = {}
    for i in range(6):
        job_id = f"ended{i}"
        ended_job(store, db, job_id, now - 600 + i, project="p", attempt=2)
        log = workdir / "logs" / "p" / "batch" / f"{job_id}.log"
        items = [workdir / "items" / "p" / "batch" / f"{job_id}{s}.jl" for s in ("", ".attempt2")]
        jobdir = workdir / "jobdirs" / jobdir_name(job_id)
        for path in (log, *items):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
        JobDir(jobdir).mark(job_id, resumable=True)
        files[job_id] = (log, *items, jobdir)
    paused = pending("paused")
    store.add_pending(paused)
    store.request_pause("paused")
    store.start_job(running("running"))
    first = store.first_event_id()
    node = ScrapydNode(
        workdir,
        options={"items_dir": "items"},
        jobstatus={"db": db, "keep_finished": "3", "keep_days": "0", "warm_start": "off"},
    )
    node.start()
    try:
        # The line comes once the prune is done, its files removed too.
        wait_for(
            lambda: "Pruned 3 ended jobs" in node.log_text(), timeout=30, what="the node's prune"
        )
        kept = {job.job_id for job in store.list_jobs(JobFilter()).jobs}
        assert kept == {"ended3", "ended4", "ended5", "paused", "running"}
        assert store.get("paused").status is JobStatus.PAUSED
        for job_id in ("ended0", "ended1", "ended2"):
            assert not any(path.exists() for path in files[job_id]), job_id
        for job_id in ("ended3", "ended4", "ended5"):
            assert all(path.exists() for path in files[job_id][:3]), job_id

        # A follower behind the oldest event kept missed some: 410.
        oldest = store.first_event_id()
        assert oldest > first
        gone = node.get("events.json", {"since": first})
        assert gone.code == 410
        body = gone.json()
        assert (body["status"], body["oldest_id"]) == ("error", oldest)
        spec = yaml.safe_load(SPEC.read_text())
        schema = {"components": spec["components"], "$ref": "#/components/schemas/EventsGone"}
        Draft202012Validator(schema).validate(body)
        again = node.get("events.json", {"since": oldest - 1})
        assert again.code == 200
        assert {event["job_id"] for event in again.json()["events"]} >= {"ended3", "ended5"}
    finally:
        node.stop()
        store.close()
