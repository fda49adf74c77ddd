from __future__ import annotations

from typing import TYPE_CHECKING

from .._model import errors_not_recorded
from ._base import JobCommand, percent, print_json

if TYPE_CHECKING:
    import argparse


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options] JOB"

    def short_desc(self) -> str:
        return "Show a job's status"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="print the status document as JSON")

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        job = self.jobs(opts).status(self.job_id(args))
        if opts.json:
            print_json(job)
            return None
        print(f"job:         {job['job_id']} ({job['spider']})")
        print(
            f"status:      {job['status']}"
            + (f" ({job['completion_reason']})" if job["completion_reason"] else "")
        )
        print(f"message:     {job['message']}")
        attempt, retries = job.get("attempt", 1), job.get("retries", 0)
        if retries or attempt > 1:
            print(f"attempt:     {attempt} of {max(attempt, retries + 1)}")
        if job.get("retry_at"):
            print(f"retry at:    {job['retry_at']}")
        print(f"progress:    {percent(job['progress'])}")
        print(
            f"pages:       {job['total_pages_crawled']} crawled, "
            f"{job['responses_failed']} failed, {job['requests_pending']} pending, "
            f"{job['requests_in_flight']} in flight"
        )
        print(f"documents:   {job['total_documents_found']}")
        not_recorded = errors_not_recorded(job["warnings"])
        print(
            f"errors:      {job['error_count']}"
            + (f" ({not_recorded} not recorded)" if not_recorded else "")
        )
        print(f"started:     {job['started_at'] or '-'}")
        print(f"completed:   {job['completed_at'] or '-'}")
        for warning in job["warnings"]:
            print(f"warning:     {warning}")
        return None
