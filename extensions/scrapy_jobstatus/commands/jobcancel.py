from __future__ import annotations

from typing import TYPE_CHECKING

from .._model import JobStatus
from ._base import EXIT_NOT_OK, JobCommand

if TYPE_CHECKING:
    import argparse


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options] JOB"

    def short_desc(self) -> str:
        return "Cancel a job: running requests finish and their results are kept"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--force",
            action="store_true",
            help="drop the in-flight requests instead of waiting for them",
        )

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job_id = self.job_id(args)
        after, job = self.jobs(opts).cancel(job_id, force=opts.force)
        if after is JobStatus.CANCELLING:
            print(f"job {job_id}: cancellation requested; status {job['status']}")
            return None
        if after is JobStatus.CANCELLED:
            print(f"job {job_id}: cancelled")
            return None
        print(f"job {job_id}: already {job['status']}, nothing to cancel")
        return EXIT_NOT_OK
