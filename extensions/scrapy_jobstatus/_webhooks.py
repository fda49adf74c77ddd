"""Webhook deliveries, to the Standard Webhooks 1.0 specification.

The store writes each event into its outbox in the same write as the status
change it reports; a deliverer (a Scrapyd node, a plain ``scrapy crawl``
for its own job, ``scrapy jobnotify``) claims the due deliveries for a
while (a lease: another deliverer gets them only if this one dies), POSTs
each and records the attempt. At least once, with the same ``webhook-id``
on every attempt: a receiver deduplicates on it.

Retried with exponential backoff and jitter on connection errors, timeouts,
5xx, 408 and 429 (a ``Retry-After`` is honoured), until ``max_age`` after the
event; any other answer but 2xx ends the delivery, failed.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from standardwebhooks.webhooks import Webhook

from ._defaults import DEFAULTS, default
from ._model import InvalidSetting, redact_url
from ._settings import setting_number
from ._store import Attempt, Delivery, StoreError, is_postgres, open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._store import JobStore

DEFAULT_TIMEOUT: float = DEFAULTS["JOBSTATUS_WEBHOOK_TIMEOUT"]
DEFAULT_RETRY_DELAY: float = DEFAULTS["JOBSTATUS_WEBHOOK_RETRY_DELAY"]
DEFAULT_MAX_AGE: float = DEFAULTS["JOBSTATUS_WEBHOOK_MAX_AGE"]
MAX_DELAY = 3600.0
RETRY_STATUSES = frozenset({408, 429})
# Seconds a claim's lease lasts beyond an attempt's timeout.
LEASE_MARGIN = 10.0
# Seconds between two looks for a crawl's own due deliveries.
CRAWL_DELIVERY_INTERVAL = 0.5
# Seconds a crawl waits at its end for its last deliveries.
DEFAULT_WAIT: float = DEFAULTS["JOBSTATUS_WEBHOOK_WAIT"]
# Errors are kept short in the delivery log.
MAX_ERROR = 300
USER_AGENT = "scrapy-jobstatus-webhooks"
# A job's own receivers: each event is one delivery a receiver, holding a
# delivery thread up to its timeout, retried for a day.
MAX_JOB_WEBHOOKS = 10
# Bytes of a job's own key, at the least (Standard Webhooks: 24 to 64).
JOB_SECRET_BYTES = 24


class InvalidWebhook(ValueError):
    """A webhook URL or secret that cannot be used; its message is one line."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhook(f"webhook {redact_url(url)!r}: only http and https URLs are called")
    return url


def check_secret(secret: str, least: int = 1) -> str:
    """A ``whsec_`` secret, as the Standard Webhooks libraries take it, of
    ``least`` bytes or more. Its messages never quote it."""
    if not secret.startswith("whsec_"):
        raise InvalidWebhook("a webhook secret starts with whsec_, then base64")
    try:
        Webhook(secret)
        # As the library decodes it: unpadded base64 is taken.
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    except Exception:  # binascii.Error, or an empty secret
        raise InvalidWebhook("a webhook secret is whsec_ followed by base64") from None
    if len(key) < least:
        raise InvalidWebhook(
            f"a webhook secret is whsec_ followed by the base64 of {least} bytes or more,"
            f" not {len(key)}"
        )
    return secret


def job_webhooks(urls: str | None, secret: str | None) -> tuple[list[str], str | None]:
    """A job's own receivers (schedule.json's ``webhook``) and their key
    (``webhook_secret``); raises InvalidWebhook, in one line."""
    own = list(dict.fromkeys(webhook_urls(urls)))
    if len(own) > MAX_JOB_WEBHOOKS:
        raise InvalidWebhook(f"at most {MAX_JOB_WEBHOOKS} webhook URLs a job, not {len(own)}")
    if own and not secret:
        raise InvalidWebhook(
            "webhook needs webhook_secret: the receiver's own key, whsec_ followed by the"
            f" base64 of {JOB_SECRET_BYTES} random bytes or more"
        )
    if secret and not own:
        raise InvalidWebhook("webhook_secret goes with webhook: the URLs it signs for")
    if secret:
        try:
            check_secret(secret, JOB_SECRET_BYTES)
        except InvalidWebhook as e:
            raise InvalidWebhook(f"webhook_secret: {e}") from None
    return own, secret or None


