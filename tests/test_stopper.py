"""The stop controller without a crawl: which stop a signal or the store's
answer makes of the tracker's decisions. The engine calls themselves (the
close, the forced stop) are the crawls' of tests/test_crawl_lifecycle.py
and tests/test_faults.py."""

from __future__ import annotations

from pathlib import Path

from scrapy.utils.test import get_crawler

from scrapy_jobstatus._jobdir import JobDir
from scrapy_jobstatus._model import JobState, JobStatus
from scrapy_jobstatus._stopper import StopController
from scrapy_jobstatus._store import SaveResult
from scrapy_jobstatus._tracker import JobTracker


class Controlled:
    """A stop controller over a tracker, counting the writes it asks for
    and keeping the close reasons it would give the engine (a crawler
    without a crawl has none)."""

    def __init__(self, jobdir: JobDir | None = None):
        self.saves = 0
        self.writes_now: list[float] = []
        self.closes: list[str] = []
        self.stopper = StopController(
            get_crawler(), grace=30.0, save=self.save, write_now=self.writes_now.append
        )
        self.stopper.close = self.closes.append  # type: ignore[method-assign]
        self.tracker = JobTracker(JobState(job_id="j", status=JobStatus.RUNNING, started_at=1.0))
        self.jobdir = jobdir

    def save(self) -> None:
        self.saves += 1

    def open(self) -> None:
        self.stopper.follow(self.tracker, self.jobdir)
        self.stopper.start(interval=1.0, tick=lambda: None)

    def close(self) -> None:
        self.stopper.stop_timers()


def asked(cancel: float | None = None, force: bool = False, pause: float | None = None):
    return SaveResult(True, False, cancel, force, pause)


def test_a_signal_before_the_job_opens_cancels_it_as_soon_as_it_does() -> None:
    c = Controlled()
    c.stopper.shutdown_signal("SIGINT", 1, received_at=5.0)
    assert c.tracker.state.status is JobStatus.RUNNING  # nothing to stop yet
    c.open()
    try:
        assert c.tracker.state.status is JobStatus.CANCELLING
        assert c.tracker.state.cancel_requested_at == 5.0
        assert c.tracker.history[-1].details == "by signal"
        assert c.saves == 1
        assert c.closes == ["shutdown"]
    finally:
        c.close()


def test_a_signal_with_a_jobdir_pauses_the_job(tmp_path: Path) -> None:
    c = Controlled(JobDir(tmp_path / "jobdir"))
    c.open()
    try:
        c.stopper.shutdown_signal("SIGTERM", 1, received_at=7.0)
        assert c.tracker.state.status is JobStatus.PAUSING
        assert c.tracker.state.pause_requested_at == 7.0
        assert c.closes == ["paused"]
    finally:
        c.close()


def test_the_first_stop_decided_is_the_one_kept() -> None:
    c = Controlled()
    c.open()
    try:
        c.stopper.requested(asked(cancel=3.0))
        c.stopper.requested(asked(cancel=4.0))
        c.stopper.requested(asked(pause=5.0))
        assert c.tracker.state.status is JobStatus.CANCELLING
        assert c.tracker.state.cancel_requested_at == 3.0
        assert c.tracker.state.pause_requested_at is None
        assert [e.details for e in c.tracker.history] == ["by store"]
        assert c.closes == ["cancelled"]
    finally:
        c.close()


def test_a_pause_asked_of_a_crawl_without_a_jobdir_is_not_taken() -> None:
    c = Controlled()
    c.open()
    try:
        c.stopper.requested(asked(pause=5.0))
        assert c.tracker.state.status is JobStatus.RUNNING
        assert (c.saves, c.closes) == (0, [])
    finally:
        c.close()


def test_an_answer_of_the_store_is_ignored_once_the_crawl_is_untracked() -> None:
    c = Controlled()
    c.open()
    c.close()
    c.stopper.follow(None)
    c.stopper.requested(asked(cancel=3.0))
    c.stopper.shutdown_signal("SIGINT", 1, received_at=4.0)
    assert c.tracker.state.status is JobStatus.RUNNING
    assert (c.saves, c.closes) == (0, [])
