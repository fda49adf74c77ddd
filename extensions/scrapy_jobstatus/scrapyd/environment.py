"""Scrapyd's environment of a crawl, for jobs that run more than once.

Scrapyd deletes the oldest log and items files of a spider beyond
``jobs_to_keep`` each time one of its jobs starts: the files of a paused job,
or of one waiting for its retry, would go before the job ends. Here they stay
until it has. A retry starts over, so each attempt after the first writes its
items to a file of its own (``<job>.attempt2.jl``); the runs of one attempt,
before and after a pause, write to the same file, appended.

The launcher installs it in place of Scrapyd's (Scrapyd has no option for
it). It overrides private methods of Scrapyd 1.6's Environment, checked with
the launcher's at start-up.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapyd.environ import Environment
from scrapyd.exceptions import DirectoryTraversalError
from scrapyd.utils import get_file_path, local_items

from .._model import TERMINAL_STATUSES
from .._store import StoreError

if TYPE_CHECKING:
    from scrapyd.config import Config

    from .._retention import PrunedJob
    from ._node import JobStatusNode

_ATTEMPT_SUFFIX = re.compile(r"\.attempt\d+$")


class JobEnvironment(Environment):
    """Its settings are worked out in the node's store pool (the launcher's
    ``_prepare_job``), with the store of the calling thread; a store away
    reads as a first attempt, and keeps every file."""

    def __init__(self, config: Config, node: JobStatusNode):
        super().__init__(config)
        self.node = node

    def _get_feeds(self, message: dict[str, Any], extension: str) -> str:
        try:
            state = self.node.store.get(message["_job"])
        except StoreError:
            state = None
        if state is not None and state.attempt > 1:
            message = {**message, "_job": f"{message['_job']}.attempt{state.attempt}"}
        return super()._get_feeds(message, extension)

    def _prepare_file(self, message: dict[str, Any], directory: str, extension: str) -> str:
        """The file's path, its directory made; the oldest files beyond
        jobs_to_keep removed, but those of jobs that have not ended."""
        path = get_file_path(
            directory, message["_project"], message["_spider"], f"{message['_job']}.{extension}"
        )
        parent = path.dirname()
        os.makedirs(parent, exist_ok=True)
        # Jobs are prepared in the node's store threads, several at once:
        # another may remove a file of this listing meanwhile.
        dated = []
        for name in os.listdir(parent):
            with contextlib.suppress(OSError):
                dated.append((os.path.getmtime(os.path.join(parent, name)), name))
        files = [os.path.join(parent, name) for _, name in sorted(dated)]
        for old in files[: -self.jobs_to_keep]:
            if self._ended(os.path.basename(old), extension):
                with contextlib.suppress(OSError):
                    os.remove(old)
        return path.path

    def _ended(self, name: str, extension: str) -> bool:
        if not name.endswith(f".{extension}"):
            return True  # not a job's file: Scrapyd's rule
        job_id = _ATTEMPT_SUFFIX.sub("", name[: -len(extension) - 1])
        try:
            state = self.node.store.get(job_id)
        except StoreError:
            return False
        return state is None or state.status in TERMINAL_STATUSES

    def remove_files(self, job: PrunedJob) -> None:
        """The log and items files of a job pruned from the store (those of
        each attempt), where Scrapyd's jobs_to_keep would remove them."""
        if not job.project or not job.spider:
            return
        names = [(self.logs_dir, f"{job.job_id}.log")] if self.logs_dir else []
        parsed = urlsplit(self.items_dir)
        if self.items_dir and local_items(self.items_dir, parsed):
            names.append((parsed.path, f"{job.job_id}.jl"))
            names += [
                (parsed.path, f"{job.job_id}.attempt{n}.jl") for n in range(2, job.attempt + 1)
            ]
        for directory, name in names:
            try:
                path = get_file_path(directory, job.project, job.spider, name).path
            except DirectoryTraversalError:
                continue
            with contextlib.suppress(OSError):
                os.remove(path)
