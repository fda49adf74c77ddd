"""Scrapyd's launcher, overridden to pass the job store to every crawl it
starts, to skip a job that was cancelled while pending, and to mark a job
``failed`` at once when its process ends without a final status. Every 5 s
it records the node's heartbeat and ends the jobs of crawls and of nodes
that died.

It overrides private methods of Scrapyd's Launcher, written for Scrapyd 1.6;
a Scrapyd without them is refused at start-up with one line naming it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import TYPE_CHECKING, Any

import scrapyd
from scrapyd import launcher
from scrapyd.exceptions import ConfigError
from scrapyd.interfaces import IEnvironment
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from .._jobdir import JobDir, remove_jobdir
from .._model import TERMINAL_STATUSES, InvalidJobId, validate_job_id
from .._model import JobStatus as Status
from .._store import (
    JobStore,
    NodeInfo,
    ReapedJob,
    StoreError,
    is_url,
    open_store,
    process_alive,
)
from ._node import IJobStatusNode, shared_node
from .metrics import timed_store_write
from .webhooks import WebhookDelivery

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

log = Logger(namespace="scrapy_jobstatus.scrapyd.launcher")

SUPPORTED_SCRAPYD = "1.6"
# Seconds between two heartbeats of the node, and two looks for jobs whose
# crawl died without the launcher seeing it end (a crawl started before a
# restart of this node), or whose node died.
REAP_INTERVAL = 5.0
# The components the job services rely on: the queue in the store.
REQUIRED_COMPONENTS = {
    "spiderqueue": "scrapy_jobstatus.scrapyd.SpiderQueue",
    "poller": "scrapy_jobstatus.scrapyd.Poller",
}
# What a node sharing its store with others needs besides.
CLUSTER_COMPONENTS = {
    "eggstorage": "scrapy_jobstatus.scrapyd.EggStorage",
    "webroot": "scrapy_jobstatus.scrapyd.dashboard.Root",
}
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


def check_components(config: Any, shared: bool) -> None:
    """Scrapyd's own queue would hide pending jobs from the job services, and
    a node sharing its store must read the shared eggs and projects."""
    required = {**REQUIRED_COMPONENTS, **(CLUSTER_COMPONENTS if shared else {})}
    for option, path in required.items():
        if config.get(option, "") != path:
            why = " (the store is shared by several nodes)" if option in CLUSTER_COMPONENTS else ""
            raise ConfigError(f"the job launcher needs {option} = {path} in [scrapyd]{why}")


def _node_version() -> str:
    try:
        ours = distribution_version("scrapy-jobstatus")
    except PackageNotFoundError:
        ours = "unknown"
    return f"scrapy-jobstatus {ours}, Scrapyd {scrapyd.__version__}"


class Launcher(launcher.Launcher):
    def __init__(self, config: Any, app: Any):
        check_scrapyd_supported()
        super().__init__(config, app)
        self.node = shared_node(config)
        check_components(config, shared=is_url(self.node.db))
        app.setComponent(IJobStatusNode, self.node)
        self.started_at = time.time()
        self.version = _node_version()
        self.webhooks = WebhookDelivery(self.node)
        self._reaper: LoopingCall | None = None
        self._reaper_store: JobStore | None = None
        # Stopping: no slot takes a new job.
        self._stopping = False

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        log.info(
            "Node {node}, job store: {db} (JOBSTATUS_TIMEOUT at most {cap} s)",
            node=self.node.name,
            db=self.node.store.location,
            cap=self.node.timeout_max or "unlimited",
            log_system="Launcher",
        )
        super().startService()
        # Jobs this node claimed before it stopped and never started: they
        # go back to the queue (their crawls, if any, died with the node).
        try:
            requeued = self.node.store.requeue_claims(self.node.name)
        except StoreError as e:
            log.error("Could not look for jobs claimed before a restart: {error}", error=str(e))
        else:
            for job in requeued:
                log.warn("Job {job} queued again: claimed before this node restarted", job=job)
        # Reads never write: finding the jobs whose crawl died is this
        # timer's work (a crawl this launcher started is checked at its exit).
        self._reaper = LoopingCall(self._reap_dead_jobs)
        self._reaper.start(REAP_INTERVAL, now=True).addErrback(self._reap_failed)
        self.webhooks.start()

    def stopService(self) -> Deferred[Any]:  # noqa: N802 (Twisted's name)
        """Stop: the pausable crawls pause and their jobs go back to the
        queue, to resume on the next free slot of any node; the node waits
        for them up to shutdown_wait seconds. Other crawls run on."""
        self._stopping = True
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        d = self._pause_crawls()
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: Any) -> None:
        self.webhooks.stop()
        if self._reaper_store is not None:
            self._reaper_store.close()
        super().stopService()

    def _pause_crawls(self) -> Deferred[Any]:
        pausing = []
        for process in self.processes.values():
            try:
                job = validate_job_id(process.job)
                state = self.node.store.get(job)
                if state is None or state.jobdir is None or state.status is not Status.RUNNING:
                    continue
                result = self.node.store.request_pause(job, requeue=True)
            except Exception:  # the store must not keep the node from stopping
                log.failure("Could not pause job {job}", job=process.job)
                continue
            if result.after is Status.PAUSING:
                log.info("Pausing job {job}: this node stops", job=job)
                pausing.append(process.deferred)
        if not pausing:
            return succeed(None)
        done = DeferredList(pausing, consumeErrors=True)
        timer = reactor.callLater(self.node.shutdown_wait, done.cancel)
        done.addBoth(lambda _: timer.active() and timer.cancel())
        return done

    def _get_message(self, slot: int) -> None:
        if not self._stopping:
            super()._get_message(slot)

    def _reap_dead_jobs(self) -> Deferred[None]:
        # In a thread, with a store of its own: a write waiting for the store's
        # lock must not hold up the node's services. The timer waits for it.
        heartbeat = NodeInfo(
            name=self.node.name,
            url=self.node.url,
            max_proc=self.max_proc,
            running=len(self.processes),
            version=self.version,
            started_at=self.started_at,
            last_seen=time.time(),
        )
        d = deferToThread(self._reap_in_thread, heartbeat)
        d.addCallbacks(self._reaped, self._reap_failed)
        return d

    def _reap_in_thread(self, heartbeat: NodeInfo) -> tuple[list[str], list[ReapedJob]]:
        store = self._reaper_store
        if store is None:
            store = self._reaper_store = open_store(self.node.db, node=self.node.name)
        with timed_store_write():
            store.beat(heartbeat)
        self._warn_pending(store)
        self._remove_ended_jobdirs(store)
        return (
            store.reap_dead_jobs(self.node.name, process_alive),
            store.reap_dead_nodes(self.node.node_timeout),
        )

    def _warn_pending(self, store: JobStore) -> None:
        """A job queued for longer than pending_timeout gets a warning, a
        ``stalled`` event and its job.stalled webhook, once."""
        limit = self.node.pending_timeout
        if not limit:
            return
        oldest = time.time() - limit
        warning = f"stalled: pending for more than {limit:g} s"
        for state in store.queued_jobs(created_before=oldest):
            if store.warn_pending(state.job_id, warning):
                log.warn("Job {job}: {warning}", job=state.job_id, warning=warning)

    def _remove_ended_jobdirs(self, store: JobStore) -> None:
        """A JOBDIR goes once its job has ended (or was pruned): a job paused
        then cancelled has no crawl to remove it."""
        try:
            entries = list(os.scandir(self.node.jobdirs))
        except FileNotFoundError:
            return
        for entry in entries:
            job_id = JobDir(entry.path).job_id if entry.is_dir() else None
            if job_id is None:
                continue  # a crawl starting, not marked yet
            state = store.get(job_id)
            if state is None or state.status in TERMINAL_STATUSES:
                remove_jobdir(entry.path)
                log.info("Removed the JOBDIR of job {job}: it has ended", job=job_id)

    def _reaped(self, reaped: tuple[list[str], list[ReapedJob]]) -> None:
        dead_crawls, dead_nodes_jobs = reaped
        for job in dead_crawls:
            log.warn("Job {job} failed: its crawl process died", job=job)
        for job in dead_nodes_jobs:
            if job.requeued:
                log.warn(
                    "Job {job} queued again: its node {node} died", job=job.job_id, node=job.node
                )
            else:
                log.warn("Job {job} failed: its node {node} died", job=job.job_id, node=job.node)

    def _reap_failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            log.error("Could not look for dead jobs: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Could not look for dead jobs", failure)

    def _spawn_process(self, message: dict[str, Any], slot: int) -> None:
        job = message["_job"]
        state = None
        try:
            state = self.node.store.get(validate_job_id(job))
        except InvalidJobId:
            pass
        except Exception:  # the store must not stop the launcher
            log.failure("Could not read job {job} from the job store", job=job)
        if state is not None and state.status is not Status.PENDING:
            # Cancelled while pending (a cancelled job is never started), or
            # started by another node that took it for dead.
            log.info(
                "Job {job} is {status} already: not starting it", job=job, status=str(state.status)
            )
            self._get_message(slot)
            return

        try:
            self._start_crawl(message, slot)
        except Exception as e:
            # Nothing waits on this call: without this, the slot would be lost
            # for good and the job pending for ever.
            log.failure("Could not start job {job}", job=job)
            try:
                if state is not None:
                    message = f"The crawl could not start: {e}"
                    self.node.store.end_job(job, Status.FAILED, message, unstarted=True)
            except Exception:
                log.failure("Could not record that job {job} could not start", job=job)
            finally:
                self._get_message(slot)

    def _start_crawl(self, message: dict[str, Any], slot: int) -> None:
        project, job = message["_project"], message["_job"]
        environment = self.app.getComponent(IEnvironment)
        message.setdefault("settings", {})
        message["settings"].update(environment.get_settings(message))
        message["settings"].update(self.node.crawl_settings(project, job))

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
        if state.status is Status.PENDING and state.node is None:
            return  # queued again: paused by this node's shutdown, or retried
        if state.node not in (None, self.node.name) or state.pid not in (None, process.pid):
            return  # the job another crawl runs (claimed again elsewhere)
        if any(p.job == process.job for p in self.processes.values() if p is not process):
            return  # a crawl that paused, exiting after its job was resumed here
        reason = getattr(process, "exit_reason", None)
        how = _exit_description(reason)
        exited_normally = getattr(reason, "exitCode", None) == 0
        if state.status is Status.PENDING and state.started_at is not None and exited_normally:
            # The crawl of an earlier run, which paused, exiting once its job
            # was resumed and claimed here again: the next crawl runs it.
            return
        if state.status is Status.PENDING and exited_normally:
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
