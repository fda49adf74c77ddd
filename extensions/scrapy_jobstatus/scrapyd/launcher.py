"""Scrapyd's launcher, overridden to pass the job store to every crawl it
starts (and the JOBDIR a pausable job keeps its state in), to skip a job
that was cancelled or paused while pending, and to end a job at once when its
process ends without a final status (``failed``, or queued again for its
retry). Every 5 s it records the node's heartbeat, ends the jobs of crawls
and of nodes that died, and removes the JOBDIRs of jobs that have ended.
Stopping, it pauses its pausable crawls and queues their jobs again.

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
from scrapyd import environ, launcher
from scrapyd.exceptions import ConfigError
from scrapyd.interfaces import IEnvironment
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from .._jobdir import JobDir, jobdir_name, remove_jobdir
from .._model import TERMINAL_STATUSES, InvalidJobId, JobState, JobStatus, validate_job_id
from .._retention import PrunedJob, prune
from .._store import (
    JobStore,
    Liveness,
    NodeInfo,
    ReapedJob,
    StoreError,
    is_postgres,
    open_store,
    process_alive,
)
from ._node import IJobStatusNode, shared_node
from ._spawn import ColdSpawner, WarmSpawner
from .environment import JobEnvironment
from .metrics import timed_store_write
from .schedules import ScheduleFiring
from .webhooks import WebhookDelivery

if TYPE_CHECKING:
    from twisted.python.failure import Failure

log = Logger(namespace="scrapy_jobstatus.scrapyd.launcher")

SUPPORTED_SCRAPYD = "1.6"
# Seconds between two heartbeats of the node, and two looks for jobs whose
# crawl died without the launcher seeing it end (a crawl started before a
# restart of this node), or whose node died.
REAP_INTERVAL = 5.0
# Seconds the reaper's calls wait for PostgreSQL: a beat that cannot go
# through fails, and the next round tries a fresh connection.
REAP_DEADLINE = 4.0
# Two beats further apart than this (one missed, or one held on a cut-off
# connection) are an outage of the node's own: it judges no other node for
# a whole node_timeout after it.
MAX_BEAT_GAP = 2 * REAP_INTERVAL
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
    (environ.Environment, "_get_feeds"),
    (environ.Environment, "_prepare_file"),
)
# Seconds between two prunes of the store to the node's retention (the first
# as the node starts). A prune goes on, a batch at a time, until done.
PRUNE_INTERVAL = 60.0
# Seconds between two tries at recording the end of a crawl while the store
# is away.
END_RETRY_INTERVAL = 2.0
# A directory of the node's jobdirs without a marker (its crawl died before
# it wrote one) goes once it is this old.
UNMARKED_JOBDIR_AGE = 86400.0


class JobProcessProtocol(launcher.ScrapyProcessProtocol):
    """Scrapyd's process protocol, keeping when the process started and how
    it ended."""

    exit_reason: BaseException | None = None

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.spawned_at = time.time()

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
        check_components(config, shared=is_postgres(self.node.db))
        app.setComponent(IJobStatusNode, self.node)
        app.setComponent(IEnvironment, JobEnvironment(config, self.node))
        self.started_at = time.time()
        self.version = _node_version()
        self.webhooks = WebhookDelivery(self.node)
        self.schedules = ScheduleFiring(self.node)
        # How a crawl starts: forked from a zygote, or a fresh Python.
        self.spawner = WarmSpawner() if self.node.warm_start else ColdSpawner()
        self._reaper: LoopingCall | None = None
        self._reaper_store: JobStore | None = None
        # Whether this node has been connected long enough to judge others.
        self.liveness = Liveness(self.node.node_timeout, MAX_BEAT_GAP)
        self._pruner: LoopingCall | None = None
        self._pruner_store: JobStore | None = None
        self._pruning: Deferred[None] | None = None
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
        self.spawner.start()
        super().startService()
        # Jobs this node claimed before it stopped and never started: they
        # go back to the queue (their crawls, if any, died with the node).
        # In the node's store pool: a store away does not hold up the start.
        d = self.node.calls.in_pool(lambda: self.node.store.requeue_claims(self.node.name))
        d.addCallbacks(self._requeued, self._requeue_failed)
        # Reads never write: finding the jobs whose crawl died is this
        # timer's work (a crawl this launcher started is checked at its exit).
        self._reaper = LoopingCall(self._reap_dead_jobs)
        self._reaper.start(REAP_INTERVAL, now=True).addErrback(self._reap_failed)
        if self.node.retention.limited:
            self._pruner = LoopingCall(self._prune)
            self._pruner.start(PRUNE_INTERVAL, now=True).addErrback(
                lambda failure: log.failure("Could not prune the job store", failure)
            )
        self.webhooks.start()
        self.schedules.start()

    def _requeued(self, requeued: list[str]) -> None:
        for job in requeued:
            log.warn("Job {job} queued again: claimed before this node restarted", job=job)

    def _requeue_failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            log.error(
                "Could not look for jobs claimed before a restart: {error}",
                error=failure.getErrorMessage(),
            )
        else:
            log.failure("Could not look for jobs claimed before a restart", failure)

    def stopService(self) -> Deferred[Any]:  # noqa: N802 (Twisted's name)
        """Stop: the pausable crawls pause and their jobs go back to the
        queue, to resume on the next free slot of any node; the node waits
        for them up to shutdown_wait seconds. Other crawls run on."""
        self._stopping = True
        self.schedules.stop()
        if self._reaper is not None and self._reaper.running:
            self._reaper.stop()
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        processes = {process.job: process for process in self.processes.values()}
        # In a thread, with a store of its own, as the reaper's writes.
        d = deferToThread(self._pause_in_thread, list(processes))
        d.addCallback(lambda paused: self._wait_for([processes[job] for job in paused]))
        d.addErrback(lambda failure: log.failure("Could not pause the crawls", failure))
        d.addBoth(self._stopped)
        return d

    def _pause_in_thread(self, jobs: list[str]) -> list[str]:
        """Ask the pausable crawls to pause and their jobs to go back to the
        queue: those running, and those pausing on a signal (the whole
        service's processes get SIGTERM from systemd, say); not a job a user
        asked to pause, which stays paused."""
        store = open_store(self.node.db, node=self.node.name)
        paused = []
        try:
            for job in jobs:
                try:
                    state = store.get(validate_job_id(job))
                    if (
                        state is None
                        or state.jobdir is None
                        or state.pause_requested_at is not None
                        or state.status not in (JobStatus.RUNNING, JobStatus.PAUSING)
                    ):
                        continue
                    if store.request_pause(job, requeue=True).after is JobStatus.PAUSING:
                        paused.append(job)
                except (InvalidJobId, StoreError) as e:
                    log.error("Could not pause job {job}: {error}", job=job, error=str(e))
            # The jobs this node claimed and will not start now.
            store.requeue_claims(self.node.name)
        finally:
            store.close()
        for job in paused:
            log.info("Pausing job {job}: this node stops", job=job)
        return paused

    def _wait_for(self, processes: list[launcher.ScrapyProcessProtocol]) -> Deferred[None]:
        """Fires once the processes have ended, or after shutdown_wait."""
        if not processes:
            return succeed(None)
        done: Deferred[None] = Deferred()
        left = [len(processes)]

        def ended(result: Any) -> Any:
            left[0] -= 1
            if not left[0] and not done.called:
                done.callback(None)
            return result

        for process in processes:
            process.deferred.addBoth(ended)
        timer = reactor.callLater(
            self.node.shutdown_wait, lambda: done.called or done.callback(None)
        )
        done.addBoth(lambda _: timer.active() and timer.cancel())
        return done

    def _stopped(self, result: Any) -> None:
        # After the crawls it waited for: the zygote reports their exits.
        self.spawner.stop()
        self.webhooks.stop()
        if self._reaper_store is not None:
            self._reaper_store.close()
        if self._pruning is not None:
            # The prune stops at its next batch: its store closes after.
            self._pruning.addBoth(lambda _: self._close_pruner_store())
        else:
            self._close_pruner_store()
        super().stopService()

    def _close_pruner_store(self) -> None:
        if self._pruner_store is not None:
            self._pruner_store.close()
            self._pruner_store = None

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
            last_seen=time.time(),  # the store records its own clock's
        )
        d = deferToThread(self._reap_in_thread, heartbeat)
        d.addCallbacks(self._reaped, self._reap_failed)
        return d

    def _reap_in_thread(self, heartbeat: NodeInfo) -> tuple[list[str], list[ReapedJob]]:
        try:
            return self._reap_round(heartbeat)
        except StoreError:
            # An outage of this node's own: the window in which it may judge
            # the others starts again, on a connection opened afresh.
            self.liveness.lost()
            store, self._reaper_store = self._reaper_store, None
            if store is not None:
                store.close()
            raise

    def _reap_round(self, heartbeat: NodeInfo) -> tuple[list[str], list[ReapedJob]]:
        store = self._reaper_store
        if store is None:
            # SQLite's write lock is waited for as long as before: one
            # machine has no partition to tell apart from a busy store.
            deadline = REAP_DEADLINE if is_postgres(self.node.db) else None
            store = self._reaper_store = open_store(
                self.node.db, node=self.node.name, deadline=deadline
            )
        with timed_store_write():
            now = store.beat(heartbeat)
        self.liveness.beat(now)
        self._warn_pending(store)
        dead_crawls = store.reap_dead_jobs(self.node.name, process_alive)
        # Heartbeats are judged by the store's clock, and only by a node that
        # has been connected for a whole node_timeout itself.
        dead_nodes_jobs = (
            store.reap_dead_nodes(self.node.node_timeout, now)
            if self.liveness.may_judge(now)
            else []
        )
        reaped = (dead_crawls, dead_nodes_jobs)
        try:
            self._remove_ended_jobdirs(store)
        except (OSError, StoreError) as e:
            log.error("Could not look for the JOBDIRs of ended jobs: {error}", error=str(e))
        return reaped

    def _prune(self) -> Deferred[None]:
        # In a thread, with a store of its own, whatever the prune's length:
        # the heartbeat and the services go on meanwhile. The timer waits.
        d = deferToThread(self._prune_in_thread)
        d.addErrback(self._prune_failed)
        d.addBoth(self._pruned)
        self._pruning = d
        return d

    def _pruned(self, _: Any) -> None:
        self._pruning = None

    def _prune_in_thread(self) -> None:
        store = self._pruner_store
        if store is None:
            store = self._pruner_store = open_store(self.node.db, node=self.node.name)
        retention = self.node.retention
        report = prune(
            store, retention, pruned=self._remove_pruned_files, stopping=lambda: self._stopping
        )
        if report.jobs or report.deliveries:
            log.info(
                "Pruned {jobs} ended jobs and {deliveries} webhook deliveries from the job"
                " store, in {batches} batches ({retention})",
                jobs=report.jobs,
                deliveries=report.deliveries,
                batches=report.batches,
                retention=retention.describe(),
            )

    def _remove_pruned_files(self, jobs: list[PrunedJob]) -> None:
        """A pruned job's JOBDIR, and its log and items files."""
        environment = self.app.getComponent(IEnvironment)
        for job in jobs:
            remove_jobdir(os.path.join(self.node.jobdirs, jobdir_name(job.job_id)))
            if isinstance(environment, JobEnvironment):
                environment.remove_files(job)

    def _prune_failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            if self.node.calls.up:
                log.error("Could not prune the job store: {error}", error=failure.getErrorMessage())
            self._close_pruner_store()  # opened again at the next prune
        else:
            log.failure("Could not prune the job store", failure)

    def _warn_pending(self, store: JobStore) -> None:
        """A job queued for longer than pending_timeout gets a warning, a
        ``stalled`` event and its job.stalled webhook, once."""
        limit = self.node.pending_timeout
        if not limit:
            return
        oldest = time.time() - limit
        warning = f"stalled: pending for more than {limit:g} s"
        for state in store.queued_jobs(created_before=oldest):
            # A job queued again (resumed, or retried after its delay) waits
            # from then on.
            queued_at = max(t or 0.0 for t in (state.created_at, state.updated_at, state.run_after))
            if queued_at > oldest:
                continue
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
            if not entry.is_dir():
                continue
            job_id = JobDir(entry.path).job_id
            if job_id is None:
                # A crawl starting, not marked yet; or one that died first.
                if time.time() - entry.stat().st_mtime > UNMARKED_JOBDIR_AGE:
                    remove_jobdir(entry.path)
                continue
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
            # While the store is down, the node's one line says it.
            if self.node.calls.up:
                log.error("Could not look for dead jobs: {error}", error=failure.getErrorMessage())
                self.node.calls.check()
        else:
            log.failure("Could not look for dead jobs", failure)

    def _spawn_process(self, message: dict[str, Any], slot: int) -> None:
        # The job is read and its files prepared (which reads the store) in
        # the node's store pool, the crawl started on the reactor.
        d = self.node.calls.in_pool(self._prepare_job, message)
        d.addCallback(lambda prepared: self._spawn_job(message, slot, *prepared))
        d.addErrback(lambda failure: log.failure("Could not start a job", failure))

    def _prepare_job(
        self, message: dict[str, Any]
    ) -> tuple[JobState | None, dict[str, str] | Exception]:
        """The job as the store has it, and the settings of its crawl (or why
        they could not be had)."""
        job = message["_job"]
        try:
            state = self.node.store.get(validate_job_id(job))
        except InvalidJobId:
            state = None
        except Exception:  # the store must not stop the launcher
            log.failure("Could not read job {job} from the job store", job=job)
            state = None
        if state is not None and state.status is not JobStatus.PENDING:
            return state, {}
        try:
            settings = self.app.getComponent(IEnvironment).get_settings(message)
        except Exception as e:  # recorded by _spawn_job, on the reactor
            return state, e
        return state, settings

    def _spawn_job(
        self,
        message: dict[str, Any],
        slot: int,
        state: JobState | None,
        settings: dict[str, str] | Exception,
    ) -> None:
        job = message["_job"]
        if state is not None and state.status is not JobStatus.PENDING:
            # Cancelled while pending (a cancelled job is never started), or
            # started by another node that took it for dead.
            log.info(
                "Job {job} is {status} already: not starting it", job=job, status=str(state.status)
            )
            self._get_message(slot)
            return

        try:
            if isinstance(settings, Exception):
                raise settings
            self._start_crawl(message, slot, settings)
        except Exception as e:
            # Nothing waits on this call: without this, the slot would be lost
            # for good and the job pending for ever.
            log.failure("Could not start job {job}", job=job)
            if state is not None:
                text = f"The crawl could not start: {e}"
                d = self.node.calls.in_pool(self._end_unstarted, job, text)
                d.addErrback(
                    lambda failure: log.failure(
                        "Could not record that job {job} could not start", failure, job=job
                    )
                )
            self._get_message(slot)

    def _end_unstarted(self, job: str, message: str) -> None:
        # In the pool, with the store of its thread.
        self.node.store.end_job(job, JobStatus.FAILED, message, unstarted=True)

    def _start_crawl(self, message: dict[str, Any], slot: int, settings: dict[str, str]) -> None:
        project, job = message["_project"], message["_job"]
        environment = self.app.getComponent(IEnvironment)
        message.setdefault("settings", {})
        message["settings"].update(settings)
        message["settings"].update(self.node.crawl_settings(project, job))

        # Scrapyd's own _spawn_process from here, with a process protocol
        # that keeps the exit status, started cold or warm.
        env = environment.get_environment(message, slot)
        env.update(self.node.crawl_environment())
        args = [sys.executable, "-m", self.runner, "crawl", *launcher.get_crawl_args(message)]

        process = JobProcessProtocol(project, message["_spider"], job, env, args)
        process.deferred.addBoth(self._process_finished, slot)

        self.spawner.spawn(process, args, env)
        self.processes[slot] = process
        log.debug("Process slot {slot} occupied", slot=slot)

    def _process_finished(self, _: Any, slot: int) -> None:
        # In the node's store pool: the slot takes its next job meanwhile.
        self._record_end(self.processes[slot])
        super()._process_finished(_, slot)

    def _record_end(self, process: launcher.ScrapyProcessProtocol) -> None:
        """Check the job of a crawl that ended, in the node's store pool;
        while the store is away, again every END_RETRY_INTERVAL seconds until
        it is back: a crawl that ended during an outage has its end
        recorded after."""
        d = self.node.calls.in_pool(self._check_final_status, process)

        def failed(failure: Failure) -> None:
            if failure.check(StoreError):
                reactor.callLater(END_RETRY_INTERVAL, self._record_end, process)
            else:
                log.failure("Could not check job {job} in the job store", failure, job=process.job)

        d.addErrback(failed)

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
        if state.status is JobStatus.PENDING and state.node is None:
            return  # queued again: paused by this node's shutdown, or retried
        if state.node not in (None, self.node.name) or state.pid not in (None, process.pid):
            return  # the job another crawl runs (claimed again elsewhere)
        spawned_at = getattr(process, "spawned_at", 0.0)
        if state.status is JobStatus.PENDING and (state.updated_at or 0.0) > spawned_at:
            # The crawl of an earlier run (it paused, its attempt was
            # retried), exiting after the job was queued again and claimed
            # here: the next crawl runs it.
            return
        reason = getattr(process, "exit_reason", None)
        how = _exit_description(reason)
        if (
            state.status is JobStatus.PENDING
            and state.started_at is None
            and (getattr(reason, "exitCode", None) == 0)
        ):
            # The crawl never opened its job: the extension was disabled in
            # it (JOBSTATUS_ENABLED=False), and it ended normally.
            message = (
                f"The crawl (pid {process.pid}) ran unmonitored, without the job status "
                f"extension, and ended with exit code 0; no progress or figures were recorded."
            )
            if self.node.store.end_job(job_id, JobStatus.COMPLETED, message, unstarted=True):
                log.info("Job {job} ran unmonitored", job=job_id)
            return
        message = (
            f"The crawl process (pid {process.pid}) ended with {how} "
            f"without reporting a final status."
        )
        if self.node.store.end_job(job_id, JobStatus.FAILED, message, unstarted=False):
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
    if code is None:
        # No reason, or a warm crawl whose zygote died before it: only its
        # end was seen.
        return "an unknown exit code"
    return f"exit code {code or 0}"
