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
        return "Resume a paused job: it is queued again and goes on where it stopped"

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job_id = self.job_id(args)
        answer = self.jobs(opts).resume(job_id)
        if answer.refusal is not None:
            print(answer.refusal)
            return EXIT_NOT_OK
        if answer.before is JobStatus.PAUSED:
            # A Scrapyd node sharing the store runs it; a plain crawl goes on
            # when run again with its JOBDIR.
            print(f"job {job_id}: resumed; status {answer.job['status']}")
        elif answer.before is JobStatus.PAUSING:
            print(f"job {job_id}: pause withdrawn; status {answer.job['status']}")
        else:
            print(f"job {job_id}: {answer.job['status']} already, nothing to resume")
        return None
