"""A crawl's JOBDIR from its opening to its close, without a crawl: whether
the crawl goes on from it, and what is kept. The crawls that pause and
resume are tests/test_crawl_pause.py's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from scrapy.settings import Settings

from scrapy_jobstatus._jobdir import BUSY_JOBDIR, JobDir, JobDirSession


def session_of(pausable: bool = False, **settings: object) -> JobDirSession:
    return JobDirSession.from_settings(Settings(settings), pausable)


def crawled(path: Path) -> Path:
    """A JOBDIR with a crawl's state in it (Scrapy's queue, say)."""
    (path / "requests.queue").mkdir(parents=True)
    (path / "requests.queue" / "p0").write_text("queue")
    (path / "requests.seen").write_text("fingerprints")
    return path


def test_without_a_jobdir_nothing_is_resumed_or_kept() -> None:
    session = session_of()
    assert (session.jobdir, session.path, session.job_id) == (None, None, None)
    assert not session.resuming and session.error is None
    session.opened("job1")
    session.paused("job1")
    session.close()


def test_a_paused_jobdir_is_gone_on_from_whole(tmp_path: Path) -> None:
    path = crawled(tmp_path / "jobdir")
    JobDir(path).mark("job1", resumable=True)
    session = session_of(JOBDIR=str(path))
    assert session.resuming and session.job_id == "job1"
    assert (path / "requests.seen").read_text() == "fingerprints"
    session.check("job1")
    assert session.resuming and session.error is None


def test_a_jobdir_of_a_crawl_that_did_not_pause_starts_over(tmp_path: Path) -> None:
    path = crawled(tmp_path / "jobdir")
    JobDir(path).mark("job1", resumable=False)
    session = session_of(JOBDIR=str(path))
    assert not session.resuming and session.job_id == "job1"
    assert sorted(p.name for p in path.iterdir()) == ["jobstatus.json"]


def test_a_users_jobdir_that_is_not_ours_is_left_as_it_is(tmp_path: Path) -> None:
    path = crawled(tmp_path / "jobdir")
    session = session_of(JOBDIR=str(path))
    assert not session.resuming and session.job_id is None
    assert (path / "requests.queue" / "p0").read_text() == "queue"


def test_the_jobdir_a_node_gives_is_emptied_unless_paused(tmp_path: Path) -> None:
    path = crawled(tmp_path / "jobdir")
    session_of(JOBDIR=str(path), JOBSTATUS_JOBDIR=str(path))
    assert list(path.iterdir()) == []


def test_a_jobdir_paused_by_another_job_fails_the_job_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "jobdir"
    JobDir(path).mark("job1", resumable=True)
    session = session_of(JOBDIR=str(path))
    session.check("job2")
    assert not session.resuming
    assert session.error == (
        f"the JOBDIR {path} holds the paused crawl of job 'job1', not of job 'job2'"
    )


def test_a_jobdir_used_by_another_crawl_fails_the_job(tmp_path: Path) -> None:
    session = session_of(**{BUSY_JOBDIR: "/somewhere/jobdir"})
    assert session.error == "the JOBDIR /somewhere/jobdir is used by another crawl"
    # The first reason is kept.
    session.check("job2")
    assert session.error == "the JOBDIR /somewhere/jobdir is used by another crawl"


def test_the_marker_says_whose_the_jobdir_is_and_whether_it_may_be_resumed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobdir"
    session = session_of(JOBDIR=str(path))
    session.opened("job1")
    assert JobDir(path).read() == {"job_id": "job1", "resumable": False}
    session.paused("job1")
    assert JobDir(path).read() == {"job_id": "job1", "resumable": True}
    session.close()


def test_pausable_without_the_add_on_says_the_job_cannot_be_paused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="scrapy_jobstatus"):
        session = session_of(pausable=True, JOBSTATUS_JOBDIR=str(tmp_path / "jobdir"))
    assert session.jobdir is None
    (record,) = caplog.records
    assert "JOBSTATUS_PAUSABLE needs the add-on" in record.getMessage()
