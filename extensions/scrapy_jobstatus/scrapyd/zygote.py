"""The zygote of a Scrapyd node's warm starts: a process started fresh by
the launcher (``python -m scrapy_jobstatus.scrapyd.zygote``), which imports
Scrapy, Twisted (no reactor installed), this library and what Scrapyd's
runner needs, and nothing of any project; each crawl is forked from it.

It talks to the launcher over the Unix socket it gets as descriptor 3, one
JSON object a line:

- it says ``{"ready": pid, "files": [...]}`` once its imports are done (the
  files whose change means a newer Scrapy or library is installed);
- ``{"spawn": {...}}`` with the crawl's stdin, stdout, stderr and a "go"
  pipe attached (``socket.send_fds``): it forks, answers ``{"pid": pid}`` (or
  ``{"error": "..."}``); the crawl waits for the launcher's go before it runs
  anything, so a crawl whose pid the launcher never learnt never runs;
- ``{"exit": pid, "status": status}``: a crawl ended (the zygote is its
  parent and reaps it), with the status of ``os.waitpid``;
- ``{"retire": true}``: no more crawls; it exits once the last has ended.

It exits when the launcher closes the socket. As Gunicorn's ``preload_app``,
``multiprocessing``'s forkserver and Chromium's zygote, it never starts a
thread, a reactor, an event loop or a connection before it forks: a crawl
inherits none, and every descriptor but its own three is closed in it.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import json
import os
import pkgutil
import random
import runpy
import selectors
import signal
import socket
import sys
import traceback
import warnings
from typing import Any

# The descriptor of the launcher's socket in the zygote.
CONTROL_FD = 3
# Descriptors received with a spawn request: stdin, stdout, stderr, go.
SPAWN_FDS = 4
MAX_MESSAGE = 1 << 20
# What the crawls of every project import: Scrapy's default components, its
# crawl command, Scrapyd's runner and this library's crawl side.
PRELOAD = (
    "scrapy",
    "scrapy.cmdline",
    "scrapy.crawler",
    "scrapy.commands.crawl",
    "scrapy.http",
    "scrapy.selector",
    "scrapy.utils.project",
    "scrapy.utils.reactor",
    "twisted.internet.defer",
    "twisted.internet.protocol",
    "twisted.internet.asyncioreactor",
    "pkg_resources",
    "scrapyd.config",
    "scrapyd.utils",
    "scrapyd.eggstorage",
    "scrapy_jobstatus",
    "scrapy_jobstatus._addon",
    "scrapy_jobstatus._extension",
    "scrapy_jobstatus._sqlite",
    "scrapy_jobstatus.scrapyd.storage",
)
# Modules whose files, changed on disk, mean the zygote is older than what
# is installed.
WATCHED = ("scrapy", "twisted", "scrapyd", "scrapy_jobstatus")
# The signals a fresh Python ignores (it ignores SIGPIPE and SIGXFSZ).
_FRESH_IGNORED = {signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE)}


def preload() -> None:
    # pkg_resources warns when imported: the crawls print it themselves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOAD:
            importlib.import_module(name)
        for name in _default_component_modules() | _command_modules():
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # an optional dependency (boto3, say) is missing
        # Scrapy's command line loads every command, the installed ones
        # from their entry points: read once, here.
        for entry_point in importlib.metadata.entry_points(group="scrapy.commands"):
            try:
                entry_point.load()
            except Exception:  # noqa: BLE001, S112 (the crawl reports its own)
                continue
    if "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("a reactor was installed while preloading")


def _default_component_modules() -> set[str]:
    """The modules of the components Scrapy's default settings name."""
    from scrapy.settings import default_settings

    modules = set()
    for name in dir(default_settings):
        value = getattr(default_settings, name)
        paths = [*value.keys(), *value.values()] if isinstance(value, dict) else [value]
        for path in paths:
            if isinstance(path, str) and path.startswith("scrapy."):
                modules.add(path.rpartition(".")[0])
    return modules


def _command_modules() -> set[str]:
    """The modules of Scrapy's commands, which its command line loads."""
    import scrapy.commands

    return {
        module.name for module in pkgutil.iter_modules(scrapy.commands.__path__, "scrapy.commands.")
    }


