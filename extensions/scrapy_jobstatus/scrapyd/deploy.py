"""Scrapyd's own writing services, schedule.json, addversion.json,
delversion.json and delproject.json, with their store calls in the node's
store thread pool: ``schedule.json = scrapy_jobstatus.scrapyd.webservice.Schedule``
(..., ``AddVersion``, ``DeleteVersion``, ``DeleteProject``) in the
``[services]`` section of scrapyd.conf.

Their parameters, checks, codes and answers are Scrapyd's own. What they
ask of the queue and the egg storage runs in the pool (a store away answers
503 with ``Retry-After``, having changed nothing); ``scrapy list`` runs in
Twisted's thread pool, not the store's (it may take longer than a store
call's deadline); what changes Scrapyd's state in memory
(``update_projects``) runs on the reactor, between the two.
"""

from __future__ import annotations

import traceback
import uuid
import zipfile
from io import BytesIO
from typing import TYPE_CHECKING, Any

from scrapyd import webservice
from scrapyd.exceptions import EggNotFoundError, ProjectNotFoundError, RunnerError
from scrapyd.webservice import param, spider_list
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import error, http, resource

from ._calls import StoreUnavailable
from ._resource import NodeResource

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.web.server import Request

log = Logger(namespace="scrapy_jobstatus.scrapyd.webservice")


def scrapyd_refusal(message: str) -> error.Error:
    """A refusal as Scrapyd's services answer one: 200, status "error"."""
    return error.Error(code=http.OK, message=message.encode())


def spiders_of(project: str, version: str | None, runner: str, *, fresh: bool) -> Deferred[Any]:
    """The project's spiders (``scrapy list``, a subprocess), as Scrapyd's
    cache gives them, off the reactor; a runner that fails is refused as
    Scrapyd's services refuse any error."""

    def listed() -> list[str]:
        try:
            if fresh:
                return spider_list.set(project, version, runner=runner)
            return spider_list.get(project, version, runner=runner)
        except RunnerError as e:
            raise scrapyd_refusal(f"{type(e).__name__}: {e}") from None

    return deferToThread(listed)


class OwnService(NodeResource):
    """One of Scrapyd's own services: its refusals keep their 200, and its
    spider arguments any length; any other error of its own is answered as
    Scrapyd answers it (200, the error's type and message; a traceback in
    the log)."""

    client_error_code = None
    max_param_bytes = None

    def error_answer(self, txrequest: Request, e: Exception) -> bytes:
        if isinstance(e, (error.Error, resource.UnsupportedMethod, StoreUnavailable)):
            return super().error_answer(txrequest, e)
        log.failure("Error in {path}", path=txrequest.path)
        if self.root.debug:
            return traceback.format_exc().encode()
        message = f"{type(e).__name__}: {e}"
        return self.json(txrequest, {"status": "error", "message": message})


class Schedule(OwnService, webservice.Schedule):
    """Scrapyd's schedule.json: the egg version checked and the job queued
    in the node's store pool."""

    @param("project")
    @param("spider")
    @param("_version", dest="version", required=False, default=None)
    @param("jobid", required=False, default=lambda: uuid.uuid1().hex)
    @param("priority", required=False, default=0, type=float)
    @param("setting", required=False, default=list, multiple=True)
    def render_POST(  # type: ignore[override]
        self,
        txrequest: Request,
        project: str,
        spider: str,
        version: str | None,
        jobid: str,
        priority: float,
        setting: list[str],
    ) -> int:
        # Read on the reactor: the projects are known while the store is away.
        if project not in self.root.poller.queues:
            raise scrapyd_refusal(f"project '{project}' not found")
        # The spider's arguments: the parameters that are not schedule.json's.
        args = {key.decode(): values[0].decode() for key, values in txrequest.args.items()}
        if version is not None:
            args["_version"] = version
        d: Deferred[Any] = (
            self.node.calls.run(self._check_version, project, version)
            if version
            else defer.succeed(None)
        )
        d.addCallback(lambda _: spiders_of(project, version, self.root.runner, fresh=False))

        def queue(spiders: list[str]) -> Deferred[None]:
            if spider not in spiders:
                raise scrapyd_refusal(f"spider '{spider}' not found")
            try:
                settings = dict(s.split("=", 1) for s in setting)
            except ValueError as e:
                raise scrapyd_refusal(f"{type(e).__name__}: {e}") from None
            return self.node.calls.run(
                self.root.scheduler.schedule,
                project,
                spider,
                priority=priority,
                settings=settings,
                _job=jobid,
                **args,
            )

        d.addCallback(queue)
        d.addCallback(lambda _: {"jobid": jobid})
        return self.answer_when(txrequest, d)

    def _check_version(self, project: str, version: str) -> None:
        if self.root.eggstorage.get(project, version) == (None, None):
            raise scrapyd_refusal(f"version '{version}' not found")


class AddVersion(OwnService, webservice.AddVersion):
    """Scrapyd's addversion.json: the egg stored in the node's store pool,
    the projects updated on the reactor, then the spiders listed."""

    @param("project")
    @param("version")
    @param("egg", type=bytes)
    def render_POST(  # type: ignore[override]
        self, txrequest: Request, project: str, version: str, egg: bytes
    ) -> int:
        if not zipfile.is_zipfile(BytesIO(egg)):
            raise scrapyd_refusal(
                "egg is not a ZIP file (if using curl, use egg=@path not egg=path)"
            )
        d = self.node.calls.run(self.root.eggstorage.put, BytesIO(egg), project, version)

        def stored(_: None) -> Deferred[Any]:
            self.root.update_projects()
            return spiders_of(project, version, self.root.runner, fresh=True)

        d.addCallback(stored)
        d.addCallback(
            lambda spiders: {"project": project, "version": version, "spiders": len(spiders)}
        )
        return self.answer_when(txrequest, d)


class DeleteProject(OwnService, webservice.DeleteProject):
    """Scrapyd's delproject.json: the eggs deleted in the node's store pool,
    the projects and the spider lists updated on the reactor."""

    @param("project")
    def render_POST(self, txrequest: Request, project: str) -> int:  # type: ignore[override]
        return self.answer_when(txrequest, self._deleted(project, None))

    def _deleted(self, project: str, version: str | None) -> Deferred[dict[str, Any]]:
        d = self.node.calls.run(self._delete_eggs, project, version)

        def deleted(_: None) -> dict[str, Any]:
            self.root.update_projects()
            spider_list.delete(project, version)
            return {}

        d.addCallback(deleted)
        return d

    def _delete_eggs(self, project: str, version: str | None) -> None:
        try:
            self.root.eggstorage.delete(project, version)
        except ProjectNotFoundError:
            raise scrapyd_refusal(f"project '{project}' not found") from None
        except EggNotFoundError:
            raise scrapyd_refusal(f"version '{version}' not found") from None


class DeleteVersion(DeleteProject):
    """Scrapyd's delversion.json, as delproject.json for one version."""

    @param("project")
    @param("version")
    def render_POST(  # type: ignore[override]
        self, txrequest: Request, project: str, version: str
    ) -> int:
        return self.answer_when(txrequest, self._deleted(project, version))
