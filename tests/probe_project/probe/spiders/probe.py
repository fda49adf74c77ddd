"""The probe: one page, then a line of JSON appended to ``out`` saying what
the crawl's process looks like; ``mutate=1`` changes the process-wide state
afterwards (environment, sys.path, logging, a signal handler), as a careless
spider would."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sys
import threading
from typing import Any

import scrapy

import probe

MARK = "PROBE_DIRTY"


class ProbeSpider(scrapy.Spider):
    name = "probe"

    def __init__(self, out: str, url: str = "data:,probe", mutate: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.job = kwargs.get("_job")
        self.out = out
        self.url = url
        self.mutate = mutate == "1"
        self.version_at_start = probe.VERSION

    async def start(self):  # type: ignore[override]
        yield scrapy.Request(self.url, dont_filter=True)

    def parse(self, response: scrapy.http.Response) -> Any:
        report = self.report()
        with open(self.out, "a") as f:
            f.write(json.dumps(report) + "\n")
        if self.mutate:
            os.environ[MARK] = "1"
            sys.path.append("/probe-dirty")
            logging.getLogger().addHandler(logging.NullHandler())
            logging.getLogger("probe.dirty").setLevel(logging.CRITICAL)
            signal.signal(signal.SIGUSR1, lambda *_: None)
        yield {"job": report["job"], "version": report["version"]}

    def report(self) -> dict[str, Any]:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        descriptors = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # the listing's own descriptor
            descriptors[fd] = target.split(":")[0] if ":" in target else "file"
        umask = os.umask(0)
        os.umask(umask)
        reactor = sys.modules.get("twisted.internet.reactor")
        try:
            loop = type(asyncio.get_running_loop()).__name__
        except RuntimeError:
            loop = None
        return {
            "job": self.job,
            "pid": os.getpid(),
            "ppid": int(fields[1]),
            "pgrp": int(fields[2]),
            "sid": int(fields[3]),
            "cwd": os.getcwd(),
            "umask": umask,
            "argv": sys.argv,
            "env": {
                name: value
                for name, value in os.environ.items()
                if name.startswith(("SCRAPY", "JOBSTATUS"))
            },
            "dirty_env": MARK in os.environ,
            "dirty_path": "/probe-dirty" in sys.path,
            "root_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
            "dirty_logger_level": logging.getLogger("probe.dirty").level,
            "sigusr1_default": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
            "sigint_python": signal.getsignal(signal.SIGINT) is not signal.SIG_IGN,
            "descriptors": sorted(descriptors.values()),
            "threads": sorted(t.name for t in threading.enumerate()),
            "random": random.random(),  # noqa: S311 (a seed, not a secret)
            "version": probe.VERSION,
            "version_at_start": self.version_at_start,
            "reactor": type(reactor).__name__ if reactor is not None else None,
            "loop": loop,
        }
