"""End to end, as a new user: the README's two install paths, followed line by line.

The repository's wheel is built once, installed into fresh virtual environments
(Scrapy and Scrapyd come from PyPI), and a project the user makes with
``scrapy startproject crawler`` gets job status from the README's settings
lines alone; then the same project is deployed with ``scrapyd-deploy`` to a
Scrapyd node configured with the README's ``scrapyd.conf`` block alone.

The install lines, the settings lines and the ``scrapyd.conf`` block are read
from README.md, so a README change that breaks users breaks these tests.

Slow (a wheel build, two virtual environments, pip from PyPI: about a minute)
but part of the default run; without PyPI they fail, they never skip.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.helpers import ROOT, wait_for
from tests.scrapyd_node import ScrapydNode

# "slow" is not registered in pyproject.toml (not this file's to change), and
# the unknown-mark warning is an error there: silence it for this mark alone so
# that `-m "not slow"` can still leave these tests out of a quick local run.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.slow

# The user's project is named like the repository's own Scrapy project on
# purpose: nothing installed by the wheel may shadow it.
PROJECT = "crawler"
SPIDER = "pages"
# The sample site's pages the user's spider fetches, one item each.
PAGES = ("", "apple", "banana", "cherry")
STAGE = "fetch"
SPIDER_SOURCE = f'''\
"""A user's spider: a few pages of a site, one item per page."""

import scrapy
from scrapy_jobstatus import set_stage


class PagesSpider(scrapy.Spider):
    name = "{SPIDER}"

    def __init__(self, site="", **kwargs):
        super().__init__(**kwargs)
        self.site = site

    async def start(self):
        set_stage(self, "{STAGE}")
        for page in {PAGES!r}:
            yield scrapy.Request(f"{{self.site}}/sample/{{page}}")

    def parse(self, response):
        yield {{"url": response.url, "title": response.css("title::text").get()}}
