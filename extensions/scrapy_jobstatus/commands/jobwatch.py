from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from .._model import JobStatus
from .._store import StoreError
from ._base import EXIT_BAD_INPUT, EXIT_NOT_OK, CommandError, JobCommand, percent

if TYPE_CHECKING:
    import argparse

BAR_WIDTH = 30


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


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options] JOB"

    def short_desc(self) -> str:
        return "Show a job's progress live until it ends (exit 0 only if it completed)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between reads")
        parser.add_argument(
            "--wait", type=float, default=0, help="seconds to wait for an unknown job to appear"
        )

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job_id = self.job_id(args)
        if opts.interval <= 0 or opts.wait < 0:
            raise CommandError("--interval must be above 0 and --wait not negative", EXIT_BAD_INPUT)
        jobs = self.jobs(opts)
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
            time.sleep(opts.interval)
        if tty:
            print()
        print(f"{job['status']}: {job['message']}")
        return None if job["status"] == JobStatus.COMPLETED else EXIT_NOT_OK
