"""The job's figures in Scrapy's stats, as a stats consumer sees them at
``spider_closed`` (Spidermon's close monitors, the stats dump), in real
``scrapy crawl`` processes with a feed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import ROOT, run_crawl

RECORDER = {"tests.stats_probe.ClosingStatsRecorder": 500}


def crawl_seen_stats(tmp_path: Path, urls: list[str], **settings: str) -> dict[str, object]:
    seen = tmp_path / "seen.json"
    code = run_crawl(
        "batch",
        tmp_path / "jobs.db",
        tmp_path / "crawl.log",
        args={"urls": ",".join(urls), "_job": "stats-job"},
        settings={
            "EXTENSIONS": json.dumps(RECORDER),
            "STATS_PROBE_FILE": str(seen),
            "RETRY_ENABLED": "False",
            **settings,
        },
        output=tmp_path / "items.jl",
    )
    assert code == 0, (tmp_path / "crawl.log").read_text()[-3000:]
    return json.loads(seen.read_text())


def test_a_closing_consumer_sees_the_final_figures_and_status_with_a_feed(tmp_path, site):
    urls = [f"{site}/sample/{name}" for name in ("", "apple", "banana", "nope")]
    seen = crawl_seen_stats(tmp_path, urls)
    assert seen["jobstatus/status"] == "completed"
    assert seen["jobstatus/completion_reason"] == "done"
    assert seen["jobstatus/pages_crawled"] == 4
    assert seen["jobstatus/documents_found"] == 4
    assert seen["jobstatus/responses_failed"] == 1
    assert seen["jobstatus/failure_ratio"] == 0.25
    assert seen["jobstatus/progress"] == 100.0
    assert seen["jobstatus/requests_in_flight"] == 0
    assert seen["jobstatus/errors/http_error"] == 1
    # logparser reads the stats dump with regexes: numbers and strings only.
    assert all(type(value) in (int, float, str) for value in seen.values()), seen


def test_a_closing_consumer_sees_a_failing_job_as_failed(tmp_path, site):
    urls = [f"{site}/status/500?n={i}" for i in range(3)] + [f"{site}/sample/apple"]
    seen = crawl_seen_stats(tmp_path, urls)
    assert seen["jobstatus/status"] == "failed"
    assert seen["jobstatus/completion_reason"] == "error"
    assert seen["jobstatus/responses_failed"] == 3


def test_every_stats_key_is_documented_in_the_readme(tmp_path, site):
    seen = crawl_seen_stats(tmp_path, [f"{site}/sample/apple", f"{site}/status/404"])
    section = (ROOT / "README.md").read_text().split("## Stats", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(jobstatus/[a-z_/<>]+)`", section))
    for key in seen:
        generic = re.sub(r"^jobstatus/errors/.+$", "jobstatus/errors/<error_type>", key)
        assert generic in documented, f"{key} is not documented in the README's Stats section"