'''
TERMINAL = ("completed", "failed", "cancelled")


# -- the README -----------------------------------------------------------------


def readme_blocks(heading: str) -> list[tuple[str, str]]:
    """The fenced blocks (language, text) under a README heading, up to the
    next heading of any level (a ``#`` line inside a block is no heading)."""
    lines = (ROOT / "README.md").read_text().splitlines(keepends=True)
    assert heading + "\n" in lines, f"README.md has no {heading!r} heading"
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    body: list[str] = []
    for line in lines[lines.index(heading + "\n") + 1 :]:
        if fence is None and line.startswith("#"):
            break
        if line.startswith("```"):
            if fence is None:
                fence, body = line[3:].strip(), []
            else:
                blocks.append((fence, "".join(body)))
                fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def only_block(blocks: list[tuple[str, str]], language: str) -> str:
    found = [text for lang, text in blocks if lang == language]
    assert len(found) == 1, f"expected one ```{language} block, found {len(found)}"
    return found[0]


def pip_requirement(blocks: list[tuple[str, str]]) -> Requirement:
    """What the README's ``pip install X`` line installs."""
    commands = [shlex.split(line) for line in only_block(blocks, "bash").splitlines()]
    installs = [c for c in commands if c[:2] == ["pip", "install"]]
    assert len(installs) == 1 and len(installs[0]) == 3, installs
    return Requirement(installs[0][2])


def project_install() -> list[tuple[str, str]]:
    return readme_blocks("## Install")


def node_install() -> list[tuple[str, str]]:
    return readme_blocks("### On a Scrapyd node")


# -- virtual environments -------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment, used as a user's activated one."""

    path: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        # A plain venv of the base interpreter: the test venv (and the
        # repository installed in it, editable) must not leak in.
        result = subprocess.run(  # noqa: S603 (the venv module)
            [sys.executable, "-m", "venv", str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return cls(path)

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def env(self) -> dict[str, str]:
        # Nothing of the test run's Python or Scrapy set-up reaches the user.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "SCRAPY", "VIRTUAL_ENV"))
        }
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.path)
        return env

    def run(
        self, program: str, *args: str, cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(  # noqa: S603 (the venv's own commands)
                [str(self.bin(program)), *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env,
            )
        except subprocess.TimeoutExpired as exc:
            # A hung command fails the test with what it logged (it is killed).
            logged = exc.stderr or b""
            if isinstance(logged, bytes):
                logged = logged.decode(errors="replace")
            command = " ".join([program, *args])
            message = f"{command}: still running after {timeout} s:\n{logged[-3000:]}"
            raise AssertionError(message) from None

    def pip(self, *args: str) -> None:
        result = self.run("python", "-m", "pip", *args, "-q", cwd=self.path, timeout=600)
        # Without PyPI this fails, it does not skip: the install is the test.
        assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stderr[-3000:]}"


def installable(wheel: Path, requirement: Requirement) -> str:
    """The README's requirement, satisfied by the wheel (extras kept)."""
    name = parse_wheel_filename(wheel.name)[0]
    assert canonicalize_name(requirement.name) == name, (requirement.name, wheel.name)
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{wheel}{extras}"


def source_files() -> list[str]:
    """The repository's files (tracked or new, not ignored), as git sees them."""
    result = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in result.stdout.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's wheel, built as pip builds it (not editable)."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the work tree: an in-tree build would leave build/
    # (whose stale files a later build packs) in the repository.
    source = work / "source"
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist")]
    result = subprocess.run(  # noqa: S603 (pip)
        [*command, str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = (work / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """A new user's venv after the README's ``pip install scrapy-jobstatus``."""
    venv = Venv.create(tmp_path_factory.mktemp("user") / "venv")
    venv.pip("install", installable(wheel, pip_requirement(project_install())))
    return venv


# -- the user's project ---------------------------------------------------------


def make_project(venv: Venv, parent: Path) -> Path:
    """``scrapy startproject crawler``, the README's settings lines, one spider."""
    parent.mkdir(parents=True, exist_ok=True)
    result = venv.run("scrapy", "startproject", PROJECT, cwd=parent)
    assert result.returncode == 0, result.stdout + result.stderr
    project = parent / PROJECT
    with open(project / PROJECT / "settings.py", "a") as settings:
        settings.write("\n" + only_block(project_install(), "python"))
    (project / PROJECT / "spiders" / f"{SPIDER}.py").write_text(SPIDER_SOURCE)
    return project


def crawl(venv: Venv, project: Path, job: str, site: str) -> subprocess.CompletedProcess[str]:
    return venv.run(
        "scrapy", "crawl", SPIDER, "-a", f"_job={job}", "-a", f"site={site}",
        "-O", f"{job}.jsonl", cwd=project, timeout=60,
    )  # fmt: skip


def assert_job_completed(venv: Venv, project: Path, job: str, site: str) -> None:
    """A crawl of the project is a job the scrapy commands report, with its counts."""
    result = crawl(venv, project, job, site)
    assert result.returncode == 0, result.stderr[-3000:]
    # The default store: no JOBSTATUS_DB anywhere.
    assert (project / ".scrapy" / "jobstatus.db").is_file()
    items = (project / f"{job}.jsonl").read_text().splitlines()
    assert len(items) == len(PAGES)

    listing = venv.run("scrapy", "jobs", cwd=project)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert [job, SPIDER, "completed"] in [row[:3] for row in rows], listing.stdout

    status = venv.run("scrapy", "jobstatus", job, "--json", cwd=project)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["job_id"] == job
    assert document["spider"] == SPIDER
    assert document["status"] == "completed", document
    assert document["completion_reason"] == "done"
    assert document["total_pages_crawled"] == len(PAGES)
    assert document["total_documents_found"] == len(items)
    assert STAGE in document["stages_completed"]


# -- the tests ------------------------------------------------------------------


def test_the_wheel_holds_the_scrapy_jobstatus_package_alone_with_all_its_files(
    wheel: Path,
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    name, version, _, _ = parse_wheel_filename(wheel.name)
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    # No top-level `extensions` (PyPI has a package of that name) nor `crawler`.
    assert {n.split("/")[0] for n in names} == {"scrapy_jobstatus", dist_info}
    # Every file of the package, the Scrapyd dashboard's static files included.
    package = "extensions/scrapy_jobstatus/"
    packaged = {n.removeprefix("extensions/") for n in source_files() if n.startswith(package)}
    missing = sorted(packaged - set(names))
    assert not missing, f"package files missing from {wheel.name}: {missing}"


def test_a_new_project_named_crawler_gets_job_status_from_the_wheel(
    user_venv: Venv, site: str, tmp_path: Path
) -> None:
    project = make_project(user_venv, tmp_path / "home")
    assert_job_completed(user_venv, project, "first-job", site)

    # The user's spiders, not the repository's batch/documents/listings.
    spiders = user_venv.run("scrapy", "list", cwd=project)
    assert spiders.returncode == 0, spiders.stderr
    assert spiders.stdout.split() == [SPIDER]


def test_pypis_unrelated_extensions_package_beside_it_breaks_nothing(
    user_venv: Venv, site: str, tmp_path: Path
) -> None:
    user_venv.pip("install", "extensions")
    try:
        # The name `extensions` is PyPI's package's now (Python 2 code: it is
        # not imported, only found), and our commands do not care.
        find = "import importlib.util; print(importlib.util.find_spec('extensions').origin)"
        where = user_venv.run("python", "-c", find, cwd=tmp_path)
        assert where.returncode == 0, where.stderr
        assert Path(where.stdout.strip()).is_relative_to(user_venv.path / "lib"), where.stdout
        project = make_project(user_venv, tmp_path / "home")
        assert_job_completed(user_venv, project, "beside-extensions", site)
    finally:
        # The module's venv is shared: leave it as the README made it.
        user_venv.pip("uninstall", "-y", "extensions")


def readme_settings() -> dict[str, str | None]:
    """Each setting of the README's table (``## Settings``) and its default
    as written there: the first code span of its cell, remarks in
    parentheses aside; None where the cell says "none". A row of several
    settings gives their defaults in the same order."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert "## Settings" in lines, "README.md has no '## Settings' heading"
    rows: list[list[str]] = []
    for line in lines[lines.index("## Settings") + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _, *body = rows
    setting, default = header.index("setting"), header.index("default")
    written: dict[str, str | None] = {}
    for row in body:
        names = re.findall(r"`(JOBSTATUS_\w+)`", row[setting])
        bare = re.sub(r"\([^)]*\)", "", row[default])
        values: list[str | None] = re.findall(r"`([^`]*)`", bare)
        if not values and bare.strip() == "none":
            values = [None]
        assert names and len(values) == len(names), f"README settings row: {row}"
        written.update(zip(names, values, strict=True))
    return written


def same_default(written: str | None, value: Any, computed: bool) -> bool:
    if computed or written is None or value is None:
        return written == value
    try:
        literal = ast.literal_eval(written)
    except (ValueError, SyntaxError):
        literal = written  # a word: warn
    return isinstance(literal, bool) == isinstance(value, bool) and literal == value


def test_the_readmes_settings_table_gives_each_default_of_the_installed_package(
    user_venv: Venv, tmp_path: Path
) -> None:
    table = (
        "import json; from scrapy_jobstatus._defaults import DEFAULTS, Computed; "
        "print(json.dumps({k: [v, isinstance(v, Computed)] for k, v in DEFAULTS.items()}))"
    )
    result = user_venv.run("python", "-c", table, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    installed = json.loads(result.stdout)
    written = readme_settings()
    # Every setting of the package is documented, and no other.
    assert sorted(written) == sorted(installed)
    wrong = {
        name: (text, installed[name][0])
        for name, text in written.items()
        if not same_default(text, *installed[name])
    }
    assert not wrong, f"README default != the package's: {wrong}"


def test_scrapy_jobs_outside_a_project_says_so_in_one_line_and_creates_nothing(
    user_venv: Venv, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-a-project"
    elsewhere.mkdir()
    result = user_venv.run("scrapy", "jobs", cwd=elsewhere)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "not inside a Scrapy project" in lines[0], result.stderr
    assert result.stdout == ""
    assert list(elsewhere.iterdir()) == []  # in particular no .scrapy/


def test_a_spider_using_the_progress_api_imports_without_scrapyd_or_the_store(
    user_venv: Venv, tmp_path: Path
) -> None:
    no_scrapyd = user_venv.run("python", "-c", "import scrapyd", cwd=tmp_path)
    assert no_scrapyd.returncode != 0
    assert "No module named 'scrapyd'" in no_scrapyd.stderr, no_scrapyd.stderr

    project = make_project(user_venv, tmp_path / "home")
    probe = (
        "import json, sys, scrapy_jobstatus\n"
        f"import {PROJECT}.spiders.{SPIDER} as spider\n"
        "print(json.dumps({'spider': spider.__file__, 'library': scrapy_jobstatus.__file__,\n"
        "    'modules': sorted(sys.modules)}))\n"
    )
    result = user_venv.run("python", "-c", probe, cwd=project)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert Path(loaded["spider"]).is_relative_to(project)
    # The wheel's copy, not the repository's.
    assert Path(loaded["library"]).is_relative_to(user_venv.path), loaded["library"]
    modules = set(loaded["modules"])
    assert "scrapy_jobstatus._store" not in modules
    assert "sqlite3" not in modules
    assert not {m for m in modules if m.split(".")[0] == "scrapyd"}


class ReadmeNode(ScrapydNode):
    """``scrapyd`` of ``venv`` in ``workdir``, whose scrapyd.conf is the
    README's block with only the node's port and loopback address added."""

    def __init__(self, workdir: Path, venv: Venv, conf: str):
        super().__init__(workdir)  # the port, the log; its config is replaced below
        self.venv = venv
        assert conf.count("[scrapyd]\n") == 1, conf
        conf = conf.replace(
            "[scrapyd]\n", f"[scrapyd]\nhttp_port = {self.port}\nbind_address = 127.0.0.1\n"
        )
        configparser.ConfigParser().read_string(conf)  # what Scrapyd reads must parse
        (workdir / "scrapyd.conf").write_text(conf)

    def start(self) -> ReadmeNode:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (the venv's scrapyd)
                [str(self.venv.bin("scrapyd"))],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.venv.env,
            )
        wait_for(self._up, timeout=30, interval=0.1, what=f"scrapyd on port {self.port}")
        return self


@pytest.fixture
def node(tmp_path: Path, wheel: Path) -> Iterator[ReadmeNode]:
    """A node after the README's ``pip install 'scrapy-jobstatus[scrapyd]'``,
    with the deploy tools a user has (scrapyd-deploy builds eggs with
    setuptools' pkg_resources, gone in 81)."""
    venv = Venv.create(tmp_path / "node-venv")
    requirement = pip_requirement(node_install())
    assert requirement.extras == {"scrapyd"}, requirement
    venv.pip("install", installable(wheel, requirement), "scrapyd-client", "setuptools>=77,<81")
    node = ReadmeNode(tmp_path / "node", venv, only_block(node_install(), "ini"))
    try:
        yield node  # started by the test: that it starts is part of what it proves
    finally:
        node.stop()


def test_the_users_project_deployed_with_scrapyd_deploy_runs_on_a_scrapyd_node(
    node: ReadmeNode, site: str, tmp_path: Path
) -> None:
    node.start()
    project = make_project(node.venv, tmp_path / "home")
    cfg = configparser.ConfigParser()
    cfg.read(project / "scrapy.cfg")
    cfg["deploy"]["url"] = f"http://127.0.0.1:{node.port}"
    with open(project / "scrapy.cfg", "w") as f:
        cfg.write(f)
    deployed = node.venv.run("scrapyd-deploy", cwd=project, timeout=180)
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    answer = json.loads(deployed.stdout)
    assert answer["status"] == "ok", answer
    assert answer["project"] == PROJECT and answer["spiders"] == 1, answer

    # Any id Scrapyd accepts: a colon and a space on purpose.
    job = "2026-11-29T16:39:20 nightly"
    scheduled = node.schedule(SPIDER, job=job, site=site)
    assert scheduled.code == 200, scheduled.body
    assert scheduled.json()["status"] == "ok", scheduled.json()
    assert scheduled.json()["jobid"] == job

    document = node.wait_status(job, *TERMINAL, timeout=90)
    assert document["status"] == "completed", document
    assert document["project"] == PROJECT
    assert document["spider"] == SPIDER
    assert document["total_pages_crawled"] == len(PAGES)
    assert document["total_documents_found"] == len(PAGES)
    assert STAGE in document["stages_completed"]
    # The README's [jobstatus] db, relative to the node's directory.
    assert (node.workdir / "dbs" / "jobstatus.sqlite3").is_file()

    listed = node.get("jobs.json", {"project": PROJECT})
    assert listed.code == 200, listed.body
    assert [(j["job_id"], j["status"]) for j in listed.json()["jobs"]] == [(job, "completed")]

    # Scrapyd's own view: the crawl process ended (just after its final status).
    def finished() -> bool:
        return job in [j["id"] for j in node.get("listjobs.json").json()["finished"]]

    wait_for(finished, timeout=30, interval=0.1, what=f"Scrapyd to list {job!r} as finished")
