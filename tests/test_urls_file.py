"""The batch spider's ``urls_file``: on a Scrapyd node only a regular file
under the project's ``URLS_DIR``, at most ``URLS_FILE_MAX`` bytes, and no
error quotes the file. Unit tests of the rules, real ``scrapy crawl``
processes, and a real Scrapyd node."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scrapy.settings import Settings

from crawler.arguments import SpiderArgumentError
from crawler.urls_file import URLS_FILE_MAX, UrlsFilePolicy, on_scrapyd_node, parse_urls_file
from tests.scrapyd_node import PROJECT, ScrapydNode, unique
from tests.spider_jobs import run_job

SYSTEM_FILE = "/etc/passwd"
# What no answer, document or log may show of a file the client named.
ROOT_ENTRY = "root:x:0:0"
# The content of a file with a bad line: never shown either.
MARKER = "not-a-url-7f3a9c"
SYSTEM_LIKE = f"{ROOT_ENTRY}:root:/root:/bin/bash\n".encode()


def refusal(call: Any) -> str:
    with pytest.raises(SpiderArgumentError) as caught:
        call()
    return str(caught.value)


@pytest.fixture
def urls_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "urls"
    directory.mkdir()
    return directory


def node_policy(directory: Path | None, max_bytes: int = URLS_FILE_MAX) -> UrlsFilePolicy:
    return UrlsFilePolicy(directory=directory, max_bytes=max_bytes, on_node=True)


# -- the rules, without a crawl ----------------------------------------------------


def test_a_file_under_urls_dir_is_read_by_its_name_or_full_path(urls_dir: Path) -> None:
    (urls_dir / "sub").mkdir()
    (urls_dir / "sub" / "a.txt").write_text("http://127.0.0.1/a\n\nhttps://127.0.0.1/b\n")
    policy = node_policy(urls_dir)
    assert policy.read("sub/a.txt") == policy.read(str(urls_dir / "sub" / "a.txt"))
    assert parse_urls_file(policy.read("sub/a.txt")) == [
        "http://127.0.0.1/a",
        "https://127.0.0.1/b",
    ]


@pytest.mark.parametrize(
    "name", [SYSTEM_FILE, "../../../../../../etc/passwd", "sub/../../outside.txt"]
)
def test_a_file_outside_urls_dir_is_refused_whether_it_exists_or_not(
    urls_dir: Path, name: str
) -> None:
    (urls_dir.parent / "outside.txt").write_text("http://127.0.0.1/\n")
    message = refusal(lambda: node_policy(urls_dir).read(name))
    assert message == f"urls_file: {name!r} is not a file in URLS_DIR"


def test_a_symlink_out_of_urls_dir_is_refused(urls_dir: Path) -> None:
    (urls_dir / "link.txt").symlink_to(SYSTEM_FILE)
    (urls_dir / "dir-link").symlink_to("/etc")
    policy = node_policy(urls_dir)
    assert "is not a file in URLS_DIR" in refusal(lambda: policy.read("link.txt"))
    assert "is not a file in URLS_DIR" in refusal(lambda: policy.read("dir-link/passwd"))


def test_a_symlink_within_urls_dir_is_followed(urls_dir: Path) -> None:
    (urls_dir / "real.txt").write_text("http://127.0.0.1/\n")
    (urls_dir / "alias.txt").symlink_to(urls_dir / "real.txt")
    assert node_policy(urls_dir).read("alias.txt") == b"http://127.0.0.1/\n"


def test_only_regular_files_are_read(urls_dir: Path) -> None:
    os.mkfifo(urls_dir / "fifo")
    (urls_dir / "dir").mkdir()
    policy = node_policy(urls_dir)
    # A FIFO without a writer: refused at once, not waited on.
    assert refusal(lambda: policy.read("fifo")) == "urls_file: 'fifo' is not a regular file"
    assert refusal(lambda: policy.read("dir")) == "urls_file: 'dir' is not a regular file"
    anywhere = UrlsFilePolicy(directory=None)
    assert refusal(lambda: anywhere.read("/dev/zero")) == (
        "urls_file: '/dev/zero' is not a regular file"
    )
    assert "is not a file in URLS_DIR" in refusal(lambda: policy.read(""))


def test_a_file_above_urls_file_max_is_refused(urls_dir: Path) -> None:
    (urls_dir / "big.txt").write_text("http://127.0.0.1/\n" * 10)  # 180 bytes
    assert node_policy(urls_dir, max_bytes=180).read("big.txt")
    assert refusal(lambda: node_policy(urls_dir, max_bytes=179).read("big.txt")) == (
        "urls_file: 'big.txt' is larger than URLS_FILE_MAX (179 bytes)"
    )


def test_a_bad_line_is_named_by_its_number_never_quoted() -> None:
    data = f"http://127.0.0.1/a\n\n{MARKER}\n".encode()
    assert refusal(lambda: parse_urls_file(data)) == "urls_file: line 3 is not an http(s) URL"
    assert refusal(lambda: parse_urls_file(b"http://127.0.0.1/\n\xff\xfe\n")) == (
        "urls_file: line 2 is not UTF-8 text"
    )
    assert refusal(lambda: parse_urls_file(b"http://[::1\n")) == (
        "urls_file: line 1 is not an http(s) URL"
    )
    assert refusal(lambda: parse_urls_file(SYSTEM_LIKE)) == (
        "urls_file: line 1 is not an http(s) URL"
    )


def test_the_settings_on_a_node_come_from_the_project(urls_dir: Path) -> None:
    project = Settings({"URLS_DIR": str(urls_dir), "URLS_FILE_MAX": "1000"}, priority="project")
    policy = UrlsFilePolicy.from_settings(project, on_node=True)
    assert policy == UrlsFilePolicy(urls_dir, 1000, on_node=True)
    for name, value in (("URLS_DIR", "/"), ("URLS_FILE_MAX", "10000000000")):
        settings = project.copy()
        settings.set(name, value, priority="cmdline")  # a job's setting=
        assert refusal(lambda settings=settings: UrlsFilePolicy.from_settings(settings, True)) == (
            f"urls_file: {name} is the project's setting; a job on a Scrapyd node cannot set it"
        )
    # Off a node the command line is the user's own.
    settings = project.copy()
    settings.set("URLS_FILE_MAX", "5", priority="cmdline")
    assert UrlsFilePolicy.from_settings(settings, on_node=False).max_bytes == 5


def test_without_urls_dir_a_node_reads_no_file_and_a_plain_crawl_any() -> None:
    assert "URLS_DIR" in refusal(lambda: UrlsFilePolicy.from_settings(Settings(), on_node=True))
    assert UrlsFilePolicy.from_settings(Settings(), on_node=False) == UrlsFilePolicy(None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "urls_file: URLS_FILE_MAX must be a number of bytes, not 'lots'"),
        ("0", "urls_file: URLS_FILE_MAX must be at least 1, got 0"),
    ],
)
def test_a_bad_urls_file_max_is_named(value: str, message: str) -> None:
    settings = Settings({"URLS_FILE_MAX": value})
    assert refusal(lambda: UrlsFilePolicy.from_settings(settings, on_node=False)) == message


def test_a_node_is_known_by_the_project_scrapyd_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRAPY_PROJECT", raising=False)
    assert not on_scrapyd_node()
    monkeypatch.setenv("SCRAPY_PROJECT", "crawler")
    assert on_scrapyd_node()


# -- plain crawls -------------------------------------------------------------------


def test_a_plain_crawl_reads_the_users_file_and_never_quotes_it(tmp_path: Path) -> None:
    job = run_job(tmp_path, "batch", {"urls_file": SYSTEM_FILE})
    assert job.doc["status"] == "failed"
    assert job.doc["error_message"] == "urls_file: line 1 is not an http(s) URL"
    assert ROOT_ENTRY not in json.dumps(job.doc) and ROOT_ENTRY not in job.log


def test_a_plain_crawl_refuses_dev_zero_at_once(tmp_path: Path) -> None:
    job = run_job(tmp_path, "batch", {"urls_file": "/dev/zero"}, timeout=60)
    assert job.doc["status"] == "failed"
    assert job.doc["error_message"] == "urls_file: '/dev/zero' is not a regular file"


def test_a_plain_crawl_with_urls_dir_keeps_to_it(tmp_path: Path, site: str) -> None:
    urls_dir = tmp_path / "urls"
    urls_dir.mkdir()
    (urls_dir / "ok.txt").write_text(f"{site}/sample/apple\n")
    settings = {"URLS_DIR": str(urls_dir)}
    job = run_job(tmp_path, "batch", {"urls_file": "ok.txt"}, settings, job_id="inside")
    assert job.doc["status"] == "completed" and len(job.items) == 1
    job = run_job(tmp_path, "batch", {"urls_file": "../../x"}, settings, job_id="outside")
    assert job.doc["error_message"] == "urls_file: '../../x' is not a file in URLS_DIR"


# -- a Scrapyd node ------------------------------------------------------------------

NODE_MAX = 2000
NO_URLS_DIR, WITH_URLS_DIR = "1", "2"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    """A node with two versions of the project: one whose settings name a
    URLS_DIR (and a small URLS_FILE_MAX), one without URLS_DIR."""
    workdir = tmp_path_factory.mktemp("scrapyd-urls-file")
    (workdir / "urls").mkdir()
    node = ScrapydNode(workdir, options={"poll_interval": "0.2"})
    try:
        node.start()
        node.deploy(version=NO_URLS_DIR)
        node.deploy(
            version=WITH_URLS_DIR,
            settings={"URLS_DIR": str(workdir / "urls"), "URLS_FILE_MAX": NODE_MAX},
        )
        yield node
    finally:
        node.stop()


def node_job(node: ScrapydNode, urls_file: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    job = unique("urls-file")
    kwargs.setdefault("_version", WITH_URLS_DIR)
    answer = node.schedule(job=job, urls_file=urls_file, **kwargs)
    assert answer.code == 200 and answer.json()["status"] == "ok", answer.body
    return job, node.wait_status(job, "completed", "failed")


def everything_shown(node: ScrapydNode, job: str) -> str:
    """Every answer and log that could show the job's file."""
    answers = [
        node.get("jobstatus.json", {"job": job}),
        node.get("jobs.json", {"project": PROJECT}),
        node.get("events.json", {"since": 0, "job": job, "limit": 1000}),
        node.get("webhooks.json", {"job": job}),
        node.get("listjobs.json", {"project": PROJECT}),
        node.get("metrics"),
    ]
    logs = [node.log.read_text()]
    crawl_log = node.workdir / "logs" / PROJECT / "batch" / f"{job}.log"
    logs.append(crawl_log.read_text() if crawl_log.exists() else "")
    return "\n".join([*(a.body.decode() for a in answers), *logs])


