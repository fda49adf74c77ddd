"""How the launcher starts a crawl: cold (a fresh Python, Scrapyd's way) or
warm (forked from a zygote that has imported Scrapy and Twisted once; see
zygote.py).

A warm crawl looks to the launcher as a cold one does: its process protocol
gets a transport with the crawl's pid, whose ``signalProcess`` signals the
crawl; its stdout and stderr, read from pipes the launcher made; its exit
code, reported by the zygote (its parent, the only process that can reap
it). While no zygote is ready (starting, dead, older than the installed
Scrapy or library), crawls start cold; a lost zygote costs one warning line
and is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet import error, reactor
from twisted.internet.interfaces import IProcessTransport, IReadDescriptor
from twisted.internet.process import ProcessReader
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._store import process_alive

if TYPE_CHECKING:
    from twisted.internet.base import DelayedCall

log = Logger(namespace="scrapy_jobstatus.scrapyd.launcher")

ZYGOTE_MODULE = "scrapy_jobstatus.scrapyd.zygote"
# Seconds the launcher waits for the zygote to fork a crawl; it has failed
# past this (the crawl, never told to go, does not run).
SPAWN_TIMEOUT = 3.0
# Seconds a new zygote has to import everything and say it is ready.
READY_TIMEOUT = 60.0
# Seconds before a lost zygote is replaced, doubling while it keeps failing.
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 60.0
# Seconds between two looks at the crawls of a zygote that died: their
# parent is gone, their exit is seen by their pid going away.
ORPHAN_POLL = 0.5


class ZygoteError(Exception):
    """The zygote could not start a crawl: start it cold."""


class ColdSpawner:
    """Scrapyd's way: a new Python for each crawl."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def spawn(self, process: ProcessProtocol, args: list[str], env: dict[str, str]) -> None:
        reactor.spawnProcess(process, args[0], args=args, env=env)


class WarmSpawner:
    """Forks each crawl from the zygote; starts it cold while there is none
    ready."""

    def __init__(self) -> None:
        self.cold = ColdSpawner()
        self.zygote: Zygote | None = None
        # Zygotes replaced while their crawls run: they still report exits.
        self.retired: set[Zygote] = set()
        self.orphans: dict[int, WarmProcess] = {}
        self._orphan_poll = LoopingCall(self._poll_orphans)
        self._restart: DelayedCall | None = None
        self._restart_delay = RESTART_DELAY
        self._warned = False
        self._stopping = False

    def start(self) -> None:
        self._start_zygote()

    def stop(self) -> None:
        self._stopping = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        if self._orphan_poll.running:
            self._orphan_poll.stop()
        for zygote in [self.zygote, *self.retired]:
            if zygote is not None:
                zygote.close()

    def spawn(self, process: ProcessProtocol, args: list[str], env: dict[str, str]) -> None:
        zygote = self.zygote
        if (
            zygote is not None
            and zygote.ready
            and args[1:2] == ["-m"]
            and _startup_variables(env) == zygote.startup_variables
        ):
            if zygote.outdated():
                log.info(
                    "Warm starts: Scrapy, Twisted, Scrapyd or scrapy-jobstatus was installed "
                    "again; replacing the zygote (pid {pid})",
                    pid=zygote.pid,
                )
                self._retire(zygote)
                self._start_zygote()
            else:
                try:
                    zygote.spawn(process, args, env)
                    return
                except ZygoteError as e:
                    self.lost(zygote, str(e))
        self.cold.spawn(process, args, env)

    def _start_zygote(self) -> None:
        self._restart = None
        if self._stopping:
            return
        try:
            self.zygote = Zygote(self)
        except OSError as e:
            self.zygote = None
            self._warn(f"the zygote could not start: {e}")
            self._schedule_restart()

    def _retire(self, zygote: Zygote) -> None:
        if self.zygote is zygote:
            self.zygote = None
        if zygote.children:
            self.retired.add(zygote)
            zygote.retire()
        else:
            zygote.close()

    def ready(self, zygote: Zygote) -> None:
        self._restart_delay = RESTART_DELAY
        if self._warned:
            log.info("Warm starts again: zygote pid {pid}", pid=zygote.pid)
        else:
            log.info("Warm starts: zygote pid {pid} ready", pid=zygote.pid)
        self._warned = False

    def lost(self, zygote: Zygote, why: str) -> None:
        """The zygote died, or failed a request: its crawls run on, watched
        by their pids; a new one replaces it."""
        zygote.close()
        with contextlib.suppress(error.ProcessExitedAlready, OSError):
            # One that failed a request may hang: its crawls run on.
            zygote.process.signalProcess("KILL")
        self.retired.discard(zygote)
        for pid, process in zygote.children.items():
            self.orphans[pid] = process
        zygote.children.clear()
        if self.orphans and not self._orphan_poll.running:
            self._orphan_poll.start(ORPHAN_POLL, now=False)
        if self.zygote is zygote:
            self.zygote = None
            self._warn(why)
            self._schedule_restart()

    def retired_ended(self, zygote: Zygote) -> None:
        self.retired.discard(zygote)
        zygote.close()

    def _warn(self, why: str) -> None:
        if not self._warned and not self._stopping:
            log.warn("Warm starts unavailable, crawls start cold: {why}", why=why)
        self._warned = True

    def _schedule_restart(self) -> None:
        if self._stopping or self._restart is not None:
            return
        self._restart = reactor.callLater(self._restart_delay, self._start_zygote)
        self._restart_delay = min(self._restart_delay * 2, RESTART_DELAY_MAX)

    def _poll_orphans(self) -> None:
        for pid in [pid for pid in self.orphans if not process_alive(pid)]:
            self.orphans.pop(pid).exited(None)
        if not self.orphans:
            self._orphan_poll.stop()


