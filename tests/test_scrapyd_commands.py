"""End to end: scrapy jobs, jobstatus, jobcancel and jobwatch with ``--url``
speak to a Scrapyd node's job services, with basic auth."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, scrapy
from tests.scrapyd_node import BIN, ScrapydNode, free_port, running_node, slow_urls, unique

AUTH = ("admin", "s3cret")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    yield from running_node(
        tmp_path_factory.mktemp("scrapyd-commands"), options={"poll_interval": "0.2"}, auth=AUTH
    )


@pytest.fixture(scope="module")
def completed(node: ScrapydNode, site: str) -> str:
    job = unique("done")
    node.schedule(job=job, urls=f"{site}/sample/,{site}/sample/apple,{site}/status/404")
    node.wait_status(job, "completed")
    return job


def remote(node: ScrapydNode) -> list[str]:
    return ["--url", node.url, "--auth", ":".join(AUTH)]


def test_jobstatus_over_http(node: ScrapydNode, completed: str) -> None:
    result = scrapy("jobstatus", completed, *remote(node))
    assert result.returncode == 0, result.stderr
    assert f"job:         {completed} (batch)" in result.stdout
    assert "status:      completed (done)" in result.stdout
    as_json = scrapy("jobstatus", completed, "--json", *remote(node))
    document = json.loads(as_json.stdout)
    assert document == {**node.status(completed), "updated_at": document["updated_at"]}


def test_credentials_in_the_url(node: ScrapydNode, completed: str) -> None:
    url = node.url.replace("http://", f"http://{AUTH[0]}:{AUTH[1]}@")
    result = scrapy("jobstatus", completed, "--url", url)
    assert result.returncode == 0, result.stderr


def test_jobs_over_http(node: ScrapydNode, completed: str) -> None:
    result = scrapy("jobs", "--json", "--status", "completed", *remote(node))
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert completed in [job["job_id"] for job in listing["jobs"]]
    assert listing["total"] >= 1
    table = scrapy("jobs", "--limit", "1", *remote(node))
    assert table.returncode == 0 and table.stdout.startswith("JOB")


def test_jobwatch_follows_a_job_to_its_end(node: ScrapydNode, site: str) -> None:
    job = unique("watched")
    # Pages of 5 s: the job still runs when the command, slow to start on a
    # busy machine, first reads it.
    node.schedule(job=job, urls=slow_urls(site, 3, 5))
    result = scrapy("jobwatch", job, "--interval", "0.2", "--wait", "10", *remote(node), timeout=90)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("completed: ")
    assert any("pending" in line or "running" in line for line in lines[:-1])


def test_jobcancel_over_http(node: ScrapydNode, site: str, completed: str) -> None:
    job = unique("cancelled")
    node.schedule(job=job, urls=slow_urls(site, 2, 20))
    node.wait_status(job, "running")
    result = scrapy("jobcancel", job, "--force", *remote(node))
    assert result.returncode == 0, result.stderr
    assert "cancellation requested; status cancelling" in result.stdout
    node.wait_status(job, "cancelled")
    again = scrapy("jobcancel", job, *remote(node))
    assert again.returncode == 0 and "cancelled" in again.stdout
    ended = scrapy("jobcancel", completed, *remote(node))
    assert ended.returncode == 1 and "already completed" in ended.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["jobstatus", "no-such-job"], 1, "error: unknown job: no-such-job"),
        (["jobcancel", "no-such-job"], 1, "error: unknown job: no-such-job"),
        (["jobstatus", "../etc"], 2, "error: invalid job id"),
        (["jobs", "--status", "bogus"], 2, "error: --status"),
    ],
)
def test_errors_are_one_line(node: ScrapydNode, args: list[str], code: int, message: str) -> None:
    result = scrapy(*args, *remote(node))
    assert result.returncode == code
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_missing_credentials_and_unreachable_node(node: ScrapydNode, completed: str) -> None:
    unauthorized = scrapy("jobstatus", completed, "--url", node.url)
    assert unauthorized.returncode == 1 and "unauthorized" in unauthorized.stderr
    unreachable = scrapy("jobstatus", completed, "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1
    assert (
        unreachable.stderr.startswith("error: cannot reach") and unreachable.stderr.count("\n") == 1
    )


def test_scrapyd_client_commands_work_with_the_shipped_scrapy_cfg(
    node: ScrapydNode, site: str, tmp_path: Path
) -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "scrapy.cfg")
    # The shipped target as it is written, moved to this node's port.
    shipped = urllib.parse.urlsplit(cfg["deploy"]["url"])
    cfg["deploy"]["url"] = shipped._replace(netloc=f"127.0.0.1:{node.port}").geturl()
    cfg["deploy"]["username"], cfg["deploy"]["password"] = AUTH
    with open(tmp_path / "scrapy.cfg", "w") as f:
        cfg.write(f)

    def client(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 (scrapyd-client's own command)
            [str(BIN / "scrapyd-client"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and "rror" not in result.stdout, result.stdout + result.stderr
        return result.stdout

    assert client("projects").split() == ["crawler"]
    assert "batch" in client("spiders", "-p", "crawler").split()
    scheduled = client("schedule", "-p", "crawler", "--arg", f"urls={site}/sample/", "batch")
    match = re.fullmatch(r"crawler / batch => (\S+)\n", scheduled)
    assert match, scheduled
    done = node.wait_status(match.group(1), "completed", "failed", "cancelled")
    assert done["status"] == "completed" and done["total_pages_crawled"] == 1
