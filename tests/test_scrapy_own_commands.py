"""Scrapy's own commands in a project with the add-on, as a user runs them:
shell, fetch, view, parse and check make no job; bench is a crawl, and its
job ends like any other. The project is made by ``scrapy startproject``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import scrapy as scrapy_package
from packaging.version import Version

from tests.helpers import ROOT, machine_lock

PROJECT = "inspected"
SPIDER_SOURCE = '''\
import scrapy


class PagesSpider(scrapy.Spider):
    name = "pages"

    async def start(self):
        yield scrapy.Request("{site}/sample/")

    def parse(self, response):
        """The sample site's index: one item, its title.

        @url {site}/sample/
        @returns items 1 1
        @scrapes title
        """
        yield {{"title": response.css("title::text").get()}}
'''
TITLE = "Fruit index"
# The crawl every test finds in the store, alone but for bench's.
FIRST_JOB = "first"
# Scrapy's two modes: a Twisted reactor (asyncio's), or none (from Scrapy 2.15).
MODES = {"asyncio": [], "reactorless": ["-s", "TWISTED_REACTOR_ENABLED=False"]}


def scrapy(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 90):
    try:
        return subprocess.run(
            [sys.executable, "-m", "scrapy", *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=timeout,
            # The test resolver (no DNS query leaves the machine) from the repository.
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"scrapy {' '.join(args)}: still running after {timeout} s") from exc


def jobs(project: Path) -> list[dict[str, Any]]:
    result = scrapy(project, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["jobs"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, site: str) -> Path:
    """A new project with the add-on, and one crawl done: its store exists."""
    parent = tmp_path_factory.mktemp("project")
    made = subprocess.run(
        [sys.executable, "-m", "scrapy", "startproject", PROJECT],
        cwd=parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    project = parent / PROJECT
    with open(project / PROJECT / "settings.py", "a") as settings:
        settings.write(
            '\nADDONS = {"scrapy_jobstatus.Addon": 100}\n'
            'TWISTED_DNS_RESOLVER = "tests.resolver.LoopbackResolver"\n'
            "ROBOTSTXT_OBEY = False\n"
        )
    (project / PROJECT / "spiders" / "pages.py").write_text(SPIDER_SOURCE.format(site=site))
    crawl = scrapy(project, "crawl", "pages", "-a", f"_job={FIRST_JOB}")
    assert crawl.returncode == 0, crawl.stderr[-3000:]
    assert [(j["job_id"], j["status"]) for j in jobs(project)] == [(FIRST_JOB, "completed")]
    return project


def view_page(result: subprocess.CompletedProcess[str]) -> str:
    """The page ``scrapy view`` gave the browser (``BROWSER=echo`` prints its
    file URL)."""
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("file://"), result.stdout
    return Path(unquote(urlsplit(url).path)).read_text()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    ("command", "args", "env"),
    [
        ("shell", ["-c", "response.css('title::text').get()", "{site}/sample/"], {}),
        ("fetch", ["--nolog", "{site}/sample/"], {}),
        ("view", ["--nolog", "{site}/sample/"], {"BROWSER": "echo"}),
        ("parse", ["--nolog", "--spider", "pages", "-c", "parse", "{site}/sample/"], {}),
        ("check", ["pages"], {}),
    ],
)
def test_scrapys_inspecting_commands_crawl_and_make_no_job(
    project: Path, site: str, command: str, args: list[str], env: dict[str, str], mode: str
) -> None:
    if mode == "reactorless" and Version(scrapy_package.__version__) < Version("2.15"):
        pytest.skip(f"Scrapy {scrapy_package.__version__} has no reactorless mode")
    args = [*MODES[mode], *[arg.format(site=site) for arg in args]]
    # The page view writes for the browser stays in the test's directory.
    result = scrapy(project, command, *args, env={**env, "TMPDIR": str(project.parent)})
    assert result.returncode == 0, result.stderr[-3000:]
    # Each did crawl the page, with the add-on loaded.
    if command == "view":
        assert TITLE in view_page(result)
    elif command == "check":
        assert "Ran 2 contracts" in result.stderr and "OK" in result.stderr, result.stderr
    else:
        assert TITLE in result.stdout, result.stdout + result.stderr[-3000:]
    # No job was made, running or otherwise.
    assert [(j["job_id"], j["status"]) for j in jobs(project)] == [(FIRST_JOB, "completed")]


def test_scrapy_bench_is_a_job_that_ends_completed(project: Path) -> None:
    # Bench's server listens on a fixed port (8998): one bench at a time.
    with machine_lock("scrapy-bench"):
        result = scrapy(project, "bench", "-s", "CLOSESPIDER_TIMEOUT=2", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    (bench,) = [j for j in jobs(project) if j["job_id"] != FIRST_JOB]
    assert bench["spider"] == "follow"
    assert (bench["status"], bench["is_active"]) == ("completed", False)
    # Bench stops itself at its CLOSESPIDER_TIMEOUT: a timeout, partial results.
    assert (bench["completion_reason"], bench["close_reason"]) == ("timeout", "closespider_timeout")
    assert bench["total_pages_crawled"] > 0
