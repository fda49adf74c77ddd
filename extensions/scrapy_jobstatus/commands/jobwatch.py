"""scrapy jobwatch: a job's progress, live, until it ends.

With --url, the command learns of the job's changes from the node's event
stream (events.json), long-polled in a thread: the status is read again as
soon as an event of the job comes, and every few seconds while the job runs
for its counters, which change without events. A node without events.json is
polled, as the local store always is."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .._model import JobStatus
from .._store import StoreError
from ._base import EXIT_BAD_INPUT, EXIT_NOT_OK, CommandError, JobCommand, RemoteJobs, percent

if TYPE_CHECKING:
    import argparse

BAR_WIDTH = 30
# Seconds an events.json request waits for an event of the job.
LONG_POLL = 20.0
# With events: seconds between two reads of an active job's counters (or
# --interval if longer); a pending job is read again on its events, or after
# PENDING_REFRESH seconds.
PROGRESS_REFRESH = 2.0
PENDING_REFRESH = 30.0


def progress_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    if progress is None:
        bar = "?" * BAR_WIDTH
    else:
        filled = round(BAR_WIDTH * progress / 100)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return (
        f"[{bar}] {percent(progress):>4} {job['status']:<10} "
        f"pages {job['total_pages_crawled']}  docs {job['total_documents_found']}  "
        f"failed {job['responses_failed']}  in flight {job['requests_in_flight']}"
    )


class EventWatch:
    """A job's events on a node, long-polled in a thread: ``wait`` returns
    as soon as one comes. Its ``alive`` goes false for good if the stream
    fails; the watcher polls the job instead."""

    def __init__(self, jobs: RemoteJobs, job_id: str, since: int):
        self.jobs = jobs
        self.job_id = job_id
        self.since = since
        self.alive = True
        self._changed = threading.Event()
        self._stopped = False
        # A daemon: its request, waiting on the node, does not hold the exit.
        threading.Thread(target=self._run, name="jobwatch-events", daemon=True).start()

    @classmethod
    def open(cls, jobs: RemoteJobs, job_id: str) -> EventWatch | None:
        """The watch, from the node's latest event id: nothing committed
        after the job's next read is missed. None if the node has no event
        stream."""
        try:
            answer = jobs.events(None)
        except CommandError:
            return None  # an unreachable node: the status reads say why
        return None if answer is None else cls(jobs, job_id, answer[1])

    def _run(self) -> None:
        while not self._stopped:
            try:
                answer = self.jobs.events(self.since, self.job_id, wait=LONG_POLL)
            except (CommandError, KeyError, TypeError):
                answer = None
            if answer is None:
                self.alive = False
                self._changed.set()
                return
            events, self.since = answer
            if events:
                self._changed.set()

    def wait(self, timeout: float) -> None:
        """Until an event of the job comes, ``timeout`` seconds at most."""
        self._changed.wait(timeout)
        self._changed.clear()

    def stop(self) -> None:
        self._stopped = True


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options] JOB"

    def short_desc(self) -> str:
        return "Show a job's progress live until it ends (exit 0 only if it completed)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--interval",
            type=float,
            default=0.5,
            help="seconds between reads (with --url and the node's events.json: a read on each "
            f"event of the job, else every {PROGRESS_REFRESH:g} s or --interval if longer)",
        )
        parser.add_argument(
            "--wait", type=float, default=0, help="seconds to wait for an unknown job to appear"
        )

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job_id = self.job_id(args)
        if opts.interval <= 0 or opts.wait < 0:
            raise CommandError("--interval must be above 0 and --wait not negative", EXIT_BAD_INPUT)
        jobs = self.jobs(opts)
        watch = EventWatch.open(jobs, job_id) if isinstance(jobs, RemoteJobs) else None
        try:
            job = self._follow(jobs, job_id, opts, watch)
        finally:
            if watch is not None:
                watch.stop()
        print(f"{job['status']}: {job['message']}")
        return None if job["status"] == JobStatus.COMPLETED else EXIT_NOT_OK

    def _follow(
        self, jobs: Any, job_id: str, opts: argparse.Namespace, watch: EventWatch | None
    ) -> dict[str, Any]:
        """The job's progress line on each change, until it ends; its last
        status document."""
        give_up_at = time.monotonic() + opts.wait
        tty = sys.stdout.isatty()
        last = None
        while True:
            try:
                job = jobs.status(job_id)
            except (CommandError, StoreError):  # not there yet: no job, or no store
                if time.monotonic() >= give_up_at:
                    raise
                time.sleep(opts.interval)
                continue
            line = progress_line(job)
            if line != last:
                # On a terminal the bar is redrawn in place; in a log, a line
                # per change.
                print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
                last = line
            if not job["is_active"]:
                break
            if watch is not None and watch.alive:
                pending = job["status"] == JobStatus.PENDING
                watch.wait(PENDING_REFRESH if pending else max(opts.interval, PROGRESS_REFRESH))
            else:
                time.sleep(opts.interval)
        if tty:
            print()
        return job
