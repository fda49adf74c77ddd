"""The ``--url`` client of the commands: the node's credentials go to the
host given, never to one a redirect names."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scrapy_jobstatus.commands._base import CommandError, RemoteJobs

AUTH = "admin:n0de-Pa55"
JOB = {"job_id": "j1", "status": "completed"}


class Recorder(BaseHTTPRequestHandler):
    """Answers as a job service, or redirects where ``server.redirect`` says;
    records each request's path and Authorization header."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        redirect = server.redirect  # type: ignore[attr-defined]
        if redirect and not self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", redirect + self.path.lstrip("/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"status": "ok", "node_name": "n", "job": JOB}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def recorder(redirect: str | None = None) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.redirect = redirect  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def url_of(server: ThreadingHTTPServer, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.server_address[1]}/"


def basic(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode()).decode()


def test_a_redirect_to_another_port_is_an_error_and_gets_no_credentials():
    with recorder() as other, recorder(redirect=url_of(other)) as node:
        client = RemoteJobs(url_of(node), AUTH)
        with pytest.raises(CommandError) as info:
            client.status("j1")
        assert other.seen == []
        assert node.seen[0][1] == basic(AUTH)
    message = str(info.value)
    assert "\n" not in message and "another host" in message
    assert "n0de-Pa55" not in message


def test_a_redirect_to_another_host_name_is_an_error():
    # localhost and 127.0.0.1 reach the same server, but are two origins.
    with recorder() as other, recorder(redirect=url_of(other, "localhost")) as node:
        with pytest.raises(CommandError):
            RemoteJobs(url_of(node), AUTH).status("j1")
        assert other.seen == []


def test_a_redirect_within_the_node_is_followed_with_the_credentials():
    with recorder() as node:
        node.redirect = url_of(node) + "moved/"  # type: ignore[attr-defined]
        assert RemoteJobs(url_of(node), AUTH).status("j1") == JOB
        assert [path.partition("?")[0] for path, _ in node.seen] == [
            "/jobstatus.json",
            "/moved/jobstatus.json",
        ]
        assert {auth for _, auth in node.seen} == {basic(AUTH)}