@implementer(IReadDescriptor)
class Zygote:
    """The launcher's end of one zygote: the process and its socket."""

    def __init__(self, spawner: WarmSpawner):
        self.spawner = spawner
        self.children: dict[int, WarmProcess] = {}
        self.ready = False
        self.files: dict[str, int | None] = {}
        self.buffer = b""
        self.closed = False
        env = dict(os.environ)
        # What Python reads as it starts, the zygote's once for all its
        # crawls: a job that sets them otherwise starts cold.
        self.startup_variables = _startup_variables(env)
        self.socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            args = [sys.executable, "-m", ZYGOTE_MODULE]
            self.process = reactor.spawnProcess(
                ZygoteProtocol(),
                sys.executable,
                args=args,
                env=env,
                childFDs={0: "w", 1: "r", 2: "r", 3: theirs.fileno()},
            )
        except BaseException:
            self.socket.close()
            raise
        finally:
            theirs.close()
        self.pid: int = self.process.pid
        self.socket.setblocking(False)
        reactor.addReader(self)
        self._ready_timer = reactor.callLater(READY_TIMEOUT, self._not_ready)

    def _not_ready(self) -> None:
        if not self.ready and not self.closed:
            self.spawner.lost(self, f"the zygote was not ready within {READY_TIMEOUT:g} s")

    # -- requests ------------------------------------------------------------

    def spawn(self, process: ProcessProtocol, args: list[str], env: dict[str, str]) -> None:
        """Fork the crawl ``args`` (``python -m runner crawl ...``) with
        ``env``; its protocol gets a transport once the zygote has forked."""
        stdin, stdout, stderr, go = os.pipe(), os.pipe(), os.pipe(), os.pipe()
        theirs = [stdin[0], stdout[1], stderr[1], go[0]]
        ours = [stdin[1], stdout[0], stderr[0]]
        request = {
            "module": args[2],
            # runpy puts the module's path first, as ``python -m`` does.
            "argv": [args[0], *args[3:]],
            "env": env,
            "cwd": os.getcwd(),
            "umask": _umask(),
        }
        try:
            reply = self._request({"spawn": request}, theirs)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if "pid" not in reply:
            for fd in [*ours, go[1]]:
                os.close(fd)
            raise ZygoteError(f"the zygote could not fork a crawl: {reply.get('error')}")
        pid = int(reply["pid"])
        self.children[pid] = WarmProcess(process, pid, *ours)
        # The crawl runs from here on, never before its pid is known.
        os.write(go[1], b"1")
        os.close(go[1])

    def _request(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        """Send a request and wait for its answer; what else the zygote
        says meanwhile (exits) is handled once this returns."""
        if self.closed:
            raise ZygoteError("the zygote has gone")
        self.socket.settimeout(SPAWN_TIMEOUT)
        try:
            data = json.dumps(message).encode() + b"\n"
            sent = socket.send_fds(self.socket, [data], fds)
            if sent < len(data):
                self.socket.sendall(data[sent:])
            while True:
                while (answer := self._next_line()) is not None:
                    if "pid" in answer or "error" in answer:
                        return answer
                    reactor.callLater(0, self._handle, answer)
                chunk = self.socket.recv(65536)
                if not chunk:
                    raise ZygoteError("the zygote has gone")
                self.buffer += chunk
        except OSError as e:  # a timeout is one
            raise ZygoteError(f"the zygote did not answer: {e}") from None
        finally:
            if not self.closed:
                self.socket.setblocking(False)

    def retire(self) -> None:
        try:
            self.socket.send(b'{"retire": true}\n')
        except OSError:
            self.spawner.lost(self, "the zygote has gone")

    def outdated(self) -> bool:
        return any(_mtime(path) != mtime for path, mtime in self.files.items())

    def close(self) -> None:
        if self._ready_timer.active():
            self._ready_timer.cancel()
        if self.closed:
            return
        self.closed = True
        reactor.removeReader(self)
        self.socket.close()

    # -- what the zygote says ------------------------------------------------

    def fileno(self) -> int:
        return -1 if self.closed else self.socket.fileno()

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        try:
            chunk = self.socket.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._gone()
            return
        self.buffer += chunk
        while (message := self._next_line()) is not None:
            self._handle(message)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        self._gone()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        return "Zygote"

    def _next_line(self) -> dict[str, Any] | None:
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def _handle(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.files = {path: _mtime(path) for path in message["files"]}
            self.ready = True
            if self._ready_timer.active():
                self._ready_timer.cancel()
            self.spawner.ready(self)
        elif "exit" in message:
            process = self.children.pop(int(message["exit"]), None)
            if process is not None:
                process.exited(int(message["status"]))
            if self in self.spawner.retired and not self.children:
                self.spawner.retired_ended(self)

    def _gone(self) -> None:
        if self.closed and not self.children:
            return
        self.spawner.lost(self, f"the zygote (pid {self.pid}) has gone")


class ZygoteProtocol(ProcessProtocol):
    """What the zygote itself prints: in the node's log."""

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        log.info("{data}", data=data.decode(errors="replace").rstrip(), log_system="Zygote")

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        log.error("{data}", data=data.decode(errors="replace").rstrip(), log_system="Zygote")


@implementer(IProcessTransport)
class WarmProcess:
    """The transport of a warm crawl, as Twisted's Process is a cold one's:
    its output read from its pipes, its signals sent to its pid, and its
    protocol's processEnded once it has exited and closed its output."""

    def __init__(self, proto: ProcessProtocol, pid: int, stdin: int, stdout: int, stderr: int):
        self.proto = proto
        self.pid: int | None = pid
        self.status: int | None = None
        self.stdin: int | None = stdin
        self.exited_already = False
        self.pipes = {
            1: ProcessReader(reactor, self, 1, stdout),
            2: ProcessReader(reactor, self, 2, stderr),
        }
        proto.makeConnection(self)

    def childDataReceived(self, name: int, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.proto.childDataReceived(name, data)

    def childConnectionLost(self, name: int, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        os.close(self.pipes.pop(name).fileno())
        self.proto.childConnectionLost(name)
        self._maybe_ended()

    def exited(self, status: int | None) -> None:
        """The crawl has exited with this ``os.waitpid`` status (None: it
        is not known, its zygote died first)."""
        self.exited_already = True
        self.status = status
        self.proto.processExited(Failure(self._reason()))
        self._maybe_ended()

    def _reason(self) -> BaseException:
        status = self.status
        if status is None:
            return error.ProcessTerminated(None, None, None)
        if os.WIFEXITED(status):
            code, signum = os.WEXITSTATUS(status), None
        else:
            code, signum = None, os.WTERMSIG(status)
        if code or signum:
            return error.ProcessTerminated(code, signum, status)
        return error.ProcessDone(status)

    def _maybe_ended(self) -> None:
        if not self.exited_already or self.pipes or self.pid is None:
            return
        self.pid = None
        self.closeStdin()
        self.proto.processEnded(Failure(self._reason()))

    # -- IProcessTransport ---------------------------------------------------

    def signalProcess(self, signalID: str | int) -> None:  # noqa: N802, N803 (Twisted's names)
        if signalID in ("HUP", "STOP", "INT", "KILL", "TERM"):
            signalID = getattr(signal, f"SIG{signalID}")
        if self.pid is None or self.exited_already:
            raise error.ProcessExitedAlready()
        try:
            os.kill(self.pid, int(signalID))
        except ProcessLookupError:
            raise error.ProcessExitedAlready() from None

    def closeStdin(self) -> None:  # noqa: N802 (Twisted's name)
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def closeStdout(self) -> None:  # noqa: N802 (Twisted's name)
        self.closeChildFD(1)

    def closeStderr(self) -> None:  # noqa: N802 (Twisted's name)
        self.closeChildFD(2)

    def closeChildFD(self, descriptor: int) -> None:  # noqa: N802 (Twisted's name)
        if descriptor == 0:
            self.closeStdin()
        elif descriptor in self.pipes:
            self.pipes[descriptor].loseConnection()

    def writeToChild(self, childFD: int, data: bytes) -> None:  # noqa: N802, N803 (Twisted's names)
        if childFD == 0:
            self.write(data)

    def write(self, data: bytes) -> None:
        if self.stdin is not None:
            os.write(self.stdin, data)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 (Twisted's name)
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802 (Twisted's name)
        self.closeStdin()
        for name in list(self.pipes):
            self.closeChildFD(name)

    def getPeer(self) -> Any:  # noqa: N802 (Twisted's name)
        raise NotImplementedError

    def getHost(self) -> Any:  # noqa: N802 (Twisted's name)
        raise NotImplementedError


def _startup_variables(env: dict[str, str]) -> dict[str, str]:
    """The variables Python reads as it starts (PYTHONHASHSEED, say)."""
    return {name: value for name, value in env.items() if name.startswith("PYTHON")}


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _umask() -> int:
    """The node's umask, without setting it (threads may create files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
