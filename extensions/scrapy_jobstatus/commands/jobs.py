from __future__ import annotations

from typing import TYPE_CHECKING

from .._model import JobStatus
from ._base import EXIT_BAD_INPUT, CommandError, JobCommand, LocalJobs, percent, print_json

if TYPE_CHECKING:
    import argparse


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options]"

    def short_desc(self) -> str:
        return "List jobs, newest first"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--project", help="only this project's jobs")
        parser.add_argument("--spider", help="only this spider's jobs")
        parser.add_argument("--status", help="only jobs with this status")
        parser.add_argument(
            "--limit", type=int, default=50, help="at most this many jobs (default: 50)"
        )
        parser.add_argument("--offset", type=int, default=0, help="skip this many jobs first")
        parser.add_argument("--json", action="store_true", help="print the list as JSON")
        parser.add_argument(
            "--prune-keep",
            type=int,
            metavar="N",
            help="first delete finished jobs beyond the newest N (local store only)",
        )
        parser.add_argument(
            "--prune-days",
            type=float,
            metavar="DAYS",
            help="first delete jobs finished more than DAYS days ago (local store only)",
        )

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        if opts.status is not None and opts.status not in set(JobStatus):
            raise CommandError(
                f"--status: {opts.status!r} is not one of {', '.join(JobStatus)}", EXIT_BAD_INPUT
            )
        if not 1 <= opts.limit <= 1000 or opts.offset < 0:
            raise CommandError(
                "--limit must be 1 to 1000 and --offset not negative", EXIT_BAD_INPUT
            )
        if (opts.prune_keep is not None and opts.prune_keep < 0) or (
            opts.prune_days is not None and opts.prune_days < 0
        ):
            raise CommandError("--prune-keep and --prune-days must not be negative", EXIT_BAD_INPUT)
        jobs_source = self.jobs(opts)
        if opts.prune_keep is not None or opts.prune_days is not None:
            if not isinstance(jobs_source, LocalJobs):
                raise CommandError(
                    "--prune-keep and --prune-days work on the local store, not --url",
                    EXIT_BAD_INPUT,
                )
            older_than = None if opts.prune_days is None else opts.prune_days * 86400
            pruned = jobs_source.prune(keep=opts.prune_keep, older_than=older_than)
            print(f"pruned {pruned} finished jobs")
        jobs, total = jobs_source.list(
            project=opts.project,
            spider=opts.spider,
            status=opts.status,
            limit=opts.limit,
            offset=opts.offset,
        )
        if opts.json:
            print_json({"jobs": jobs, "total": total})
            return None
        row = "{:<34} {:<12} {:<11} {:>5} {:>7} {:>7} {:>6}  {}"
        print(row.format("JOB", "SPIDER", "STATUS", "PROG", "PAGES", "DOCS", "FAILED", "CREATED"))
        for job in jobs:
            print(
                row.format(
                    job["job_id"][:34],
                    (job["spider"] or "-")[:12],
                    job["status"],
                    percent(job["progress"]),
                    job["total_pages_crawled"],
                    job["total_documents_found"],
                    job["responses_failed"],
                    job["created_at"] or "-",
                )
            )
        print(f"{len(jobs)} of {total} jobs")
        return None
