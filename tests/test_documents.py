"""The documents job, run as ``scrapy crawl documents`` against the local
site's /docsite/ fixture and against a real documentation site."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import urlsplit

import pytest

from crawler.spiders.documents import clean_url, parse_types
from tests.fixture_site import CORPUS, CORPUS_START, document_body
from tests.link_walk import walk
from tests.spider_jobs import run_job

# Every document of /docsite/ from index.html, written from the fixture's
# pages: (path or URL, link text, source page, type, depth). "~/" is the other
# host, http://localhost:PORT/docsite/.
EXPECTED = [
    ("files/report.pdf", "Annual report", "index.html", "pdf", 1),
    ("files/REPORT-2024.PDF", "Report 2024", "index.html", "pdf", 1),
    ("files/data.csv?version=2&lang=en", "Data (CSV)", "index.html", "csv", 1),
    ("files/annual%20summary.docx", "Summary", "index.html", "docx", 1),
    ("files/r%C3%A9sum%C3%A9.odt", "R\u00e9sum\u00e9", "index.html", "odt", 1),
    ("~/files/offsite-budget.xlsx", "Budget on the file server", "index.html", "xlsx", 1),
    ("files/padded.rtf", "Padded link", "index.html", "rtf", 1),
    ("files/missing.pdf", "A document that is gone", "index.html", "pdf", 1),
    ("files/slides.pptx", "Slides", "a.html", "pptx", 2),
    ("files/sheet.XLSX?download=1", "Sheet", "a.html", "xlsx", 2),
    ("~/files/cdn-guide.pdf", "Guide (CDN)", "b.html", "pdf", 2),
    ("files/Presentation.PPTX", "Presentation", "b.html", "pptx", 2),
    ("files/summary.DOCX", "Summary (upper case)", "b.html", "docx", 2),
    # windows-1252 without a declared encoding: detected.
    ("files/cv.pdf", "R\u00e9sum\u00e9", "legacy.html", "pdf", 2),
    # windows-1252 declared as UTF-8: undecodable bytes replaced, no crash.
    ("files/menu.pdf", "Caf\ufffd menu", "mislabelled.html", "pdf", 2),
    ("files/notes.txt", "Notes", "a1.html", "txt", 3),
    ("files/archive.zip", "Archive", "a1.html", "zip", 3),
    ("files/deep.7z", "Deep archive", "a2.html", "7z", 4),
    ("files/old-letter.doc", "Old letter", "a2.html", "doc", 4),
    ("files/book.epub", "Book", "a3.html", "epub", 5),
    ("files/budget.ods", "Budget", "a3.html", "ods", 5),
    ("files/talk.odp", "Talk", "a3.html", "odp", 5),
    ("files/letter.rtf", "Letter", "a3.html", "rtf", 5),
    ("files/old.xls", "Old sheet", "a3.html", "xls", 5),
    ("files/old.ppt", "Old slides", "a3.html", "ppt", 5),
    ("files/pack.rar", "RAR", "a3.html", "rar", 5),
    ("files/pack.tar", "TAR", "a3.html", "tar", 5),
    ("files/pack.tar.gz", "TAR.GZ", "a3.html", "gz", 5),
    ("files/pack.tgz", "TGZ", "a3.html", "tgz", 5),
    ("files/pack.bz2", "BZ2", "a3.html", "bz2", 5),
    ("files/pack.xz", "XZ", "a3.html", "xz", 5),
]
# index, a, b, a1, a2, a3, legacy, mislabelled; missing.html (404), feed.json
# and blob (not HTML). Not: the tracked and fragment variants of a.html and
# b.html, the redirect loop's 302s, anything on the other host.
PAGES_FETCHED = 11


def expected(site: str, keep=lambda row: True) -> set[tuple]:
    own = f"{site}/docsite/"
    other = f"http://localhost:{urlsplit(site).port}/docsite/"
    return {
        (other + url[2:] if url.startswith("~/") else own + url, text, own + page, kind, depth)
        for url, text, page, kind, depth in EXPECTED
        if keep((url, text, page, kind, depth))
    }


def found(items: list[dict]) -> set[tuple]:
    rows = [(i["url"], i["link_text"], i["source_page"], i["file_type"], i["depth"]) for i in items]
    assert len(rows) == len(set(rows)), "a document was reported twice"
    assert len({row[0] for row in rows}) == len(rows), "a document was reported twice"
    return set(rows)


def test_every_linked_document_is_reported_once_and_traps_do_not_break_the_crawl(tmp_path, site):
    job = run_job(tmp_path, "documents", {"url": f"{site}/docsite/index.html"})
    assert job.returncode == 0
    assert found(job.items) == expected(site)
    doc = job.doc
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["completion_reason"] == "done"
    assert doc["stages_completed"] == ["discovery", "finalizing"]
    assert doc["total_documents_found"] == len(EXPECTED)
    assert doc["total_pages_crawled"] == PAGES_FETCHED
    assert [(e["error_type"], e["page_url"], e["http_status"]) for e in doc["errors"]] == [
        ("http_error", f"{site}/docsite/missing.html", 404)
    ]
    assert "Traceback" not in job.log and "ERROR" not in job.log
    assert "'documents/pages_not_html': 2" in job.log


def test_max_depth_keeps_pages_within_that_many_links_of_the_start(tmp_path, site):
    job = run_job(tmp_path, "documents", {"url": f"{site}/docsite/index.html", "max_depth": "1"})
    # Pages at depth 0 and 1 are crawled: their documents are at depth 1 and 2.
    assert found(job.items) == expected(site, lambda row: row[4] <= 2)
    assert job.doc["status"] == "completed"


def test_max_pages_caps_the_pages_requested(tmp_path, site):
    job = run_job(tmp_path, "documents", {"url": f"{site}/docsite/index.html", "max_pages": "1"})
    assert found(job.items) == expected(site, lambda row: row[2] == "index.html")
    assert job.doc["total_pages_crawled"] == 1
    assert job.doc["status"] == "completed"


def test_types_select_the_documents_case_insensitively(tmp_path, site):
    job = run_job(
        tmp_path, "documents", {"url": f"{site}/docsite/index.html", "types": "PDF, .docx"}
    )
    assert found(job.items) == expected(site, lambda row: row[3] in ("pdf", "docx"))


def test_download_stores_each_document_with_path_size_and_checksum(tmp_path, site):
    files = tmp_path / "files"
    job = run_job(
        tmp_path,
        "documents",
        {"url": f"{site}/docsite/dl.html", "download": "1"},
        settings={"FILES_STORE": str(files)},
    )
    by_name = {item["url"].rsplit("/", 1)[1]: item for item in job.items}
    assert set(by_name) == {"report.pdf", "cdn-guide.pdf", "missing.pdf", "notes.txt"}
    # The guide is on the other host: fetched only because download=1.
    assert by_name["cdn-guide.pdf"]["url"].startswith("http://localhost:")
    for name in ("report.pdf", "cdn-guide.pdf", "notes.txt"):
        item, body = by_name[name], document_body(name)
        assert item["download_error"] is None
        assert item["file_size"] == len(body)
        assert item["file_checksum"] == hashlib.md5(body).hexdigest()  # noqa: S324 (FilesPipeline's checksum)
        assert (files / item["file_path"]).read_bytes() == body
    gone = by_name["missing.pdf"]
    assert (gone["file_path"], gone["file_size"], gone["download_error"]) == (
        None,
        None,
        "HTTP 404",
    )
    doc = job.doc
    assert doc["status"] == "completed", doc["error_message"]
    assert doc["stages_completed"] == ["discovery", "download", "finalizing"]
    steps = [event["step"] for event in doc["history"]]
    assert steps.index("stage discovery") < steps.index("stage download") < steps.index("closing")
    assert doc["total_documents_found"] == 4
    assert [(e["error_type"], e["http_status"]) for e in doc["errors"]] == [("http_error", 404)]


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "http://127.0.0.1:1/", "max_pages": "ten"}, "max_pages"),
        ({"url": "http://127.0.0.1:1/", "max_depth": "-1"}, "max_depth"),
        ({"url": "http://127.0.0.1:1/", "types": "pdf,p df"}, "types"),
        ({"url": "http://127.0.0.1:1/", "download": "maybe"}, "download"),
    ],
)
def test_a_bad_argument_fails_the_job_at_once_naming_it(tmp_path, args, argument):
    job = run_job(tmp_path, "documents", args)
    doc = job.doc
    assert doc["status"] == "failed"
    assert doc["completion_reason"] == "error"
    assert doc["error_message"].startswith(f"{argument}: ")
    assert "Traceback" not in doc["error_message"] and "\n" not in doc["error_message"]
    assert doc["total_pages_crawled"] == 0 and job.items == []


def test_clean_url_drops_fragments_and_tracking_parameters_only():
    assert (
        clean_url("http://a.test/p?id=3&utm_source=x&UTM_Medium=y&fbclid=z&gclid=w#top")
        == "http://a.test/p?id=3"
    )
    assert clean_url("http://a.test/p?utm_source=x") == "http://a.test/p"
    assert clean_url("http://a.test/p?q=a+b&q=c&empty=") == "http://a.test/p?q=a+b&q=c&empty="
    assert clean_url("http://a.test/f.pdf#page=2") == "http://a.test/f.pdf"


def test_types_are_lower_case_extensions_without_duplicates():
    assert parse_types(" PDF,.docx,pdf,tar.gz ") == ("pdf", "docx", "tar.gz")
    assert "pdf" in parse_types(None) and "xlsx" in parse_types("")


@pytest.mark.skipif(
    not CORPUS.is_dir() and not os.environ.get("CI"),
    reason="the debian-policy package is not installed",
)
def test_a_real_documentation_site_gives_what_an_independent_walk_of_its_files_finds(
    tmp_path, site
):
    # One request at a time: breadth-first order is then exact, so the first
    # page seen for each document, and its depth, are those of the walk.
    job = run_job(
        tmp_path,
        "documents",
        {"url": f"{site}/corpus/{CORPUS_START}"},
        settings={"CONCURRENT_REQUESTS": "1"},
    )
    pages, documents = walk(CORPUS, f"{site}/corpus", CORPUS_START)
    assert len(pages) > 20 and len(documents) > 20  # the corpus is what we think it is
    assert found(job.items) == {
        (d.url, d.link_text, d.source_page, d.file_type, d.depth) for d in documents
    }
    assert job.doc["status"] == "completed"
    assert job.doc["total_pages_crawled"] >= len(pages)