def test_a_node_reads_a_file_in_its_urls_dir(node: ScrapydNode, site: str) -> None:
    (node.workdir / "urls" / "good.txt").write_text(f"{site}/sample/apple\n{site}/sample/fig\n")
    job, doc = node_job(node, "good.txt")
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["total_pages_crawled"] == 2 and doc["progress"] == 100


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (SYSTEM_FILE, None, "'/etc/passwd' is not a file in URLS_DIR"),
        ("../../../../../../../etc/passwd", None, "is not a file in URLS_DIR"),
        (
            "escape.txt",
            lambda d: (d / "escape.txt").symlink_to(SYSTEM_FILE),
            "not a file in URLS_DIR",
        ),
        ("fifo", lambda d: os.mkfifo(d / "fifo"), "'fifo' is not a regular file"),
        (
            "big.txt",
            lambda d: (d / "big.txt").write_text("http://127.0.0.1/\n" * 200),
            f"'big.txt' is larger than URLS_FILE_MAX ({NODE_MAX} bytes)",
        ),
        (
            "bad-line.txt",
            lambda d: (d / "bad-line.txt").write_text(f"http://127.0.0.1/\n\n{MARKER}\n"),
            "urls_file: line 3 is not an http(s) URL",
        ),
        (
            "passwd-copy.txt",
            lambda d: (d / "passwd-copy.txt").write_bytes(SYSTEM_LIKE),
            "urls_file: line 1 is not an http(s) URL",
        ),
    ],
)
def test_a_node_refuses_a_file_it_may_not_read_and_shows_none_of_it(
    node: ScrapydNode, name: str, make: Any, message: str
) -> None:
    if make is not None and not (node.workdir / "urls" / name).exists():
        make(node.workdir / "urls")
    job, doc = node_job(node, name)
    assert doc["status"] == "failed" and message in doc["error_message"], doc["error_message"]
    assert doc["error_message"].startswith("urls_file: ")
    assert doc["total_pages_crawled"] == 0
    shown = everything_shown(node, job)
    assert ROOT_ENTRY not in shown and MARKER not in shown


def test_a_job_cannot_set_urls_dir_on_a_node(node: ScrapydNode) -> None:
    job, doc = node_job(node, SYSTEM_FILE, settings={"URLS_DIR": "/etc"})
    assert doc["status"] == "failed"
    assert doc["error_message"] == (
        "urls_file: URLS_DIR is the project's setting; a job on a Scrapyd node cannot set it"
    )
    assert ROOT_ENTRY not in everything_shown(node, job)


def test_a_project_without_urls_dir_reads_no_file_on_a_node(node: ScrapydNode, site: str) -> None:
    (node.workdir / "urls" / "good.txt").write_text(f"{site}/sample/apple\n")
    job, doc = node_job(node, str(node.workdir / "urls" / "good.txt"), _version=NO_URLS_DIR)
    assert doc["status"] == "failed"
    assert "URLS_DIR" in doc["error_message"] and "Scrapyd node" in doc["error_message"]
    # The urls argument is unaffected.
    job = unique("urls")
    node.schedule(job=job, urls=f"{site}/sample/apple", _version=NO_URLS_DIR)
    assert node.wait_status(job, "completed", "failed")["status"] == "completed"
