"""The node's calls to its job store, off the reactor thread.

The services, the metrics page and the launcher's bookkeeping run their store
calls in a small thread pool of the node's own, each thread with a store of
its own whose waits are bounded (``STORE_DEADLINE``: PostgreSQL's
connect_timeout, statement_timeout and the pool's wait; SQLite's busy
timeout). A service's answer waits for its call at most ``ANSWER_WITHIN``
seconds, then is a 503 with ``Retry-After``.

A call that fails or times out makes the node check the store with one
read: if that fails too, the store is *down* until a read every
``PROBE_INTERVAL`` seconds succeeds. While it is down, calls fail at once
without reaching the store, and Scrapyd's synchronous plug points
(``SpiderQueue.count``, ``JobStorage``, ``EggStorage.list_projects``...) give
their last answer, so daemonstatus.json and the pages that need no store
answer as fast as ever. The node logs one line when the store goes away and
one when it is back.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.threadpool import ThreadPool
from twisted.web import error, http

from .._store import JobStore, StoreError, open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

log = Logger(namespace="scrapy_jobstatus.scrapyd.store")

T = TypeVar("T")

# Seconds a call of the node's threads may wait for the store (a statement,
# a connection of the pool, SQLite's write lock) before it fails: shorter
# than a service's wait, so that a request answered 503 has changed nothing.
STORE_DEADLINE = 1.5
# Seconds a service waits for its store call before it answers 503.
ANSWER_WITHIN = 1.9
# Seconds between two reads checking whether a store that was down is back;
# also the Retry-After of a 503.
PROBE_INTERVAL = 1.0
RETRY_AFTER = 2
# Threads of the node's pool: a few concurrent store calls; more wait their
# turn (and time out as a 503 if the store is slow).
THREADS = 4
_MISSING: Any = object()


class StoreUnavailable(StoreError):
    """The store did not answer in time, or is known to be down."""


class StoreCalls:
    """The node's thread pool for its store calls, and whether the store is
    reachable."""

    def __init__(self, location: str, node_name: str, *, threads: int = THREADS):
        self.location = location
        self.node_name = node_name
        self.up = True
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="jobstatus-store")
        self._local = threading.local()
        self._stores: list[JobStore] = []
        self._stores_lock = threading.Lock()
        self._checking = False
        self._probe: LoopingCall | None = None
        self._last: dict[Hashable, Any] = {}
        self._started = False
        self._generation = 0

    # -- the pool ---------------------------------------------------------------

    def start(self) -> None:
        # A pool stopped (the node shutting down) is not started again: its
        # threads' team has quit, and a second stop would fail.
        if not self._started and not self.pool.joined:
            self._started = True
            self.pool.start()
            _reactor().addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        if self._started:
            self._started = False
            self.pool.stop()
        with self._stores_lock:
            stores, self._stores = self._stores, []
        for store in stores:
            store.close()

    def thread_store(self) -> JobStore:
        """The store of the calling thread (the reactor's, or one of the
        pool's): a SQLite connection runs one transaction at a time. After an
        outage each thread opens its store afresh: a PostgreSQL pool that
        failed waits ever longer before it connects again."""
        store: JobStore | None = getattr(self._local, "store", None)
        if store is not None and self._local.generation != self._generation:
            self._forget(store)
            store = None
        if store is None:
            store = open_store(self.location, node=self.node_name, deadline=STORE_DEADLINE)
            self._local.store, self._local.generation = store, self._generation
            with self._stores_lock:
                self._stores.append(store)
        return store

    def _forget(self, store: JobStore) -> None:
        with self._stores_lock:
            if store in self._stores:
                self._stores.remove(store)
        try:
            store.close()
        except Exception:  # a pool of a server gone
            log.failure("Could not close a store of the node's threads")

    # -- calls ------------------------------------------------------------------

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """``fn(*args, **kwargs)`` in the pool; fails with StoreUnavailable
        after ANSWER_WITHIN seconds, or at once while the store is down."""
        if not self.up:
            return defer.fail(StoreUnavailable(self.down_message()))
        self.start()
        abandoned = threading.Event()

        def call() -> T:
            # A call still queued when its answer was given up never starts.
            if abandoned.is_set():
                raise StoreUnavailable(self.down_message())
            return fn(*args, **kwargs)

        def give_up(result: Any, timeout: float) -> Any:
            abandoned.set()
            raise defer.TimeoutError(timeout)

        d: Deferred[T] = deferToThreadPool(_reactor(), self.pool, call)
        d.addTimeout(ANSWER_WITHIN, _reactor(), onTimeoutCancel=give_up)
        d.addErrback(self._failed)
        return d

    def sync(self, key: Hashable, fn: Callable[..., T], *args: Any, default: Any = _MISSING) -> T:
        """For Scrapyd's synchronous plug points: the read ``fn(*args)`` at
        once (its waits bounded by the store's deadline), or, while the store
        is down or if it fails, its last answer (``default`` before any). A
        read that fails takes the store for down at once: the next ones do
        not wait on the reactor."""
        if self.up:
            try:
                value = fn(*args)
            except StoreError as e:
                # Not in a crawl's process (Scrapyd's runner reads the eggs),
                # which has no reactor of its own yet.
                if threadable.isInIOThread():
                    self._went_down(_failure(e))
            else:
                self._last[key] = value
                return value
        value = self._last.get(key, default)
        if value is _MISSING:
            raise StoreUnavailable(self.down_message())
        return value

    def bounded(self, fn: Callable[..., T], *args: Any) -> T:
        """For a write (or a read with no answer to fall back on) that
        Scrapyd's synchronous plug points make: ``fn(*args)`` at once, its
        waits bounded by the store's deadline; StoreUnavailable if it fails,
        or at once while the store is down. A store call that failed changed
        nothing: its transaction was rolled back."""
        if not self.up:
            raise StoreUnavailable(self.down_message())
        try:
            return fn(*args)
        except StoreError as e:
            # On the reactor, or in the node's pool (Scrapyd's writing
            # services); not in a crawl's process, which has no reactor
            # running.
            if threadable.isInIOThread() or self._started:
                self.check()
            reason = str(e).splitlines()[0] if str(e) else "no answer"
            raise StoreUnavailable(
                f"the job store is unreachable or busy ({reason}); try again in {RETRY_AFTER} s"
            ) from None

    def in_pool(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(*args)`` in the pool, without ``run``'s answer deadline: the
        node's own bookkeeping, whose store calls are bounded by the store's
        deadline."""
        self.start()
        return deferToThreadPool(_reactor(), self.pool, fn, *args)

    def down_message(self) -> str:
        return f"the job store is unreachable; try again in {RETRY_AFTER} s"

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(StoreUnavailable):
            return failure
        if failure.check(defer.TimeoutError):
            self.check()
            message = (
                f"the job store is unreachable or busy: no answer within {ANSWER_WITHIN:g} s;"
                f" try again in {RETRY_AFTER} s"
            )
            return _failure(StoreUnavailable(message))
        if failure.check(StoreError):
            self.check()
            reason = failure.getErrorMessage().splitlines()[0]
            message = (
                f"the job store is unreachable or busy ({reason}); try again in {RETRY_AFTER} s"
            )
            return _failure(StoreUnavailable(message))
        return failure

    # -- whether the store is up ------------------------------------------------

    def check(self) -> None:
        """Read the store once; down if it does not answer. Called from any
        thread."""
        if not threadable.isInIOThread():
            _reactor().callFromThread(self.check)
            return
        if self._checking or not self.up:
            return
        self._checking = True
        self.start()
        d = deferToThreadPool(_reactor(), self.pool, self._read)
        d.addTimeout(STORE_DEADLINE, _reactor())
        d.addCallbacks(lambda _: None, self._went_down)
        d.addBoth(self._checked)

    def _read(self) -> None:
        self.thread_store().count_queued()

    def _read_afresh(self) -> None:
        store = open_store(self.location, node=self.node_name, deadline=STORE_DEADLINE)
        try:
            store.count_queued()
        finally:
            store.close()

    def _checked(self, _: Any) -> None:
        self._checking = False

    def _went_down(self, failure: Failure) -> None:
        if not self.up:
            return
        self.up = False
        reason = failure.getErrorMessage().splitlines()[0] if str(failure.value) else "no answer"
        log.error(
            "The job store is unreachable ({reason}): job services answer 503 until it is back",
            reason=reason,
        )
        self._probe = LoopingCall(self._try_again)
        self.start()
        self._probe.start(PROBE_INTERVAL, now=False).addErrback(
            lambda f: log.failure("Could not check the job store", f)
        )

    def _try_again(self) -> Deferred[None]:
        d = deferToThreadPool(_reactor(), self.pool, self._read_afresh)
        d.addTimeout(STORE_DEADLINE, _reactor())
        d.addCallbacks(self._came_back, lambda _: None)
        return d

    def _came_back(self, _: Any) -> None:
        if self.up:
            return
        self.up = True
        self._generation += 1
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        log.info("The job store is back")


class ThreadStore:
    """The store of whichever thread of the pool uses it: for a generator
    that reads the store a batch at a time, each batch in any thread."""

    def __init__(self, calls: StoreCalls):
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._calls.thread_store(), name)


def unavailable(message: str) -> error.Error:
    """A store that did not answer in time, as Scrapyd's own services answer
    an error (status "error", one line), with the code that says to try
    again: for the plug points Scrapyd calls synchronously."""
    return error.Error(code=http.SERVICE_UNAVAILABLE, message=message.encode())


def _failure(e: Exception) -> Failure:
    from twisted.python.failure import Failure

    return Failure(e)


def _reactor() -> Any:
    # Imported at first use: the egg storage, which reaches this module, is
    # loaded in a crawl's process before Scrapy installs its reactor.
    from twisted.internet import reactor

    return reactor
