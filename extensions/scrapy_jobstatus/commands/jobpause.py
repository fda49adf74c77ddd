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
        return "Pause a job: running requests finish and its crawl state is kept, to resume it"

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job_id = self.job_id(args)
        answer = self.jobs(opts).pause(job_id)
        if answer.refusal is not None:
            print(answer.refusal)
            return EXIT_NOT_OK
        if answer.after is JobStatus.PAUSING:
            print(f"job {job_id}: pause requested; status {answer.job['status']}")
        elif answer.before is JobStatus.PAUSED:
            print(f"job {job_id}: paused already")
        else:
            print(f"job {job_id}: paused")
        return None
