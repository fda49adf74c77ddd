"""A crawl's JOBDIR, as pause and resume use it.

Scrapy keeps a crawl's state in its JOBDIR (the scheduler's queue, the seen
requests, ``spider.state``) and goes on from it when the crawl runs again.
Beside them, ``jobstatus.json`` names the job the JOBDIR belongs to and
whether its state is whole: it is only once the crawl paused, for Scrapy
writes the index of its queue when the spider closes. A crawl killed or
ended otherwise leaves a state no crawl can go on from: the next run starts
over, with an empty JOBDIR.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._defaults import DEFAULTS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from scrapy.settings import BaseSettings

    from ._retention import PrunedJob

logger = logging.getLogger("scrapy_jobstatus.extension")

MARKER = "jobstatus.json"
# The fingerprints of the start requests the crawl has sent: a resumed crawl
# sends the others only (the rest are in the queue, or done).
STARTED = "jobstatus.started"
# Held by the crawl that uses the JOBDIR; another waits this long for it.
LOCK = "jobstatus.lock"
HOLD_WAIT: float = DEFAULTS["JOBSTATUS_JOBDIR_WAIT"]
# Set by the add-on when the JOBDIR is held by another crawl.
BUSY_JOBDIR = "JOBSTATUS_BUSY_JOBDIR"


def jobdir_name(job_id: str) -> str:
    """The name of a job's JOBDIR under a node's directory of JOBDIRs: a job
    id never becomes part of a path."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:40]


class JobDir:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._started: IO[str] | None = None

    def read(self) -> dict[str, Any]:
        """The marker: ``job_id`` and ``resumable``; empty when there is none
        (or it cannot be read: then nothing can be trusted)."""
        try:
            data = json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def job_id(self) -> str | None:
        job_id = self.read().get("job_id")
        return job_id if isinstance(job_id, str) else None

    @property
    def resumable(self) -> bool:
        return self.read().get("resumable") is True

    def mark(self, job_id: str, resumable: bool) -> None:
        """Write the marker, whole or not at all."""
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f".{MARKER}.tmp"
        temporary.write_text(json.dumps({"job_id": job_id, "resumable": resumable}))
        os.replace(temporary, self.path / MARKER)

    def start_over(self) -> None:
        """Empty the JOBDIR but for its marker (made not resumable): the
        next crawl starts from nothing."""
        job_id = self.job_id
        if self.path.is_dir():
            for entry in self.path.iterdir():
                if entry.name in (MARKER, LOCK):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        if job_id is not None:
            self.mark(job_id, resumable=False)

    # -- the start requests sent ------------------------------------------------

    def started_requests(self) -> Counter[str]:
        try:
            return Counter((self.path / STARTED).read_text().split())
        except OSError:
            return Counter()

    def record_started(self, fingerprints: Iterable[str]) -> None:
        if self._started is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._started = (self.path / STARTED).open("a")
        self._started.writelines(f"{f}\n" for f in fingerprints)
        self._started.flush()

    def close(self) -> None:
        if self._started is not None:
            self._started.close()
            self._started = None


class JobDirSession:
    """A crawl's JOBDIR from its opening to its close: whether the crawl goes
    on from it (the job was paused), marked as the job's while it runs, kept
    whole when it pauses, released for the next run."""

    def __init__(self, jobdir: JobDir | None, resuming: bool = False, error: str | None = None):
        self.jobdir = jobdir
        self.resuming = resuming
        # Why the job cannot run with this JOBDIR: it fails, saying so.
        self.error = error
        # The job the JOBDIR belongs to, when it names one.
        self.job_id = jobdir.job_id if jobdir is not None else None

    @classmethod
    def from_settings(cls, settings: BaseSettings, pausable: bool) -> JobDirSession:
        """Decide whether the crawl goes on from its JOBDIR, before the
        scheduler opens it."""
        if pausable and settings.get("JOBSTATUS_JOBDIR") and not settings.get("JOBDIR"):
            logger.error(
                "JOBSTATUS_PAUSABLE needs the add-on (ADDONS = {'scrapy_jobstatus.Addon': 100}), "
                "which gives the crawl its JOBDIR: the job cannot be paused"
            )
        busy = settings.get(BUSY_JOBDIR)
        error = f"the JOBDIR {busy} is used by another crawl" if busy else None
        path = settings.get("JOBDIR")
        if not path:
            return cls(None, error=error)
        jobdir = JobDir(os.path.abspath(path))
        marker = jobdir.read()
        resuming = marker.get("resumable") is True
        # The JOBDIR a Scrapyd node gives a job is never resumed but after
        # a pause; one of the user's is left as it is, unless it is ours.
        given_by_node = settings.get("JOBSTATUS_JOBDIR") == path
        if not resuming and (marker or given_by_node):
            # Killed, failed or ended before: what is there cannot be gone on
            # from (Scrapy writes its queue's index only when it closes).
            jobdir.start_over()
        return cls(jobdir, resuming, error)

    @property
    def path(self) -> Path | None:
        return self.jobdir.path if self.jobdir is not None else None

    def check(self, job_id: str) -> None:
        """The job is ``job_id``: a JOBDIR paused by another job is not its."""
        if self.resuming and job_id != self.job_id and not self.error:
            self.error = (
                f"the JOBDIR {self.path} holds the paused crawl of job "
                f"{self.job_id!r}, not of job {job_id!r}"
            )
            self.resuming = False

    def opened(self, job_id: str) -> None:
        if self.jobdir is not None:
            self.jobdir.mark(job_id, resumable=False)  # until it pauses

    def paused(self, job_id: str) -> None:
        """Scrapy has written the crawl's state (the scheduler closed before
        spider_closed): whole, before any crawl may resume it."""
        if self.jobdir is not None:
            self.jobdir.mark(job_id, resumable=True)

    def close(self) -> None:
        if self.jobdir is not None:
            release(self.jobdir.path)  # the next run's crawl may start


# The JOBDIRs this process holds, their lock files open.
_HELD: dict[Path, IO[str]] = {}


def hold(path: str | os.PathLike[str], wait: float = HOLD_WAIT) -> bool:
    """Hold a JOBDIR until ``release``; False when another process holds it
    for ``wait`` seconds more (two crawls on one JOBDIR would mix their
    queues; the crawl of a paused run may still be exiting). The lock goes
    with the process, killed or not."""
    path = Path(path).resolve()
    if path in _HELD:
        return True
    path.mkdir(parents=True, exist_ok=True)
    lock = (path / LOCK).open("a")  # noqa: SIM115 (held until released)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                lock.close()
                return False
            time.sleep(0.1)
        else:
            _HELD[path] = lock
            return True


def release(path: str | os.PathLike[str]) -> None:
    lock = _HELD.pop(Path(path).resolve(), None)
    if lock is not None:
        lock.close()


def remove_jobdir(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_pruned_jobdirs(jobs: Iterable[PrunedJob]) -> None:
    """The JOBDIRs of jobs pruned from the store, each if its marker names
    that job (a directory of the user's that no job marked stays)."""
    for job in jobs:
        if job.jobdir is not None and JobDir(job.jobdir).job_id == job.job_id:
            remove_jobdir(job.jobdir)
