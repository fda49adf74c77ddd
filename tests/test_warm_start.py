"""End to end: a node's warm starts. Its crawls are forked from a zygote
(scrapyd.conf's ``warm_start``, on by default), and each is the process a
cold start makes: its own environment, directory, process group, reactor,
egg and descriptors, its signals and its exit seen by the node; a lost or
outdated zygote is replaced, no job lost or started twice."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from scrapy_jobstatus._store import process_alive
from tests.helpers import ROOT, wait_for
from tests.scrapyd_node import (
    BIN,
    PROJECT,
    ScrapydNode,
    parent_pid,
    running_node,
    slow_urls,
    unique,
)

PROBE = ROOT / "tests" / "probe_project"
NODE_OPTIONS = {"max_proc": "4", "poll_interval": "0.2", "items_dir": "items"}
node_running = contextmanager(running_node)


def deploy_probe(node: ScrapydNode, project: str, version: str, label: str) -> None:
    """Deploy the probe project as ``project``, its VERSION ``label``."""
    source = node.workdir / f"probe-{project}-{version}"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(PROBE, source, ignore=shutil.ignore_patterns("__pycache__", "build"))
    (source / "probe" / "__init__.py").write_text(f"VERSION = {label!r}\n")
    cfg = (source / "scrapy.cfg").read_text().replace("http://127.0.0.1:6800", node.url[:-1])
    (source / "scrapy.cfg").write_text(cfg)
    result = subprocess.run(  # noqa: S603 (scrapyd-client's own command)
        [str(BIN / "scrapyd-deploy"), "-p", project, "--version", version],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["status"] == "ok", result.stdout


def start_probe(
    node: ScrapydNode,
    out: Path,
    *,
    project: str = "probe",
    settings: dict[str, str] | None = None,
    **args: str,
) -> str:
    job = unique("probe")
    params = [("project", project), ("spider", "probe"), ("jobid", job), ("out", str(out))]
    params += [("setting", f"{key}={value}") for key, value in (settings or {}).items()]
    params += list(args.items())
    answer = node.post("schedule.json", params).json()
    assert answer["status"] == "ok", answer
    return job


def probe_report(node: ScrapydNode, out: Path, job: str) -> dict[str, Any]:
    """The report of the probe ``job`` once its crawl has ended; it ran
    once."""
    wait_for(lambda: node.scrapyd_state(job) == "finished", timeout=60, what=f"{job} to end")
    reports = [r for r in map(json.loads, out.read_text().splitlines()) if r["job"] == job]
    assert len(reports) == 1, reports
    return reports[0]


def run_probe(node: ScrapydNode, out: Path, **kwargs: Any) -> dict[str, Any]:
    return probe_report(node, out, start_probe(node, out, **kwargs))


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    with node_running(tmp_path_factory.mktemp("warm"), options=NODE_OPTIONS) as node:
        deploy_probe(node, "probe", "1", "1")
        yield node


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScrapydNode]:
    with node_running(
        tmp_path_factory.mktemp("cold"), options=NODE_OPTIONS, jobstatus={"warm_start": "off"}
    ) as node:
        deploy_probe(node, "probe", "1", "1")
        yield node


def test_a_warm_crawl_runs_in_a_process_like_a_cold_one(
    warm: ScrapydNode, cold: ScrapydNode, tmp_path: Path
) -> None:
    out = tmp_path / "reports.jl"
    hot, fresh = run_probe(warm, out), run_probe(cold, out)
    # Forked from the zygote, a child of the node; the cold one, of the node.
    assert hot["ppid"] == warm.zygote_pid() and parent_pid(hot["ppid"]) == warm.process.pid
    assert fresh["ppid"] == cold.process.pid
    for report, node in ((hot, warm), (fresh, cold)):
        # Scrapyd's process group and session, as a process it spawns.
        assert (report["pgrp"], report["sid"]) == (os.getpgrp(), os.getsid(0))
        assert report["cwd"] == str(node.workdir)
        assert report["env"]["SCRAPY_PROJECT"] == "probe"
        assert report["env"]["JOBSTATUS_DB"] == str(node.db)
        # Scrapy's command line has taken the command out.
        assert report["argv"][1] == "probe"
        assert f"LOG_FILE={node.workdir}/logs/probe/probe/{report['job']}.log" in report["argv"]
    for same in ("umask", "descriptors", "reactor", "loop", "root_handlers", "sigint_python"):
        assert hot[same] == fresh[same], same
    assert hot["argv"][0] == fresh["argv"][0]
    assert hot["env"].keys() == fresh["env"].keys()
    assert [a.split("=")[0] for a in hot["argv"]] == [a.split("=")[0] for a in fresh["argv"]]
    assert len(hot["threads"]) == len(fresh["threads"])
    assert hot["reactor"] == "AsyncioSelectorReactor"
    # None of the zygote's: its socket would show as one more.
    assert hot["descriptors"].count("socket") == fresh["descriptors"].count("socket")
    # Its output, and its log, where Scrapyd puts them.
    log = warm.workdir / "logs" / "probe" / "probe" / f"{hot['job']}.log"
    assert "Spider closed (finished)" in log.read_text()


def test_warm_crawls_draw_their_own_random_numbers(warm: ScrapydNode, tmp_path: Path) -> None:
    out = tmp_path / "reports.jl"
    jobs = [start_probe(warm, out) for _ in range(3)]
    numbers = {probe_report(warm, out, job)["random"] for job in jobs}
    assert len(numbers) == 3


def test_a_spider_changing_its_process_leaves_the_next_crawl_untouched(
    warm: ScrapydNode, tmp_path: Path
) -> None:
    out = tmp_path / "reports.jl"
    first = run_probe(warm, out, mutate="1")
    after = run_probe(warm, out)
    assert after["ppid"] == first["ppid"] == warm.zygote_pid()
    assert not after["dirty_env"] and not after["dirty_path"]
    assert after["root_handlers"] == first["root_handlers"]
    assert after["dirty_logger_level"] == 0
    assert after["sigusr1_default"]


@pytest.mark.parametrize(
    ("settings", "reactor", "loop"),
    [
        ({}, "AsyncioSelectorReactor", "_UnixSelectorEventLoop"),
        ({"TWISTED_REACTOR": "twisted.internet.pollreactor.PollReactor"}, "PollReactor", None),
        ({"TWISTED_REACTOR_ENABLED": "False"}, None, "_UnixSelectorEventLoop"),
    ],
    ids=["asyncio", "poll", "reactorless"],
)
def test_each_crawl_installs_the_reactor_its_settings_ask_for(
    warm: ScrapydNode,
    tmp_path: Path,
    settings: dict[str, str],
    reactor: str | None,
    loop: str | None,
) -> None:
    report = run_probe(warm, tmp_path / "reports.jl", settings=settings)
    assert report["ppid"] == warm.zygote_pid()
    assert (report["reactor"], report["loop"]) == (reactor, loop)


def test_two_projects_and_a_redeploy_each_crawl_on_its_own_egg(
    warm: ScrapydNode, site: str, tmp_path: Path
) -> None:
    out = tmp_path / "reports.jl"
    deploy_probe(warm, "probe-a", "1", "a1")
    deploy_probe(warm, "probe-b", "1", "b1")
    slow = f"{site}/slow?delay=3"
    first_a = start_probe(warm, out, project="probe-a", url=slow)
    first_b = start_probe(warm, out, project="probe-b", url=slow)
    warm.crawl_pid(first_a)
    # Redeployed while its crawl runs: the next crawl runs the new egg.
    deploy_probe(warm, "probe-a", "2", "a2")
    second_a = start_probe(warm, out, project="probe-a")
    versions = {job: probe_report(warm, out, job) for job in (first_a, first_b, second_a)}
    assert [(r["version_at_start"], r["version"]) for r in versions.values()] == [
        ("a1", "a1"),
        ("b1", "b1"),
        ("a2", "a2"),
    ]
    assert {r["ppid"] for r in versions.values()} == {warm.zygote_pid()}


def test_a_killed_zygote_is_replaced_and_no_job_is_lost_or_run_twice(
    tmp_path: Path, site: str
) -> None:
    with node_running(tmp_path / "node", options=NODE_OPTIONS) as node:
        zygote = node.zygote_pid()
        assert zygote is not None
        running = [unique("orphan") for _ in range(3)]
        for job in running:
            node.schedule(job=job, urls=slow_urls(site, 2, 2))
        for job in running:
            assert parent_pid(node.crawl_pid(job)) == zygote
        os.kill(zygote, signal.SIGKILL)
        later = [unique("later") for _ in range(2)]
        for job in later:
            node.schedule(job=job, urls=f"{site}/sample/")
        for job in running + later:
            done = node.wait_status(job, "completed", "failed", "cancelled")
            assert done["status"] == "completed", done
            assert done["attempt"] == 1
            log = node.workdir / "logs" / PROJECT / "batch" / f"{job}.log"
            assert log.read_text().count("Spider opened") == 1
        node.wait_idle()
        assert [p["id"] for p in node.get("listjobs.json").json()["finished"]].count(
            running[0]
        ) == 1
        # One warning, then a new zygote, whose crawls are warm again.
        warnings = re.findall(r"Warm starts unavailable.*", node.log_text())
        assert len(warnings) == 1 and f"pid {zygote}" in warnings[0]
        replaced = wait_for(
            lambda: (pid := node.zygote_pid()) != zygote and pid, what="a new zygote"
        )
        job = unique("warm-again")
        node.schedule(job=job, urls=slow_urls(site, 1, 2))
        assert parent_pid(node.crawl_pid(job)) == replaced
        node.wait_status(job, "completed")


def test_a_hung_zygote_is_replaced_and_the_crawl_starts_cold(tmp_path: Path, site: str) -> None:
    with node_running(tmp_path / "node", options=NODE_OPTIONS) as node:
        hung = node.zygote_pid()
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        try:
            cold = unique("cold-meanwhile")
            node.schedule(job=cold, urls=slow_urls(site, 1, 2))
            # Started cold, after the zygote failed to answer.
            assert parent_pid(node.crawl_pid(cold)) == node.process.pid
            assert node.wait_status(cold, "completed")["status"] == "completed"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGCONT)
        warnings = re.findall(r"Warm starts unavailable.*", node.log_text())
        assert len(warnings) == 1 and "did not answer" in warnings[0]
        replaced = wait_for(lambda: (pid := node.zygote_pid()) != hung and pid, what="a zygote")
        wait_for(lambda: not process_alive(hung), what="the hung zygote to be killed")
        job = unique("warm-again")
        node.schedule(job=job, urls=slow_urls(site, 1, 2))
        assert parent_pid(node.crawl_pid(job)) == replaced
        assert node.wait_status(job, "completed")["status"] == "completed"
        node.wait_idle()
        for started in (cold, job):
            # Started and finished: once.
            assert node.log_text().count(f"job='{started}'") == 2, started


def test_an_outdated_zygote_is_replaced_and_its_crawls_end_as_usual(
    tmp_path: Path, site: str
) -> None:
    library = ROOT / "extensions" / "scrapy_jobstatus" / "__init__.py"
    with node_running(tmp_path / "node", options=NODE_OPTIONS) as node:
        old = node.zygote_pid()
        running = unique("old-zygote")
        node.schedule(job=running, urls=slow_urls(site, 2, 2))
        assert parent_pid(node.crawl_pid(running)) == old
        # As a reinstall of the library does.
        times = library.stat()
        os.utime(library, ns=(times.st_atime_ns, times.st_mtime_ns + 1_000_000_000))
        try:
            first = unique("after-install")
            node.schedule(job=first, urls=f"{site}/sample/")
            assert node.wait_status(first, "completed")["status"] == "completed"
            wait_for(lambda: node.zygote_pid() != old, what="a new zygote")
        finally:
            os.utime(library, ns=(times.st_atime_ns, times.st_mtime_ns))
        assert node.wait_status(running, "completed")["status"] == "completed"
        assert "Warm starts unavailable" not in node.log_text()
        assert "replacing the zygote" in node.log_text()


@pytest.mark.parametrize(
    ("how", "status"), [("INT", "cancelled"), ("TERM", "cancelled"), ("KILL", "failed")]
)
def test_scrapyd_cancel_signals_reach_a_warm_crawl(
    warm: ScrapydNode, site: str, how: str, status: str
) -> None:
    job = unique(f"cancel-{how}")
    warm.schedule(job=job, urls=slow_urls(site, 4, 2))
    warm.wait_status(job, "running")
    assert parent_pid(warm.crawl_pid(job)) == warm.zygote_pid()
    answer = warm.post("cancel.json", {"project": PROJECT, "job": job, "signal": how}).json()
    assert answer["status"] == "ok" and answer["prevstate"] == "running"
    done = warm.wait_status(job, "cancelled", "completed", "failed", timeout=30)
    assert done["status"] == status, done
    if how == "KILL":
        assert "exit code -9 (killed by SIGKILL)" in done["error_message"]
    wait_for(lambda: warm.scrapyd_state(job) == "finished", what=f"{job} to end")


def test_a_warm_and_a_cold_job_give_the_same_items_stats_log_and_status(
    warm: ScrapydNode, cold: ScrapydNode, site: str
) -> None:
    results = []
    for node in (warm, cold):
        job = unique("same")
        node.schedule(job=job, urls=f"{site}/sample/")
        document = node.wait_status(job, "completed", "failed", "cancelled")
        node.wait_idle()  # the crawl has exited: its log is whole
        items = node.workdir / "items" / PROJECT / "batch" / f"{job}.jl"
        log = node.workdir / "logs" / PROJECT / "batch" / f"{job}.log"
        results.append((job, document, items.read_text(), log.read_text()))
    (warm_job, warm_doc, warm_items, warm_log), (cold_job, cold_doc, cold_items, cold_log) = results
    assert sorted(warm_items.splitlines()) == sorted(cold_items.splitlines())
    assert _comparable(warm_doc, warm_job, warm) == _comparable(cold_doc, cold_job, cold)
    assert _log_lines(warm_log, warm_job, warm) == _log_lines(cold_log, cold_job, cold)


# Times, job tokens, addresses and figures.
_VARYING = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:.,+]+|[0-9a-f]{32}|0x[0-9a-f]+|\d+(\.\d+)?(e-?\d+)?")


def _masked(text: str, job: str, node: ScrapydNode) -> str:
    text = text.replace(job, "JOB").replace(str(node.workdir), "NODE")
    return _VARYING.sub("N", text)


def _comparable(value: Any, job: str, node: ScrapydNode) -> Any:
    """A document without its times, durations, pids and paths."""
    if isinstance(value, dict):
        return {k: _comparable(v, job, node) for k, v in value.items() if k != "node"}
    if isinstance(value, list):
        return [_comparable(v, job, node) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "N"
    if isinstance(value, str):
        return _masked(value, job, node)
    return value


def _log_lines(log: str, job: str, node: ScrapydNode) -> list[str]:
    """The log's lines, but times, figures and paths; the stats dump's
    memory and time figures are figures too."""
    return [_masked(line, job, node) for line in log.splitlines()]


def test_a_bad_warm_start_option_stops_the_node_in_one_line(tmp_path: Path) -> None:
    node = ScrapydNode(tmp_path, jobstatus={"warm_start": "sometimes"})
    with pytest.raises(AssertionError, match="scrapyd exited"):
        node.start()
    lines = node.log.read_text().strip().splitlines()
    assert lines == [lines[0]]
    assert "[jobstatus] warm_start must be on or off, not 'sometimes'" in lines[0]


def test_a_warm_crawl_pauses_resumes_warm_and_is_cancelled(warm: ScrapydNode, site: str) -> None:
    job = unique("pause")
    settings = {"JOBSTATUS_PAUSABLE": "True", "CONCURRENT_REQUESTS": "1"}
    warm.schedule(job=job, settings=settings, urls=slow_urls(site, 10, 1))
    warm.wait_status(job, "running")
    first = warm.crawl_pid(job)
    assert parent_pid(first) == warm.zygote_pid()
    assert warm.post("jobpause.json", {"job": job}).code == 202
    warm.wait_status(job, "paused")
    wait_for(lambda: not process_alive(first), what="the paused crawl to exit")
    assert warm.post("jobresume.json", {"job": job}).code == 200

    def resumed() -> int | None:
        running = warm.get("listjobs.json").json()["running"]
        return next((p["pid"] for p in running if p["id"] == job and p["pid"] != first), None)

    second = wait_for(resumed, what=f"{job} to run again")
    assert parent_pid(second) == warm.zygote_pid()
    warm.wait_status(job, "running")
    assert warm.post("jobcancel.json", {"job": job}).code == 202
    done = warm.wait_status(job, "cancelled", "completed", "failed", timeout=30)
    assert (done["status"], done["completion_reason"]) == ("cancelled", "cancelled"), done
    assert "paused" in [event["step"] for event in done["history"]]
    wait_for(lambda: warm.scrapyd_state(job) == "finished", what=f"{job} to end")
