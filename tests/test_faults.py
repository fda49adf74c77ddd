"""Faults are normal events: signals at any moment of start-up, a store file
deleted, unusable or read-only, a full disk. Real ``scrapy crawl`` processes
against the local site; the job's record must match what the process did, and
monitoring failing must never cost the user the crawl."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_lines, run_crawl, start_crawl, stored_document, wait_for

FAST = {"JOBSTATUS_INTERVAL": "0.2", "RETRY_ENABLED": "False"}
# Pages one after the other: the store breaks while the crawl goes on.
ONE_AT_A_TIME = {"CONCURRENT_REQUESTS": "1"}


def slow_urls(site: str, count: int, delay: float) -> str:
    return ",".join(f"{site}/slow?delay={delay}&n={i}" for i in range(count))


def valid_lines(feed: Path) -> list[dict]:
    """The feed's items; every line must be whole JSON."""
    return read_lines(feed)


def errors_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "] ERROR:" in line]


# -- F1: a signal at any moment of start-up ------------------------------------


# What Python prints when it drops a KeyboardInterrupt raised where it
# cannot be raised (a callback of its import locks).
LOST_BY_PYTHON = ("Exception ignored in", "KeyboardInterrupt")


def start_up_time(tmp_path: Path, site: str, mode: dict[str, str]) -> float:
    """Seconds from starting four crawls to their jobs all open (the machine
    may be loaded: the moments of the test follow)."""
    began = time.monotonic()
    crawls = []
    for i in range(4):
        work = tmp_path / f"calibration-{i}"
        work.mkdir()
        crawls.append(
            (
                work,
                start_crawl(
                    "batch",
                    work / "jobs.db",
                    work / "crawl.log",
                    args={"urls": slow_urls(site, 2, 2), "_job": "job1"},
                    settings={**mode, **FAST},
                ),
            )
        )
    try:
        for work, _ in crawls:
            wait_for(
                lambda w=work: stored_document(w / "jobs.db"), timeout=60, what="a job to open"
            )
    finally:
        for _, process in crawls:
            process.kill()
            process.wait()
    return max(time.monotonic() - began, 2.0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_of_start_up_never_fails_the_job(
    tmp_path, site, signum, reactor_mode
):
    # Moments spread over start-up: imports, settings, the job opening, the
    # first requests of a crawl that would last 6 s. Four crawls at a time,
    # over twice what opening a job takes on this machine now (shared: its load varies).
    span = start_up_time(tmp_path, site, reactor_mode) * 2
    delays = [i * span / 15 for i in range(16)]
    runs = []
    for batch in range(0, len(delays), 4):
        started = []
        for delay in delays[batch : batch + 4]:
            work = tmp_path / f"at-{delay:.2f}"
            work.mkdir()
            process = start_crawl(
                "batch",
                work / "jobs.db",
                work / "crawl.log",
                output=work / "items.jl",
                args={"urls": slow_urls(site, 6, 2), "_job": "job1"},
                settings={**reactor_mode, **FAST, "CONCURRENT_REQUESTS": "2"},
            )
            started.append((delay, work, process, time.monotonic()))
        sent_at = {}
        for delay, _, process, began in started:
            # The moment is the point of the test: not a wait for a condition.
            time.sleep(max(0.0, began + delay - time.monotonic()))
            process.send_signal(signum)
            sent_at[delay] = time.time()
        for delay, work, process, _ in started:
            returncode = process.wait(60)
            runs.append((delay, work, returncode, sent_at[delay]))
    for delay, work, returncode, signalled_at in runs:
        doc = stored_document(work / "jobs.db")
        items = valid_lines(work / "items.jl")
        log = (work / "crawl.log").read_text()
        if doc is None:
            # Signalled before the extension existed: no job, nothing crawled.
            assert items == [], (delay, log[-2000:])
            continue
        before_scrapy = log.partition("[scrapy.utils.log]")[0]
        if all(line in before_scrapy for line in LOST_BY_PYTHON):
            # Python's own SIGINT handler raised in one of its import locks'
            # callbacks, before Scrapy started, and dropped it: the signal
            # never reached the crawl, which ran as if none came.
            assert doc["status"] == "completed", (delay, log[-2000:])
            continue
        ended = doc["completed_at"]
        if (
            doc["status"] == "completed"
            and datetime.fromisoformat(ended).timestamp() < signalled_at
        ):
            # The latest moments may come once a fast crawl ended, while
            # its process exits: the job was done. Late in the exit, once
            # Python has put back the signal's default action, the signal
            # ends the process (slow to exit on a busy machine).
            assert returncode in (0, -signum), (delay, returncode)
            assert doc["total_documents_found"] == 6 == len(items), delay
            continue
        assert doc["status"] == "cancelled", (delay, doc["status"], doc["error_message"])
        assert doc["completion_reason"] == "cancelled"
        assert returncode == 0, (delay, log[-2000:])
        assert doc["total_documents_found"] == len(items), delay
        assert "Traceback" not in log, (delay, log[-3000:])
    # The moments did reach a started job, not only the interpreter's start.
    opened = [work for _, work, _, _ in runs if stored_document(work / "jobs.db") is not None]
    # Some moments reached a started job, whatever the machine's load.
    assert len(opened) >= 3, [str(work) for work in opened]


# -- F2: the store file deleted mid-crawl --------------------------------------


def test_a_deleted_store_file_gets_the_job_again_from_the_crawls_memory(
    tmp_path, site, reactor_mode
):
    db, log, feed = tmp_path / "jobs.db", tmp_path / "crawl.log", tmp_path / "items.jl"
    urls = slow_urls(site, 8, 0.4) + f",{site}/status/404"
    process = start_crawl(
        "batch",
        db,
        log,
        output=feed,
        settings={**reactor_mode, **FAST, "CONCURRENT_REQUESTS": "2"},
        args={"urls": urls, "_job": "job1"},
    )
    wait_for(
        lambda: (d := stored_document(db)) and d["total_pages_crawled"] >= 2, what="first pages"
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert process.wait(60) == 0
    doc = stored_document(db)
    assert doc is not None, "the record was never written again"
    assert doc["status"] == "completed"
    assert doc["total_pages_crawled"] == 9 == len(valid_lines(feed))
    assert doc["error_count"] == 1 and doc["responses_failed"] == 1
    # The history came back from memory, from the start.
    assert [e["step"] for e in doc["history"]][:2] == ["opened", "stage fetch"]
    warnings = [
        line for line in log.read_text().splitlines() if "written again from memory" in line
    ]
    assert len(warnings) == 1, warnings


# -- F4: a store that cannot be used at start ------------------------------------


def test_an_unusable_store_at_start_leaves_the_crawl_running_unmonitored(
    tmp_path, site, reactor_mode
):
    (tmp_path / "a-file").write_text("not a directory")
    db, log, feed = tmp_path / "a-file" / "jobs.db", tmp_path / "crawl.log", tmp_path / "items.jl"
    code = run_crawl(
        "batch",
        db,
        log,
        output=feed,
        settings={**reactor_mode, **FAST, "JOBSTATUS_STORE_WAIT": "1"},
        args={"urls": f"{site}/sample/,{site}/sample/apple", "_job": "job1"},
    )
    assert code == 0
    assert len(valid_lines(feed)) == 2
    errors = errors_in(log)
    assert any("cannot open the job store" in line and "unmonitored" in line for line in errors)
    # One line at start, one at the end for the final status: no traceback.
    assert len(errors) == 2, errors
    assert "Traceback" not in log.read_text()


def test_a_store_unusable_at_start_gets_the_whole_job_once_it_comes_back(
    tmp_path, site, reactor_mode
):
    db, log, feed = tmp_path / "jobs.db", tmp_path / "crawl.log", tmp_path / "items.jl"
    db.mkdir()  # a directory where the store's file goes
    process = start_crawl(
        "batch",
        db,
        log,
        output=feed,
        settings={**reactor_mode, **FAST, **ONE_AT_A_TIME, "JOBSTATUS_STORE_WAIT": "60"},
        args={"urls": slow_urls(site, 4, 0.5), "_job": "job1"},
    )
    wait_for(lambda: "unmonitored" in log.read_text(), what="the store's error line")
    db.rmdir()
    assert process.wait(60) == 0
    doc = stored_document(db)
    assert doc is not None and doc["status"] == "completed"
    assert doc["total_pages_crawled"] == 4 == len(valid_lines(feed))
    # Started by the first write that went through, with its history from the start.
    assert [e["step"] for e in doc["history"]][:2] == ["opened", "stage fetch"]
    assert "written again from memory" not in log.read_text()


def test_a_required_store_that_cannot_be_used_refuses_the_crawl(tmp_path, site, reactor_mode):
    (tmp_path / "a-file").write_text("not a directory")
    db, log, feed = tmp_path / "a-file" / "jobs.db", tmp_path / "crawl.log", tmp_path / "items.jl"
    run_crawl(
        "batch",
        db,
        log,
        output=feed,
        settings={**reactor_mode, **FAST, "JOBSTATUS_REQUIRED": "True"},
        args={"urls": f"{site}/sample/", "_job": "job1"},
    )
    assert valid_lines(feed) == []
    (line,) = errors_in(log)
    assert "cannot open the job store" in line and "JOBSTATUS_REQUIRED" in line
    assert "jobstatus_store_unavailable" in log.read_text()


# -- F5: a store that becomes unwritable ---------------------------------------


def break_store(db: Path) -> None:
    """The store's path becomes unusable: a directory where the file was."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.mkdir()


def crawl_then_break_store(
    tmp_path: Path, site: str, mode: dict[str, str], pages: int, store_wait: float
):
    """A crawl whose store becomes unusable after its first page."""
    db, log, feed = tmp_path / "jobs.db", tmp_path / "crawl.log", tmp_path / "items.jl"
    process = start_crawl(
        "batch",
        db,
        log,
        output=feed,
        settings={**mode, **FAST, **ONE_AT_A_TIME, "JOBSTATUS_STORE_WAIT": str(store_wait)},
        args={"urls": slow_urls(site, pages, 0.5), "_job": "job1"},
    )
    try:
        wait_for(
            lambda: (d := stored_document(db)) and d["total_pages_crawled"] >= 1, what="first page"
        )
    except BaseException:
        process.kill()
        process.wait()
        raise
    break_store(db)
    return process, db, log, feed


def test_an_unwritable_store_is_retried_and_gets_the_final_status_when_it_comes_back(
    tmp_path, site, reactor_mode
):
    process, db, log, feed = crawl_then_break_store(
        tmp_path, site, reactor_mode, pages=4, store_wait=60
    )
    # The crawl goes on counting and ends; its final write waits for the store.
    wait_for(
        lambda: len(valid_lines(feed)) == 4 and "Closing spider" in log.read_text(),
        timeout=60,
        what="the crawl to finish",
    )
    assert process.poll() is None, "the crawl exited without waiting for the store"
    db.rmdir()
    assert process.wait(60) == 0
    doc = stored_document(db)
    assert doc is not None and doc["status"] == "completed"
    assert doc["total_pages_crawled"] == 4
    errors = errors_in(log)
    assert len(errors) == 1 and "retried with backoff" in errors[0], errors
    assert "usable again" in log.read_text()


def test_a_store_that_never_comes_back_is_waited_for_then_named_in_one_line(
    tmp_path, site, reactor_mode
):
    process, _, log, feed = crawl_then_break_store(
        tmp_path, site, reactor_mode, pages=3, store_wait=1.5
    )
    assert process.wait(60) == 0
    assert len(valid_lines(feed)) == 3
    final = [line for line in errors_in(log) if "final status" in line]
    assert len(final) == 1 and "within 1.5 s" in final[0] and "completed" in final[0], final


# -- F6: reads never write: a read-only store, a full disk ------------------------


@pytest.fixture
def finished_store(tmp_path, site) -> Path:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    db = store_dir / "jobs.db"
    code = run_crawl(
        "batch",
        db,
        tmp_path / "crawl.log",
        args={"urls": f"{site}/sample/,{site}/status/404", "_job": "job1"},
        settings=FAST,
    )
    assert code == 0
    return db


def read_commands(db: Path, **popen: object) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.run(  # noqa: S603 (the project's own commands)
            [sys.executable, "-m", "scrapy", *args, "--db", str(db)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            **popen,
        )
        for args in (["jobs", "--json"], ["jobstatus", "job1", "--json"])
    ]


def check_reads(results: list[subprocess.CompletedProcess[str]]) -> None:
    listing, status = results
    assert listing.returncode == 0, listing.stderr
    assert [j["job_id"] for j in json.loads(listing.stdout)["jobs"]] == ["job1"]
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["status"] == "completed" and doc["error_count"] == 1


def test_reads_work_on_a_read_only_store(finished_store, tmp_path):
    mount = tmp_path / "read-only"
    mount.mkdir()
    try:
        subprocess.run(  # noqa: S603, S607 (a read-only view of the store's directory)
            ["mount", "--bind", "-o", "ro", str(finished_store.parent), str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(f"cannot make a read-only mount here: {e}")
    try:
        check_reads(read_commands(mount / finished_store.name))
    finally:
        subprocess.run(["umount", str(mount)], check=True)  # noqa: S603, S607


def _full_disk() -> None:
    # No file may grow: what a full disk does to writers.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_reads_work_on_a_full_disk(finished_store):
    before = finished_store.read_bytes()
    check_reads(read_commands(finished_store, preexec_fn=_full_disk))
    assert finished_store.read_bytes() == before


def test_a_store_made_of_something_else_is_one_line(tmp_path):
    bogus = tmp_path / "jobs.db"
    bogus.write_text("not a database")
    results = read_commands(bogus)
    for result in results:
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
