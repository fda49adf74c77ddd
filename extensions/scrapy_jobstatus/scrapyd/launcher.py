"""Scrapyd's launcher, overridden to pass the job store to every crawl it
starts, to skip a job that was cancelled while pending, and to mark a job
``failed`` at once when its process ends without a final status.

It overrides private methods of Scrapyd's Launcher, written for Scrapyd 1.6;
a Scrapyd without them is refused at start-up with one line naming it.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

import scrapyd
from scrapyd import launcher
from scrapyd.exceptions import ConfigError
from scrapyd.interfaces import IEnvironment
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from .._model import InvalidJobId, validate_job_id
from .._model import JobStatus as Status
from .._store import JobStore, StoreError, open_store, process_alive
from ._node import IJobStatusNode, JobStatusNode

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

log = Logger(namespace="scrapy_jobstatus.scrapyd.launcher")

SUPPORTED_SCRAPYD = "1.6"
# Seconds between two looks for jobs whose crawl died without the launcher
# seeing it end (a crawl started before a restart of this node).
REAP_INTERVAL = 5.0
# What this launcher uses of Scrapyd's.
_SCRAPYD_INTERNALS = (
    (launcher.Launcher, "_spawn_process"),
    (launcher.Launcher, "_process_finished"),
    (launcher.Launcher, "_get_message"),
    (launcher, "get_crawl_args"),
    (launcher, "ScrapyProcessProtocol"),
)


class JobProcessProtocol(launcher.ScrapyProcessProtocol):
    """Scrapyd's process protocol, keeping how the process ended."""

    exit_reason: BaseException | None = None

    def processEnded(self, status: Failure) -> None:  # noqa: N802 (Twisted's name)
        self.exit_reason = status.value
        super().processEnded(status)


def check_scrapyd_supported() -> None:
    missing = [name for owner, name in _SCRAPYD_INTERNALS if not hasattr(owner, name)]
    if missing:
        raise ConfigError(
            f"scrapy-jobstatus's launcher supports Scrapyd {SUPPORTED_SCRAPYD}; Scrapyd "
            f"{scrapyd.__version__} lacks {', '.join(missing)}"
        )


class Launcher(launcher.Launcher):
    def __init__(self, config: Any, app: Any):
        check_scrapyd_supported()
        super().__init__(config, app)
        self.node = JobStatusNode.from_config(config)
        app.setComponent(IJobStatusNode, self.node)
        self._reaper: LoopingCall | None = None
        self._reaper_store: JobStore | None = None
        self._reaping = False

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        log.info(
            "Job store: {db} (JOBSTATUS_TIMEOUT at most {cap} s)",
            db=self.node.store.location,
            cap=self.node.timeout_max or "unlimited",
            log_system="Launcher",
        )
        super().startService()
        # Reads never write: finding the jobs whose crawl died is this
        # timer's work (a crawl this launcher started is checked at its exit).
        self._reaper = LoopingCall(self._reap_dead_jobs)
        self._reaper.start(REAP_INTERVAL, now=True).addErrback(self._reap_failed)

    def stopService(self) -> None:  # noqa: N802 (Twisted's name)
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        super().stopService()

    def _reap_dead_jobs(self) -> Deferred[None] | None:
        # In a thread, with a store of its own: a write waiting for the store's
        # lock must not hold up the node's services.
        if self._reaping:
            return None
        self._reaping = True
        d = deferToThread(self._reap_in_thread)
        d.addCallbacks(self._reaped, self._reap_failed)
        d.addBoth(self._reap_done)
        return d

    def _reap_in_thread(self) -> list[str]:
        if self._reaper_store is None:
            self._reaper_store = open_store(self.node.db)
        return self._reaper_store.reap_dead_jobs(self._reaper_store.node, process_alive)

    def _reaped(self, reaped: list[str]) -> None:
        for job in reaped:
            log.warn("Job {job} failed: its crawl process died", job=job)

    def _reap_failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            log.error("Could not look for dead jobs: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Could not look for dead jobs", failure)

    def _reap_done(self, _: Any) -> None:
        self._reaping = False

    def _spawn_process(self, message: dict[str, Any], slot: int) -> None:
        job = message["_job"]
        state = None
        try:
            state = self.node.store.get(validate_job_id(job))
        except InvalidJobId:
            pass
        except Exception:  # the store must not stop the launcher
            log.failure("Could not read job {job} from the job store", job=job)
        if state is not None and not state.status.is_active:
            # Cancelled while pending: a cancelled job is never started.
            log.info(
                "Job {job} is {status} already: not starting it", job=job, status=str(state.status)
            )
            self._get_message(slot)
            return

        project = message["_project"]
        environment = self.app.getComponent(IEnvironment)
        message.setdefault("settings", {})
        message["settings"].update(environment.get_settings(message))
        message["settings"].update(self.node.crawl_settings(project))

        # Scrapyd's own _spawn_process from here, with a process protocol
        # that keeps the exit status.
        env = environment.get_environment(message, slot)
        env.update(self.node.crawl_environment())
        args = [sys.executable, "-m", self.runner, "crawl", *launcher.get_crawl_args(message)]

        process = JobProcessProtocol(project, message["_spider"], job, env, args)
        process.deferred.addBoth(self._process_finished, slot)

        reactor.spawnProcess(process, sys.executable, args=args, env=env)
        self.processes[slot] = process
        log.debug("Process slot {slot} occupied", slot=slot)

    def _process_finished(self, _: Any, slot: int) -> None:
        process = self.processes[slot]
        try:
            self._check_final_status(process)
        except Exception:  # the store must not stop the launcher
            log.failure("Could not check job {job} in the job store", job=process.job)
        super()._process_finished(_, slot)

    def _check_final_status(self, process: launcher.ScrapyProcessProtocol) -> None:
        """A crawl writes its final status before it exits: an active job
        whose process has ended was killed (kill -9, OOM) or crashed."""
        try:
            job_id = validate_job_id(process.job)
        except InvalidJobId:
            return
        state = self.node.store.get(job_id)
        if state is None or not state.status.is_active:
            return
        reason = getattr(process, "exit_reason", None)
        how = _exit_description(reason)
        if state.status is Status.PENDING and getattr(reason, "exitCode", None) == 0:
            # The crawl never opened its job: the extension was disabled in
            # it (JOBSTATUS_ENABLED=False), and it ended normally.
            message = (
                f"The crawl (pid {process.pid}) ran unmonitored, without the job status "
                f"extension, and ended with exit code 0; no progress or figures were recorded."
            )
            if self.node.store.end_job(job_id, Status.COMPLETED, message, unstarted=True):
                log.info("Job {job} ran unmonitored", job=job_id)
            return
        message = (
            f"The crawl process (pid {process.pid}) ended with {how} "
            f"without reporting a final status."
        )
        if self.node.store.end_job(job_id, Status.FAILED, message, unstarted=False):
            log.warn("Job {job} failed: {message}", job=job_id, message=message)


def _exit_description(reason: BaseException | None) -> str:
    code = getattr(reason, "exitCode", None)
    signum = getattr(reason, "signal", None)
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"exit code {-signum} (killed by {name})"
    if code is None and reason is None:
        return "an unknown exit code"
    return f"exit code {code or 0}"
