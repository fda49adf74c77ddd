"""Store locations as libpq reads them, shown without their secrets; what
is neither PostgreSQL's nor a plausible file path refused. No connection is
opened: libpq's own parser (psycopg's ``conninfo_to_dict``) is the judge."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from scrapy_jobstatus._location import (
    InvalidLocation,
    check_location,
    display_location,
    hide_secrets,
    is_postgres,
    location_secrets,
)
from scrapy_jobstatus._store import StoreError, open_store

# Passwords with what a URL or a DSN gives a meaning to.
PASSWORDS = ["pa#ss-W0rd", "pa?ss-W0rd", "p@ss/W0rd%", "a b'c\\d=e", "pa:ss&x=1"]


def locations(password: str) -> dict[str, str]:
    """Each way libpq takes ``password``."""
    encoded = quote(password, safe="")
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    forms = {
        "url, encoded": f"postgresql://jobs:{encoded}@127.0.0.1:5432/jobs",
        "url, in the query": f"postgres://jobs@127.0.0.1/jobs?password={encoded}&sslmode=disable",
        "url, sslpassword": f"postgresql://jobs@h/jobs?sslpassword={encoded}",
        "dsn": f"host=127.0.0.1 port=5432 dbname=jobs user=jobs password={quoted}",
        "dsn, sslpassword": f"host=h sslpassword = {quoted} dbname=jobs",
    }
    if not set(password) & set("/@% "):  # what libpq takes raw in a URL's user part
        forms["url, raw"] = f"postgresql://jobs:{password}@127.0.0.1:5432/jobs"
    return forms


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_form_libpq_reads_is_shown_without_its_password(password):
    for form, location in locations(password).items():
        read = conninfo_to_dict(location)
        assert password in (read.get("password"), read.get("sslpassword")), form
        assert is_postgres(location) and check_location(location) == location
        shown = display_location(location)
        assert password not in shown and quote(password, safe="") not in shown, form
        assert "***" in shown and ("jobs" in shown or "h" in shown), (form, shown)
        assert password in location_secrets(location), form


def test_what_is_shown_keeps_the_rest_of_the_location():
    assert (
        display_location("postgresql://jobs:pa#ss@db.internal:5433/jobs?sslmode=require")
        == "postgresql://jobs:***@db.internal:5433/jobs?sslmode=require"
    )
    assert (
        display_location("host=db port=5433 password='x y' dbname=jobs")
        == "host=db port=5433 password=*** dbname=jobs"
    )
    # A password only in PGPASSWORD or ~/.pgpass: nothing to hide.
    assert display_location("postgresql://jobs@db/jobs") == "postgresql://jobs@db/jobs"
    assert display_location("dbs/jobstatus.sqlite3") == "dbs/jobstatus.sqlite3"


def test_a_password_in_pgpassword_is_hidden_from_messages(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "fr0m-the-env")
    assert "fr0m-the-env" in location_secrets("host=h dbname=jobs")


@pytest.mark.parametrize(
    "location",
    [
        "dbs/jobstatus.sqlite3",
        "/var/lib/scrapyd/jobs.db",
        "jobs.db",
        "C:\\scrapyd\\jobs.db",
        "./a=b.db",
        "with space/jobs.db",
    ],
)
def test_plausible_file_paths_are_sqlite(location):
    assert not is_postgres(location)
    assert check_location(location) == location
    assert check_location(Path(location)) == str(Path(location))


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("mysql://jobs:s3cret-Pa55@h/jobs", "scheme 'mysql:'"),
        ("postgresq://jobs:s3cret-Pa55@h/jobs", "scheme 'postgresq:'"),
        ("sqlite:///jobs.db", "scheme 'sqlite:'"),
        ("file:jobs.db", "scheme 'file:'"),
        ("jobs:s3cret-Pa55@h/jobs", "scheme 'jobs:'"),
        ("", "empty"),
        ("   ", "empty"),
        ("jobs.db\n", "control characters"),
        (" jobs.db", "surrounding blanks"),
        ("postgresql://jobs:s3cret/Pa55@h/jobs", "percent-encode"),
        ("postgresql://jobs:s3cret@Pa55@h/jobs", "percent-encode"),
        ("postgresql://jobs:s3cret%Pa55@h/jobs", "percent-encoded byte"),
        ("host=h password='s3cret-Pa55", "never ends"),
        ("host=h password=a s3cret-Pa55", "not followed by '='"),
    ],
)
def test_what_is_neither_is_refused_in_one_line_and_never_made_a_file(
    location, expected, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidLocation) as info:
        check_location(location)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "s3cret" not in message and "Pa55" not in message
    with pytest.raises(StoreError) as opened:
        open_store(location)
    assert str(opened.value) == message
    assert list(tmp_path.iterdir()) == []


def test_a_location_that_is_no_store_is_shown_without_what_follows_its_scheme():
    assert display_location("mysql://jobs:s3cret@h/jobs") == "mysql:***"
    assert display_location("jobs.db\n") == "(not a location: ***)"


def test_a_location_libpq_would_misread_is_never_shown():
    for location in ("postgresql://jobs:s3cret/Pa55@h/jobs", "postgresql://u:s3cret@Pa55@h/j"):
        assert display_location(location) == "postgresql://***"
    assert display_location("host=h password='s3cret-Pa55") == "(a PostgreSQL DSN: ***)"


@pytest.mark.parametrize(
    "location",
    [
        "postgres//u:SECRET2@h/db",
        "postgresql//u:SECRET2@h/db",
        "POSTGRES/u:SECRET2@h/db",
        "u:SECRET1@h/db",
        "//u:SECRET5@h/db",
        "mysql//u:SECRET3@h/db",
        "dbs/u:SECRET4@h/db",
        "./x://SECRET6@h",
    ],
)
def test_a_mistyped_url_is_refused_without_its_secret_and_never_made_a_file(
    location, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidLocation) as info:
        check_location(location)
    message = str(info.value)
    assert "mistyped URL" in message and "\n" not in message and "SECRET" not in message
    assert "SECRET" not in display_location(location)
    with pytest.raises(StoreError) as opened:
        open_store(location)
    assert str(opened.value) == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "location",
    ["postgres.db", "x/postgres/jobs.db", "me@host/jobs.db", "C:\\Users\\me@corp\\jobs.db"],
)
def test_file_paths_near_a_url_are_still_paths(location):
    assert check_location(location) == location and display_location(location) == location


@pytest.mark.parametrize(
    "location",
    [
        "host=127.0.0.1 port=1 PASSWORD=SECRET-E",
        "host=h Password='SECRET-E' dbname=jobs",
        "host=h dbname=jobs SSLPassword=SECRET-E",
        "postgresql://u@h/jobs?PASSWORD=SECRET-E",
    ],
)
def test_a_password_key_in_any_case_is_hidden(location):
    assert "SECRET-E" not in display_location(location)
    assert "SECRET-E" in location_secrets(location)


def test_a_password_libpq_would_misread_is_neither_quoted_nor_missed():
    location = "postgresql://u:p@ss/w?rd@127.0.0.1:1/db"
    with pytest.raises(InvalidLocation) as info:
        check_location(location)
    assert "rd@" not in str(info.value) and "ss/w" not in str(info.value)
    assert display_location(location) == "postgresql://***"
    secrets = location_secrets(location)
    assert "p@ss/w?rd" in secrets
    # What libpq would have said of it, scrubbed.
    said = f'invalid URI query parameter: "rd@127.0.0.1:1/db" in {location}'
    assert "ss/w" not in hide_secrets(said, secrets) and "p@ss" not in hide_secrets(said, secrets)
    # A raw "/" in a password without a second "@": libpq would quote the rest.
    with pytest.raises(InvalidLocation):
        check_location("postgresql://u:pa/ss?word@127.0.0.1:1/db")
    # Raw "@" in a password given in the query is libpq's own reading.
    assert check_location("postgresql://u@h/db?password=a@b") == "postgresql://u@h/db?password=a@b"


@pytest.mark.parametrize(
    ("location", "passwords"),
    [
        ("postgresql://u:pw@h1:1,h2:2/db", ["pw"]),
        ("postgresql://u:SECRET-M@h1:1,h2:2/db", ["SECRET-M"]),
        ("postgresql://u:pw@h/db#frag", ["pw"]),
        ("postgresql://u@h/db#password=SECRET-F", ["SECRET-F"]),
        ("postgresql://u@h/db?password=pw&password=SECRET-2", ["pw", "SECRET-2"]),
        ("postgresql://u@h/db?password=SECRET-1&sslmode=x&password=pw", ["SECRET-1", "pw"]),
    ],
)
def test_every_password_of_a_location_is_found(location, passwords):
    secrets = location_secrets(location)
    shown = display_location(location)
    for password in passwords:
        assert password in secrets
        assert password not in shown.replace("postgresql", "")
        message = f"cannot connect: password {password!r} for u@h1 refused ({location})"
        assert password not in hide_secrets(message, secrets).replace("postgresql", "")


def test_a_short_secret_is_hidden_only_where_it_stands_apart():
    assert hide_secrets("pw: the password 'pw' is wrong", ["pw"]) == (
        "***: the password '***' is wrong"
    )
