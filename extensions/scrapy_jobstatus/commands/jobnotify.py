from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from .._model import InvalidSetting
from .._store import process_alive
from .._webhooks import WebhookSender, WebhookSettings
from ._base import EXIT_BAD_INPUT, EXIT_NOT_OK, CommandError, JobCommand

if TYPE_CHECKING:
    import argparse

# Seconds between two looks for retries while --wait lasts.
POLL_INTERVAL = 0.5


class Command(JobCommand):
    def syntax(self) -> str:
        return "[options]"

    def short_desc(self) -> str:
        return "Deliver the webhook events left in the job store (run it from cron)"

    def long_desc(self) -> str:
        return (
            "Deliver every webhook event that is due, signed with JOBSTATUS_WEBHOOK_SECRET "
            "(a job's own receivers, named by schedule.json's webhook, with the key given "
            "with them): "
            "the events a crawl could not deliver before it ended (a receiver down, a crawl "
            "killed: its job ends failed here first). With --wait, go on delivering the "
            "retries that fall due meanwhile. "
            "Exits with 1 when a delivery was given up."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--wait",
            metavar="SECONDS",
            type=float,
            default=0.0,
            help="keep delivering the retries due within this many seconds (default: 0)",
        )

    def execute(self, args: list[str], opts: argparse.Namespace) -> int | None:
        if args:
            raise CommandError("jobnotify takes no job id", EXIT_BAD_INPUT)
        if opts.url:
            raise CommandError(
                "jobnotify delivers from a job store: give --db, not --url", EXIT_BAD_INPUT
            )
        if not 0 <= opts.wait <= 86400:
            raise CommandError("--wait must be 0 to 86400 seconds", EXIT_BAD_INPUT)
        assert self.settings is not None
        try:
            settings = WebhookSettings.from_settings(self.settings)
        except InvalidSetting as e:
            raise CommandError(str(e), EXIT_BAD_INPUT) from None
        if not settings.secret:
            print(
                "JOBSTATUS_WEBHOOK_SECRET is not set: only the deliveries to a job's own"
                " receivers, which carry their key, are made",
                file=sys.stderr,
            )
        location = self.jobs(opts).location
        sender = WebhookSender(location, settings.secret, settings.policy)
        outcomes = {"delivered": 0, "pending": 0, "failed": 0}
        deadline = time.monotonic() + opts.wait
        try:
            # A crawl killed with -9 gets its job.failed: its job ends here.
            store = sender.store
            store.reap_dead_jobs(store.node, process_alive)
            while True:
                attempts = sender.deliver_due(limit=100)
                for attempt in attempts:
                    outcomes[attempt.outcome] += 1
                if attempts:
                    continue
                left = sender.store.count_undelivered()
                if not left or time.monotonic() >= deadline:
                    break
                time.sleep(POLL_INTERVAL)
        finally:
            sender.close()
        print(
            f"{outcomes['delivered']} delivered, {outcomes['pending']} to retry, "
            f"{outcomes['failed']} given up; {left} left in the outbox"
        )
        return EXIT_NOT_OK if outcomes["failed"] else None
