"""What the job commands share: options, the store, one-line errors."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.utils.project import data_path

from .._model import InvalidJobId, validate_job_id
from .._store import JobStore

if TYPE_CHECKING:
    import argparse

# Exit statuses: 1 for an unknown job or a job that did not complete, 2 for
# bad input (Scrapy's own usage errors exit with 2 as well).
EXIT_NOT_OK = 1
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """Printed as one line on standard error; the command exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_NOT_OK):
        super().__init__(message)
        self.code = code


class LocalJobs:
    """The job store of this project, as the commands see it."""

    def __init__(self, store: JobStore, errors_kept: int):
        self.store = store
        self.errors_kept = errors_kept

    def status(self, job_id: str) -> dict[str, Any]:
        document = self.store.document(job_id, self.errors_kept)
        if document is None:
            raise CommandError(f"unknown job: {job_id}")
        return document

    def list(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        states, total = self.store.list_jobs(**filters)
        return self.store.summaries(states), total

    def cancel(self, job_id: str, force: bool) -> tuple[int, dict[str, Any]]:
        from .._store import JobNotFound

        try:
            outcome = self.store.request_cancel(job_id, force=force)
        except JobNotFound:
            raise CommandError(f"unknown job: {job_id}") from None
        return outcome.code, self.status(job_id)


class JobCommand(ScrapyCommand):
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--db", metavar="PATH", help="the job store (default: JOBSTATUS_DB)"
        )

    def jobs(self, opts: argparse.Namespace) -> LocalJobs:
        assert self.settings is not None
        path = opts.db or self.settings.get("JOBSTATUS_DB") or data_path("jobstatus.db")
        return LocalJobs(JobStore(path), self.settings.getint("JOBSTATUS_ERRORS_KEPT", 20))

    def job_id(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError("give exactly one job id", EXIT_BAD_INPUT)
        try:
            return validate_job_id(args[0])
        except InvalidJobId as exc:
            raise CommandError(str(exc), EXIT_BAD_INPUT) from None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            self.exitcode = self.execute(args, opts) or 0
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = exc.code
        except UsageError:
            raise
        except Exception as exc:  # never a traceback for the user
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.exitcode = EXIT_NOT_OK

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        raise NotImplementedError


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"
