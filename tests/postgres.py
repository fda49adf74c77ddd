"""A throwaway PostgreSQL server for the tests: made with ``initdb`` in a
temporary directory, listening on 127.0.0.1 and a socket directory of its
own, trusting local connections, gone at the end.

PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` user (or ``nobody``) and owns its directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A role that must give its password: the tests of a wrong one.
PASSWORD_ROLE = "jobstatus_pw"  # noqa: S105 (a throwaway server's)
PASSWORD = "s3cret-Pa55word"  # noqa: S105
# A role the tests of store locations make, with passwords that hold what
# URLs and keyword DSNs give a meaning to; it must give them too.
SECRETS_ROLE = "jobstatus_secrets"  # noqa: S105

_HBA = f"""\
local all all trust
host all {PASSWORD_ROLE},{SECRETS_ROLE} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


class PostgresNotInstalled(RuntimeError):
    pass


def find_binaries() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresNotInstalled(
            "PostgreSQL is not installed (no initdb on PATH nor in /usr/lib/postgresql/*/bin):"
            " apt-get install postgresql, as scripts/test.sh does"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` it, then ``url()`` or ``database()``; ``stop()`` removes it all."""

    def __init__(self) -> None:
        self.bin = find_binaries()
        self.port = 0
        self._as: dict[str, Any] = {}
        if os.getuid() == 0:
            user = _unprivileged_user()
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.dir = Path(tempfile.mkdtemp(prefix="jobstatus-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"
        self.log = self.dir / "server.log"
        self.sockets.mkdir()
        if self._as:
            for path in (self.dir, self.sockets):
                os.chown(path, self._as["user"], self._as["group"])

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"}
        if self._as:
            env["HOME"] = str(self.dir)
        result = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd=self.dir, **self._as
        )
        if result.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )
        return result

    def start(self) -> PostgresServer:
        self._run(
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )
        (self.data / "pg_hba.conf").write_text(_HBA)
        options = [
            "-h 127.0.0.1",
            f"-k {self.sockets}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
            "-c password_encryption=scram-sha-256",
        ]
        self._options = options
        for attempt in range(5):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                if attempt == 4 or "already in use" not in self.log.read_text(errors="replace"):
                    raise
        self.execute(
            f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'"  # noqa: S608 (constants)
        )
        return self

    def _pg_ctl_start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--wait",
            "--timeout",
            "60",
            "-o",
            " ".join([*self._options, f"-p {self.port}"]),
            "start",
        )

    def halt(self) -> None:
        """Stop the server, its clients cut off, its data kept (the server
        runs without synchronous commits: a crash could lose the latest);
        ``resume()`` starts it again on the same port."""
        self._run(str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--mode", "fast", "stop")

    def resume(self) -> None:
        self._pg_ctl_start()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bin / "pg_ctl"),
                    "--pgdata",
                    str(self.data),
                    "--mode",
                    "immediate",
                    "--wait",
                    "stop",
                )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """The URL of a new, empty database, dropped afterwards."""
        with temporary_database(self.url()) as url:
            yield url


@contextlib.contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """Make a database on the server of ``server_url`` (a superuser's URL),
    yield its URL, drop it (with whatever is still connected to it)."""
    import psycopg

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        # A file copy of the template: faster than WAL-logging it (15 and later).
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f"CREATE DATABASE {name}{strategy}")  # noqa: S608 (a uuid)
    base, _, _ = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "running as root, and neither a postgres nor a nobody user to run PostgreSQL"
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()
