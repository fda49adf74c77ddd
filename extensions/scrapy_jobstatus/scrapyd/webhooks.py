"""A Scrapyd node's webhooks: the deliveries of its store's outbox, and
``webhooks.json``, a job's delivery log.

Every node sharing a store delivers from its outbox: each delivery is
claimed by one node at a time (a lease), so a cluster calls each webhook
once per attempt, and the deliveries of a node that died are taken up by
the others when its lease ends. A restarted node takes up where it stopped:
the outbox is in the store.

Deliveries run in a pool of threads of their own: a receiver that hangs
holds one thread for at most its timeout, never the reactor nor a crawl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapyd.webservice import param
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .._store import StoreError
from .._webhooks import WebhookSender
from ._params import read_job_id, read_name
from ._resource import JobResource

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.web.server import Request

    from .._store import Delivery
    from ._node import JobStatusNode

log = Logger(namespace="scrapy_jobstatus.scrapyd.webhooks")

# Seconds between two looks for due deliveries.
DELIVERY_INTERVAL = 1.0
# Deliveries under way at once: so many receivers may hang at a time.
WORKERS = 4


class WebhookDelivery:
    """Started and stopped by the launcher."""

    def __init__(self, node: JobStatusNode):
        self.sender = WebhookSender(
            node.db, node.webhook_secret, node.webhook_policy, node=node.name
        )
        self.pool = ThreadPool(minthreads=0, maxthreads=WORKERS + 1, name="webhooks")
        self.loop = LoopingCall(self.tick)
        self.busy = 0
        self.claiming = False
        # The last claim got all it asked for: more may be due.
        self.backlog = False

    def start(self) -> None:
        if self.sender.unsigned:
            # A project's own JOBSTATUS_WEBHOOKS wait in the outbox for a
            # deliverer that can sign them (another node, scrapy jobnotify).
            log.info(
                "No webhook_secret in [jobstatus]: this node delivers the jobs' own"
                " webhooks only, each signed with its own key"
            )
        self.pool.start()
        self.loop.start(DELIVERY_INTERVAL, now=True)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()
            self.pool.stop()
        self.sender.close()

    def tick(self) -> None:
        free = WORKERS - self.busy
        if free <= 0 or self.claiming:
            return
        self.claiming = True
        d = deferToThreadPool(reactor, self.pool, self.sender.claim, free)
        d.addCallback(self._claimed, free)
        d.addErrback(self._failed)
        d.addBoth(self._claim_done)

    def _claimed(self, deliveries: list[Delivery], asked: int) -> None:
        self.backlog = len(deliveries) == asked
        for delivery in deliveries:
            self.busy += 1
            d = deferToThreadPool(reactor, self.pool, self.sender.deliver, delivery)
            d.addErrback(self._failed)
            d.addBoth(self._delivered)

    def _claim_done(self, _: Any) -> None:
        self.claiming = False

    def _delivered(self, _: Any) -> None:
        self.busy -= 1
        if self.backlog and self.loop.running:
            # A backlog (a receiver back after an outage, a restart) is
            # worked off at the receivers' pace, not one batch a tick.
            self.tick()

    def _failed(self, failure: Failure) -> None:
        # Its lease ends by itself: the delivery is tried again.
        if failure.check(StoreError):
            log.error("Could not deliver webhooks: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Could not deliver webhooks", failure)


class Webhooks(JobResource):
    """``webhooks.json?job=ID``: each delivery of the job's events, with
    its attempts (time, HTTP status or error, next retry); URLs redacted."""

    @param("job")
    @param("project", required=False)
    def render_GET(self, txrequest: Request, job: str, project: str | None) -> dict[str, Any]:
        job_id = read_job_id(job)
        self.find_job(job_id, read_name("project", project))
        return {"job_id": job_id, "deliveries": self.node.store.webhook_log(job_id)}
