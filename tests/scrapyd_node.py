"""A real Scrapyd node for the end-to-end tests and the benchmark: a
``scrapyd`` process on a free loopback port, in its own directory, with the
shipped scrapyd.conf, and the project deployed to it by ``scrapyd-deploy``."""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, wait_for

PROJECT = "crawler"
BIN = Path(sys.executable).parent
# What scrapyd-deploy packs: the Scrapy project and the package metadata.
PROJECT_FILES = ("scrapy.cfg", "setup.py", "pyproject.toml", "README.md", "crawler")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def build_egg(
    workdir: Path,
    url: str = "",
    auth: tuple[str, str] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """A copy of the project in ``workdir`` whose scrapy.cfg deploys to
    ``url``: scrapyd-deploy runs there, leaving the work tree alone.
    ``settings``: added to the project's settings module, as an operator
    edits it before deploying."""
    source = workdir / "project"
    if not source.exists():
        source.mkdir(parents=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
        for name in PROJECT_FILES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=ignore)
            else:
                shutil.copy2(path, source / name)
    module = (ROOT / "crawler" / "settings.py").read_text()
    added = "".join(f"{name} = {value!r}\n" for name, value in (settings or {}).items())
    (source / "crawler" / "settings.py").write_text(module + added)
    # Built afresh: a settings module changed within the same second as the
    # last build would not be copied again.
    shutil.rmtree(source / "build", ignore_errors=True)
    cfg = configparser.ConfigParser()
    cfg.read(source / "scrapy.cfg")
    if url:
        # As the shipped scrapy.cfg writes it: scrapyd-client adds the slash.
        cfg["deploy"]["url"] = url.rstrip("/")
    if auth:
        cfg["deploy"]["username"], cfg["deploy"]["password"] = auth
    with open(source / "scrapy.cfg", "w") as f:
        cfg.write(f)
    return source


class ScrapydNode:
    """``scrapyd`` in ``workdir`` with the shipped config, on a free port."""

    def __init__(
        self,
        workdir: Path,
        *,
        options: dict[str, str] | None = None,
        jobstatus: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.auth = auth
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "scrapyd.log"
        cfg = configparser.ConfigParser()
        cfg.read(ROOT / "scrapyd.conf")
        cfg["scrapyd"].update(
            {"http_port": str(self.port), "bind_address": "127.0.0.1", **(options or {})}
        )
        if auth:
            cfg["scrapyd"]["username"], cfg["scrapyd"]["password"] = auth
        cfg["jobstatus"].update(jobstatus or {})
        self.warm = cfg["jobstatus"].get("warm_start", "on") != "off"
        # Where this run's lines begin in the log (a restart appends).
        self._log_start = 0
        with open(workdir / "scrapyd.conf", "w") as f:
            cfg.write(f)

    @property
    def db(self) -> Path:
        return self.workdir / "dbs" / "jobstatus.sqlite3"

    @property
    def tmpdir(self) -> Path:
        return self.workdir / "tmp"

    def start(self) -> ScrapydNode:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")  # noqa: SIM115 (kept open by the process)
        # The crawls run the deployed egg: nothing on the path may shadow it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # A temporary directory of its own: what the node and its crawls leave
        # there is theirs, whatever runs beside them (the suite runs in parallel).
        self.tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(self.tmpdir)
        for name in (
            "SCRAPYD_HTTP_PORT",
            "SCRAPYD_BIND_ADDRESS",
            "SCRAPYD_USERNAME",
            "SCRAPYD_PASSWORD",
        ):
            env.pop(name, None)
        self.process = subprocess.Popen(  # noqa: S603 (Scrapyd's own command)
            [str(BIN / "scrapyd")],
            cwd=self.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        out.close()
        wait_for(self._up, timeout=30, interval=0.1, what=f"scrapyd on port {self.port}")
        if self.warm:
            # Its first crawls would start cold, before the zygote is ready.
            wait_for(self.zygote_pid, timeout=60, interval=0.1, what="the node's zygote")
        return self

    def log_text(self) -> str:
        """What the node has logged since it last started."""
        with open(self.log, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def zygote_pid(self) -> int | None:
        """The pid of the node's zygote, the last one ready (warm starts)."""
        found = re.findall(r"zygote pid (\d+)", self.log_text())
        return int(found[-1]) if found else None

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"scrapyd exited: {self.log.read_text()[-3000:]}")
        try:
            return self.get("daemonstatus.json").code in (200, 401)
        except OSError:
            return False

    def stop(self, *, kill_crawls: bool = True) -> None:
        if self.process is None:
            return
        if kill_crawls and self.process.poll() is None:
            # Scrapyd leaves its crawls running when it stops.
            try:
                running = self.get("listjobs.json").json()["running"]
            except (OSError, ValueError, KeyError):
                running = []
            for crawl in running:
                try:
                    os.kill(crawl["pid"], signal.SIGKILL)
                except (ProcessLookupError, TypeError):
                    pass
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def deploy(
        self, version: str | None = None, settings: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Build the project's egg (with ``settings`` added to the project's)
        and upload it, with scrapyd-deploy."""
        source = build_egg(self.workdir, url=self.url, auth=self.auth, settings=settings)
        command = [str(BIN / "scrapyd-deploy")]
        if version:
            command += ["--version", version]
        result = subprocess.run(  # noqa: S603 (scrapyd-client's own command)
            command, cwd=source, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stderr + result.stdout
        answer = json.loads(result.stdout)
        assert answer["status"] == "ok", answer
        return result

    # -- HTTP ----------------------------------------------------------------

    def request(
        self,
        method: str,
        endpoint: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        *,
        auth: tuple[str, str] | None | bool = True,
        timeout: float = 30,
        headers: dict[str, str] | None = None,
    ) -> Response:
        query = urllib.parse.urlencode(params or {}, doseq=True)
        url = self.url + endpoint
        data = None
        if method == "GET" and query:
            url += "?" + query
        elif method == "POST":
            data = query.encode()
        request = urllib.request.Request(  # noqa: S310 (loopback)
            url, data=data, method=method, headers=headers or {}
        )
        credentials = self.auth if auth is True else (auth or None)
        if credentials:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (loopback)
                return Response(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, e.read(), dict(e.headers))

    def get(self, endpoint: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Response:
        return self.request("GET", endpoint, params, **kwargs)

    def post(
        self,
        endpoint: str,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Response:
        return self.request("POST", endpoint, params, **kwargs)

    # -- jobs ------------------------------------------------------------------

    def schedule(
        self,
        spider: str = "batch",
        *,
        job: str | None = None,
        settings: dict[str, Any] | None = None,
        **args: str,
    ) -> Response:
        params: list[tuple[str, Any]] = [("project", PROJECT), ("spider", spider)]
        if job:
            params.append(("jobid", job))
        for key, value in (settings or {}).items():
            params.append(("setting", f"{key}={value}"))
        params += list(args.items())
        return self.post("schedule.json", params)

    def status(self, job: str) -> dict[str, Any]:
        response = self.get("jobstatus.json", {"job": job})
        assert response.code == 200, (response.code, response.body)
        return response.json()["job"]

    def wait_status(self, job: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            document = self.status(job)
            return document if document["status"] in statuses else None

        return wait_for(
            reached, timeout=timeout, interval=0.05, what=f"job {job} to be {'/'.join(statuses)}"
        )

    def scrapyd_state(self, job: str) -> str | None:
        return self.get("status.json", {"job": job}).json()["currstate"]

    def crawl_pid(self, job: str) -> int:
        def pid() -> int | None:
            for process in self.get("listjobs.json").json()["running"]:
                if process["id"] == job:
                    return process["pid"]
            return None

        return wait_for(pid, timeout=30, what=f"job {job} to run")

    def wait_idle(self, timeout: float = 60) -> None:
        def idle() -> bool:
            status = self.get("daemonstatus.json").json()
            return status["running"] == 0 and status["pending"] == 0

        wait_for(idle, timeout=timeout, interval=0.1, what="scrapyd to be idle")


def slow_urls(site: str, count: int, delay: float) -> str:
    return ",".join(f"{site}/slow?delay={delay}&n={i}" for i in range(count))


def sample_urls(site: str, delay: float = 0) -> str:
    names = ["", "apple", "banana", "cherry", "damson", "elderberry", "fig", "grape"]
    return ",".join(f"{site}/sample/{name}?delay={delay}" for name in names)


def parent_pid(pid: int) -> int:
    """The parent of a process: the node, or its zygote for a warm crawl."""
    with open(f"/proc/{pid}/stat") as f:
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        return int(f.read().rpartition(")")[2].split()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def running_node(
    workdir: Path, *, settings: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[ScrapydNode]:
    """For a fixture: a started node with the project deployed (``settings``
    added to the project's), stopped after."""
    node = ScrapydNode(workdir, **kwargs)
    try:
        node.start()
        node.deploy(settings=settings)
        yield node
    finally:
        node.stop()
