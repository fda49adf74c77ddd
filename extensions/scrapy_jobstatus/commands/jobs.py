from __future__ import annotations

from typing import TYPE_CHECKING

from .._defaults import default
from .._model import InvalidSetting, JobStatus
from .._retention import DAY, DELIVERIES_KEPT_PAST_MAX_AGE
from .._settings import parse_retention, setting_number
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
            "--prune",
            action="store_true",
            help="first delete the ended jobs beyond JOBSTATUS_KEEP_FINISHED and those ended"
            " more than JOBSTATUS_KEEP_DAYS days ago (local store only)",
        )
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

    def _retention(self, opts: argparse.Namespace) -> tuple[int | None, float | None, float | None]:
        """What to prune: the ended jobs kept, their days, and the age of the
        deliveries that go; None for no limit. ``--prune`` reads the
        project's JOBSTATUS_KEEP_FINISHED and JOBSTATUS_KEEP_DAYS (0: no
        limit); --prune-keep and --prune-days win over them."""
        keep = opts.prune_keep
        days = opts.prune_days
        deliveries_for = None
        if opts.prune:
            assert self.settings is not None
            try:
                keep_finished, keep_days = parse_retention(self.settings)
                max_age = setting_number(
                    "JOBSTATUS_WEBHOOK_MAX_AGE",
                    self.settings.get("JOBSTATUS_WEBHOOK_MAX_AGE"),
                    default("JOBSTATUS_WEBHOOK_MAX_AGE"),
                )
            except InvalidSetting as e:
                raise CommandError(str(e), EXIT_BAD_INPUT) from None
            if keep is None and keep_finished:
                keep = keep_finished
            if days is None and keep_days:
                days = keep_days
            deliveries_for = max_age + DELIVERIES_KEPT_PAST_MAX_AGE
        return keep, days, deliveries_for

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
        pruning = opts.prune or opts.prune_keep is not None or opts.prune_days is not None
        retention = self._retention(opts) if pruning else None
        jobs_source = self.jobs(opts)
        if retention is not None:
            if not isinstance(jobs_source, LocalJobs):
                raise CommandError(
                    "--prune, --prune-keep and --prune-days work on the local store, not --url",
                    EXIT_BAD_INPUT,
                )
            keep, days, deliveries_for = retention
            older_than = None if days is None else days * DAY
            pruned = jobs_source.prune(keep, older_than, deliveries_for)
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
