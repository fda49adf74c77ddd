"""Scrapyd's finished jobs and eggs in the job store: ``jobstorage`` and
``eggstorage`` in scrapyd.conf.

listjobs.json's finished jobs are the store's ended jobs: they survive a
restart and cover every node sharing the store. An egg deployed to any node
(scrapyd-deploy, addversion.json) is in the store, where every node's crawls
read it.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from scrapyd.eggstorage import sorted_versions
from scrapyd.exceptions import DirectoryTraversalError, EggNotFoundError, ProjectNotFoundError
from scrapyd.interfaces import IEggStorage, IJobStorage
from twisted.python import filepath
from zope.interface import implementer

from ._calls import StoreUnavailable, unavailable
from ._node import shared_node

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from scrapyd.config import Config
    from scrapyd.launcher import ScrapyProcessProtocol

    from .._model import JobState

T = TypeVar("T")


@implementer(IJobStorage)
class JobStorage:
    def __init__(self, config: Config):
        self.node = shared_node(config)
        self.finished_to_keep = config.getint("finished_to_keep", 100)

    def add(self, job: Any) -> None:
        """Nothing to add: the crawl, or the launcher when it died, wrote its
        end to the store already."""

    def list(self) -> list[ScrapyProcessProtocol]:
        return list(self)

    # Scrapyd calls these on its reactor (daemonstatus.json, listjobs.json,
    # the website): while the store is down they give their last answer.

    def __len__(self) -> int:
        store, keep = self.node.store, self.finished_to_keep
        return self.node.calls.sync("finished", store.count_finished, keep, default=0)

    def __iter__(self) -> Iterator[ScrapyProcessProtocol]:
        store, keep = self.node.store, self.finished_to_keep
        states = self.node.calls.sync("finished_jobs", store.finished_jobs, keep, default=[])
        for state in states:
            yield _finished(state)


def _finished(state: JobState) -> ScrapyProcessProtocol:
    # Imported here: Scrapyd's launcher installs a reactor, which the egg
    # storage, loaded in the crawl's process, must not.
    from scrapyd.launcher import ScrapyProcessProtocol

    # What listjobs.json reads of a finished job, as Scrapyd's own storage
    # gives it: local times, like Scrapyd's datetime.now().
    job = ScrapyProcessProtocol(state.project, state.spider, state.job_id, env={}, args=[])
    ended = state.completed_at or 0.0
    job.start_time = datetime.fromtimestamp(state.started_at or ended)
    job.end_time = datetime.fromtimestamp(ended)
    return job


@implementer(IEggStorage)
class EggStorage:
    """The eggs in the store. A project's name still becomes part of paths
    (Scrapyd's logs and items, the runner's copy of the egg): a name that is
    not one file name is refused as Scrapyd's own storage refuses it.

    ``get`` gives the egg as a file of the node's ``eggs_dir``, written from
    the store: Scrapyd's runner then uses it where it is, instead of copying
    it to a temporary file that a crawl killed with -9 would leave behind."""

    def __init__(self, config: Config):
        self.node = shared_node(config)
        self.cache = Path(config.get("eggs_dir", "eggs"))

    # addversion.json, schedule.json with a version, delversion.json and
    # delproject.json call these in the node's store pool (``deploy``),
    # listspiders.json with a version on the reactor: their waits are the
    # store's deadline, and a store away answers 503.

    def put(self, eggfile: BinaryIO, project: str, version: str) -> None:
        self._bounded(self.node.store.put_egg, _checked(project), version, eggfile.read())

    def get(self, project: str, version: str | None = None) -> tuple[str | None, BinaryIO | None]:
        if version is None:
            versions = self.list(project)
            if not versions:
                return None, None
            version = versions[-1]
        egg = self._bounded(self.node.store.get_egg, _checked(project), version)
        if egg is None:
            return None, None
        # Named as Scrapyd names its egg files; written whole, then renamed:
        # crawls starting at once never read half an egg.
        path = self.cache / project / (re.sub(r"[^A-Za-z0-9_-]", "_", version) + ".egg")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
            part.write(egg)
        os.replace(part.name, path)
        return version, open(path, "rb")  # noqa: SIM115 (the runner closes it)

    def list(self, project: str) -> list[str]:
        """The versions, latest last, ordered as Scrapyd orders them."""
        versions = self.node.calls.sync(
            ("versions", project), self.node.store.egg_versions, _checked(project)
        )
        return sorted_versions(versions)

    def list_projects(self) -> list[str]:
        # Every service of Scrapyd's reads the projects: while the store is
        # down, the last known.
        return self.node.calls.sync("projects", self.node.store.egg_projects)

    def delete(self, project: str, version: str | None = None) -> None:
        if not self._bounded(self.node.store.delete_eggs, _checked(project), version):
            raise ProjectNotFoundError if version is None else EggNotFoundError

    def _bounded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self.node.calls.bounded(fn, *args)
        except StoreUnavailable as e:
            raise unavailable(str(e)) from None


def _checked(project: str) -> str:
    try:
        filepath.FilePath("eggs").child(project)
    except filepath.InsecurePath as e:
        raise DirectoryTraversalError(project) from e
    return project