def webhook_urls(value: str | Iterable[str] | None) -> list[str]:
    """URLs from a setting: a list, or text separated by spaces or commas."""
    if not value:
        return []
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return [check_url(str(url)) for url in items]


@dataclass(frozen=True)
class WebhookPolicy:
    """How long an attempt may take, and how attempts are spaced."""

    timeout: float = DEFAULT_TIMEOUT
    retry_delay: float = DEFAULT_RETRY_DELAY
    max_age: float = DEFAULT_MAX_AGE

    def next_attempt(
        self, delivery: Delivery, now: float, retry_after: float | None, jitter: float
    ) -> float | None:
        """When to try again after ``delivery.attempts + 1`` attempts, or None
        once the event is too old. ``jitter`` in [0, 1): equal jitter, so
        that receivers coming back are not hit by every retry at once."""
        delay = min(MAX_DELAY, self.retry_delay * 2**delivery.attempts)
        delay = delay / 2 + jitter * delay / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_DELAY))
        at = now + delay
        return at if at <= delivery.created_at + self.max_age else None


@dataclass(frozen=True)
class WebhookSettings:
    """A crawl's webhooks: JOBSTATUS_WEBHOOKS and the settings around it."""

    urls: list[str]
    secret: str | None
    # A plain crawl delivers its events itself; under Scrapyd, the node does.
    deliver: bool
    wait: float
    policy: WebhookPolicy

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookSettings:
        """Raises InvalidSetting, naming the setting."""
        try:
            urls = webhook_urls(settings.get("JOBSTATUS_WEBHOOKS"))
        except InvalidWebhook as e:
            raise InvalidSetting(f"JOBSTATUS_WEBHOOKS: {e}") from None
        secret = settings.get("JOBSTATUS_WEBHOOK_SECRET") or None
        if secret:
            try:
                check_secret(secret)
            except InvalidWebhook as e:
                raise InvalidSetting(f"JOBSTATUS_WEBHOOK_SECRET: {e}") from None
        try:
            name = "JOBSTATUS_WEBHOOK_DELIVER"
            deliver = settings.getbool(name, default(name))
        except ValueError:
            raise InvalidSetting("JOBSTATUS_WEBHOOK_DELIVER must be true or false") from None
        if urls and deliver and not secret:
            raise InvalidSetting("JOBSTATUS_WEBHOOKS needs JOBSTATUS_WEBHOOK_SECRET to sign them")

        def number(name: str, default: float, least: float = 0) -> float:
            value = setting_number(name, settings.get(name), default)
            if value < least:
                raise InvalidSetting(f"{name} must be {least:g} or more, got {value:g}")
            return value

        policy = WebhookPolicy(
            timeout=number("JOBSTATUS_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT, 0.1),
            retry_delay=number("JOBSTATUS_WEBHOOK_RETRY_DELAY", DEFAULT_RETRY_DELAY, 0.1),
            max_age=number("JOBSTATUS_WEBHOOK_MAX_AGE", DEFAULT_MAX_AGE),
        )
        return cls(urls, secret, deliver, number("JOBSTATUS_WEBHOOK_WAIT", DEFAULT_WAIT), policy)


class CrawlDelivery:
    """A plain crawl delivers its own job's events, from a thread of its
    own (a slow receiver never slows the crawl); at its end, what is left,
    for at most ``wait`` seconds. What is still due then stays in the
    outbox for ``scrapy jobnotify``."""

    def __init__(self, location: str, job_id: str, settings: WebhookSettings):
        self.location = location
        self.job_id = job_id
        self.wait = settings.wait
        self.sender = WebhookSender(location, settings.secret, settings.policy)
        self._wake = threading.Event()
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name="jobstatus-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> int:
        """Deliver what is left, within ``wait``; the undelivered count."""
        self._deadline = time.monotonic() + self.wait
        self._wake.set()
        self._thread.join(self.wait)
        # The thread may still wait for a receiver that hangs: count apart.
        store = open_store(self.location)
        try:
            return store.count_undelivered(self.job_id)
        except StoreError:
            return -1
        finally:
            store.close()

    def _run(self) -> None:
        while True:
            try:
                self.sender.deliver_due(job_id=self.job_id)
                if self._deadline is not None and not self.sender.store.count_undelivered(
                    self.job_id
                ):
                    break
            except StoreError:
                pass  # the next turn tries again; the outbox keeps them
            if self._deadline is not None and time.monotonic() >= self._deadline:
                break
            self._wake.wait(CRAWL_DELIVERY_INTERVAL)
            self._wake.clear()
        self.sender.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook is not followed elsewhere: a 3xx ends the delivery.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookSender:
    """POSTs deliveries and records their attempts. Thread-safe: each thread
    gets a SQLite store of its own (a SQLite connection must not be shared
    by two threads); a PostgreSQL store's pool serves them all."""

    def __init__(
        self,
        location: str,
        secret: str | None,
        policy: WebhookPolicy | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        node: str | None = None,
    ):
        self._location = location
        self._node = node
        self._shared: JobStore | None = None
        self._signer = Webhook(secret) if secret else None
        # Without a webhook_secret of its own, a deliverer makes only the
        # deliveries that carry their key (a job's own receivers).
        self.unsigned = self._signer is None
        self.policy = policy or WebhookPolicy()
        self._clock = clock
        self._jitter = jitter
        self._local = threading.local()
        self._stores: list[JobStore] = []
        self._lock = threading.Lock()

    @property
    def store(self) -> JobStore:
        if is_postgres(self._location):
            with self._lock:
                if self._shared is None:
                    self._shared = open_store(self._location, node=self._node)
                    self._stores.append(self._shared)
                return self._shared
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = open_store(self._location, node=self._node)
            with self._lock:
                self._stores.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            stores, self._stores, self._shared = self._stores, [], None
        for store in stores:
            store.close()

    def claim(
        self, limit: int, job_id: str | None = None, due_by: float | None = None
    ) -> list[Delivery]:
        # The lease outlasts an attempt and its record: nobody else sends it
        # meanwhile. A deliverer that died holds it no longer than this.
        lease = self.policy.timeout + LEASE_MARGIN
        return self.store.claim_deliveries(
            self._clock(), lease, limit, job_id, due_by, keyed_only=self.unsigned
        )

    def deliver(self, delivery: Delivery) -> Attempt:
        attempt = self.send(delivery)
        self.store.record_attempt(delivery, attempt)
        return attempt

    def deliver_due(self, limit: int = 50, job_id: str | None = None) -> list[Attempt]:
        """Send what is due now, one after the other, each claimed just
        before it is sent: a lease never runs out while others are sent."""
        # What was due when the call began: a retry falls due later.
        due_by = self._clock()
        attempts = []
        for _ in range(limit):
            claimed = self.claim(1, job_id, due_by)
            if not claimed:
                break
            attempts.append(self.deliver(claimed[0]))
        return attempts

    def send(self, delivery: Delivery) -> Attempt:
        now = self._clock()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            with _OPENER.open(self._request(delivery, now), timeout=self.policy.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
            retry_after = _retry_after(e.headers.get("Retry-After"), now)
            e.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            error = _one_line(getattr(e, "reason", None) or e)
        duration_ms = round((time.monotonic() - started) * 1000)
        delivered = status is not None and 200 <= status < 300
        retry = not delivered and (status is None or status >= 500 or status in RETRY_STATUSES)
        if status is not None and not delivered:
            error = f"HTTP {status}"
        next_at = (
            self.policy.next_attempt(delivery, now, retry_after, self._jitter()) if retry else None
        )
        return Attempt(now, status, error, duration_ms, delivered, next_at)

    def _request(self, delivery: Delivery, now: float) -> urllib.request.Request:
        timestamp = int(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
        }
        # A job's own receiver verifies with its own key, never the node's.
        signer = Webhook(delivery.secret) if delivery.secret else self._signer
        if signer is not None:
            signed_at = datetime.fromtimestamp(timestamp, UTC)
            headers["webhook-signature"] = signer.sign(delivery.event_id, signed_at, delivery.body)
        url, credentials = _split_credentials(delivery.url)
        if credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        return urllib.request.Request(  # noqa: S310 (http and https only: check_url)
            url, data=delivery.body.encode(), headers=headers, method="POST"
        )


def _split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its user part, and that part for basic auth."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return urlunsplit(parts._replace(netloc=host)), credentials


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _one_line(error: object) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.replace("\x00", "")[:MAX_ERROR]