def watched_files() -> list[str]:
    files = []
    for name in WATCHED:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            files.append(path)
    return files


class Zygote:
    def __init__(self, control: socket.socket):
        self.control = control
        self.children: set[int] = set()
        self.retiring = False
        self.buffer = b""
        # Descriptors received and not yet taken by their request.
        self.fds: list[int] = []
        self.selector = selectors.DefaultSelector()
        wakeup_read, self.wakeup_write = os.pipe()
        self.wakeup_read = wakeup_read
        os.set_blocking(wakeup_read, False)
        os.set_blocking(self.wakeup_write, False)

    def send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode() + b"\n")

    def run(self) -> None:
        signal.set_wakeup_fd(self.wakeup_write)
        # Python runs a handler only if one is set; the wakeup byte is what
        # tells the loop to reap.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.control, selectors.EVENT_READ)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        self.send({"ready": os.getpid(), "files": watched_files()})
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    if not self.read_requests():
                        return
                else:
                    try:
                        os.read(self.wakeup_read, 4096)
                    except BlockingIOError:
                        pass
            self.reap()
            if self.retiring and not self.children:
                return

    def read_requests(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.control, 65536, SPAWN_FDS * 4)
        self.fds += fds
        if not data:
            for fd in self.fds:
                os.close(fd)
            return False
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            request = json.loads(line)
            if "spawn" in request:
                mine, self.fds = self.fds[:SPAWN_FDS], self.fds[SPAWN_FDS:]
                self.spawn(request["spawn"], mine)
            elif request.get("retire"):
                self.retiring = True
        if len(self.buffer) > MAX_MESSAGE:
            raise RuntimeError("a request too long")
        return True

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        if self.retiring or len(fds) != SPAWN_FDS:
            for fd in fds:
                os.close(fd)
            self.send({"error": "retiring" if self.retiring else "descriptors missing"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            self.send({"error": str(e)})
            return
        if pid == 0:
            self.forget()
            run_crawl(request, fds)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self.send({"pid": pid})

    def forget(self) -> None:
        """In a crawl: drop the zygote's objects holding descriptors, which
        the crawl closes, so that their finalizers never close a descriptor
        the crawl has opened since under the same number."""
        self.selector.close()
        self.control.detach()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "status": status})


def run_crawl(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked crawl: become the process a cold start would be, wait
    for the launcher's go, then run Scrapyd's runner as ``python -m`` does.
    It never returns: the crawl exits as Python does (``SystemExit`` unwinds
    the zygote's frames, then threads, atexit and the modules' teardown)."""
    try:
        stdin, stdout, stderr, go = fds
        signal.set_wakeup_fd(-1)
        _reset_signals()
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        if os.read(go, 1) != b"1":
            os._exit(0)  # the launcher never learnt this pid: not started
        # Nothing of the zygote's: its socket, its pipes, these fds.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        random.seed()
        gc.enable()
    except BaseException:  # noqa: BLE001 (the child must exit, never go back)
        traceback.print_exc()
        os._exit(1)
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


def _reset_signals() -> None:
    for signum in range(1, signal.NSIG):
        try:
            if signum == signal.SIGINT:
                signal.signal(signum, signal.default_int_handler)
            elif signum in _FRESH_IGNORED:
                signal.signal(signum, signal.SIG_IGN)
            elif signal.getsignal(signum) not in (None, signal.SIG_DFL):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP and the ones Python cannot set
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def main() -> None:
    # The node's stop (and a terminal's Ctrl-C) is the launcher's and the
    # crawls' business: the zygote lives on to report its crawls' exits,
    # and ends when the launcher closes its socket.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    control = socket.socket(fileno=CONTROL_FD)
    control.setblocking(True)
    try:
        preload()
    except BaseException as e:  # noqa: BLE001 (reported, then exit)
        print(f"The zygote could not start: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    # The imported objects are never collected: a crawl's collections do
    # not touch (and copy) the pages it shares with the zygote.
    gc.disable()
    gc.freeze()
    zygote = os.getpid()
    try:
        Zygote(control).run()
    except (BrokenPipeError, ConnectionResetError):
        if os.getpid() != zygote:
            raise  # a crawl's own, unwinding
        # the launcher has gone


if __name__ == "__main__":
    main()
