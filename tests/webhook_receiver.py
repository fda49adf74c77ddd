"""A real HTTP receiver of webhooks for the tests: it verifies every
delivery with the ``standardwebhooks`` package, as a receiver would, and
answers as a test scripts it (fail some attempts, hang, refuse)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (the tests' own)
# A job's own receiver's key (schedule.json's webhook_secret): 32 bytes.
JOB_SECRET = "whsec_Sm9iLW93bi1rZXktb2YtdGhlLXRlc3RzLTMyLWJ5dGVzIQ=="  # noqa: S105


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int | None  # None: the receiver hung

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


def verifies(received: Received, secret: str) -> bool:
    """Whether a delivery's signature is that of ``secret``."""
    try:
        Webhook(secret).verify(received.body, received.headers)
    except WebhookVerificationError:
        return False
    return True


@dataclass
class Receiver:
    url: str
    secret: str
    # (attempt number of this webhook-id, starting at 1) -> HTTP status, or
    # None to hang until the test ends.
    answer: Callable[[int], int | None] = lambda attempt: 200
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.verified and 200 <= (r.answered or 0) < 300]

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.accepted() if r.payload["type"] == event_type]

    def attempts_of_job(self, job_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if json.loads(r.body)["data"]["job_id"] == job_id]

    def attempts(self, event_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.event_id == event_id]


@contextmanager
def webhook_receiver(secret: str = SECRET, path: str = "/hook") -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                Webhook(receiver.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            event_id = headers.get("webhook-id")
            with receiver.lock:
                attempt = 1 + sum(r.event_id == event_id for r in receiver.received)
                status = receiver.answer(attempt) if verified else 400
                receiver.received.append(Received(time.time(), headers, body, verified, status))
            if status is None:
                receiver.released.wait(60)  # a receiver that hangs
                return
            self.send_response(status)
            if receiver.retry_after and status in (429, 503):
                self.send_header("Retry-After", receiver.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}", secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
