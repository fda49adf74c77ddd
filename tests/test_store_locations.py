"""End to end: a PostgreSQL store whose password holds what URLs and DSNs
give a meaning to, given in each form libpq takes (a URL, raw or
percent-encoded, a keyword DSN with an ``sslpassword``, ``PGPASSWORD``,
``~/.pgpass``), through a real crawl, each command and a real Scrapyd node;
the role must give its password (scram-sha-256). No log line, answer,
command output nor crawl command line shows a password."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.helpers import ROOT, run_crawl, scrapy
from tests.postgres import SECRETS_ROLE, temporary_database
from tests.scrapyd_node import ScrapydNode, slow_urls, unique

# Taken raw in a URL's user part by libpq (# and ? do not end it).
RAW = "Raw#pass?w0rd:x"
# Percent-encoded in a URL, quoted in a DSN, escaped in ~/.pgpass.
SPECIAL = "p#q?r/s@t%u v'w:x\\y-S3cret"
SSL_SECRET = "ssl-Key-pa55phrase"  # noqa: S105 (the tests' own)
WRONG = "Wr0ng#pass/w0rd"
ENDED = ("completed", "failed", "cancelled")


@dataclass
class Form:
    """A way to give the store: its location, its environment, and the
    secrets nothing may show."""

    location: str
    password: str
    env: dict[str, str] = field(default_factory=dict)
    # The same form with a wrong password: None where the location holds none.
    wrong: str | None = None
    wrong_password: str = WRONG

    @property
    def secrets(self) -> list[str]:
        found = {self.password, SSL_SECRET, self.wrong_password}
        return sorted(found | {quote(s, safe="") for s in found})


def dsn_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pgpass_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@pytest.fixture
def database(postgres_url: str) -> Iterator[tuple[str, str, str]]:
    """The role's own new database: (host, port, name)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(SECRETS_ROLE)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(SECRETS_ROLE)))
    try:
        with temporary_database(postgres_url) as url:
            name = urlsplit(url).path.lstrip("/")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(name), sql.Identifier(SECRETS_ROLE)
                    )
                )
                conn.execute(
                    sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(SECRETS_ROLE))
                )
            parts = urlsplit(url)
            yield parts.hostname or "", str(parts.port), name
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(SECRETS_ROLE)))


def set_password(postgres_url: str, password: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SECRETS_ROLE), sql.Literal(password)
            )
        )


FORMS = ["url, raw", "url, encoded", "url, query", "dsn", "PGPASSWORD", "pgpass"]


@pytest.fixture(params=FORMS)
def form(request, postgres_url, database, tmp_path, monkeypatch) -> Form:
    host, port, name = database
    base = f"{host}:{port}/{name}"
    role = SECRETS_ROLE
    kind = request.param
    password = RAW if kind == "url, raw" else SPECIAL
    set_password(postgres_url, password)
    if kind == "url, raw":
        made = Form(f"postgresql://{role}:{password}@{base}", password)
        made.wrong_password = WRONG.replace("/", "")
        made.wrong = f"postgresql://{role}:{made.wrong_password}@{base}"
    elif kind == "url, encoded":
        made = Form(f"postgresql://{role}:{quote(password, safe='')}@{base}", password)
        made.wrong = f"postgresql://{role}:{quote(WRONG, safe='')}@{base}"
    elif kind == "url, query":
        made = Form(f"postgres://{role}@{base}?password={quote(password, safe='')}", password)
        made.wrong = f"postgres://{role}@{base}?password={quote(WRONG, safe='')}"
    elif kind == "dsn":
        dsn = f"host={host} port={port} dbname={name} user={role} sslmode=disable"
        ssl = f"sslpassword={dsn_quoted(SSL_SECRET)}"
        made = Form(f"{dsn} password={dsn_quoted(password)} {ssl}", password)
        made.wrong = f"{dsn} password={dsn_quoted(WRONG)} {ssl}"
    elif kind == "PGPASSWORD":
        made = Form(f"postgresql://{role}@{base}", password, {"PGPASSWORD": password})
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"{host}:{port}:{name}:{role}:{pgpass_escaped(password)}\n")
        passfile.chmod(0o600)
        made = Form(f"postgresql://{role}@{base}", password, {"PGPASSFILE": str(passfile)})
    for variable in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in made.env.items():
        monkeypatch.setenv(variable, value)
    return made


def assert_hidden(form: Form, texts: dict[str, str | bytes]) -> None:
    shown = {
        where: text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        for where, text in texts.items()
    }
    leaks = [(where, s) for where, text in shown.items() for s in form.secrets if s in text]
    assert not leaks


def test_a_crawl_and_each_command_use_the_store_and_never_show_its_password(
    form: Form, site: str, tmp_path: Path
):
    job = unique("located")
    log = tmp_path / "crawl.log"
    code = run_crawl(
        "batch",
        form.location,  # type: ignore[arg-type]
        log,
        args={"urls": f"{site}/sample/", "_job": job},
        settings={"JOBSTATUS_REQUIRED": "True"},
    )
    assert code == 0, log.read_text()[-2000:]
    db = ["--db", form.location]
    status = scrapy("jobstatus", job, "--json", *db)
    assert status.returncode == 0 and '"status": "completed"' in status.stdout, status.stderr
    listed = scrapy("jobs", *db)
    assert listed.returncode == 0 and job in listed.stdout, listed.stderr
    cancel = scrapy("jobcancel", job, *db)
    assert cancel.returncode != 0 and "completed" in cancel.stdout + cancel.stderr
    notify = scrapy("jobnotify", *db)
    assert notify.returncode == 0, notify.stderr
    outputs = {"crawl log": log.read_bytes()}
    for name, result in [("jobstatus", status), ("jobs", listed), ("jobcancel", cancel)]:
        outputs[name] = result.stdout + result.stderr
    if form.wrong is not None:
        # The role gives its password: a wrong one fails, in one line.
        refused = scrapy("jobs", "--db", form.wrong)
        assert refused.returncode == 1 and "password authentication failed" in refused.stderr
        assert refused.stderr.count("\n") == 1
        unmonitored = tmp_path / "unmonitored.log"
        run_crawl("batch", form.wrong, unmonitored, args={"urls": f"{site}/sample/"})  # type: ignore[arg-type]
        assert "password authentication failed" in unmonitored.read_text()
        outputs |= {"refused": refused.stderr, "unmonitored": unmonitored.read_bytes()}
    assert_hidden(form, outputs)


def test_a_node_runs_its_jobs_on_the_store_and_never_shows_its_password(
    form: Form, site: str, tmp_path: Path
):
    # ConfigParser's rule: a '%' in scrapyd.conf is written '%%'.
    node = ScrapydNode(
        tmp_path / "node",
        options={"poll_interval": "0.2"},
        jobstatus={"db": form.location.replace("%", "%%")},
    )
    try:
        node.start()
        node.deploy()
        job = unique("located")
        assert node.schedule(job=job, urls=slow_urls(site, 2, 2)).json()["status"] == "ok"
        # What `ps` shows of the crawl: its command line holds no password.
        command_line = Path(f"/proc/{node.crawl_pid(job)}/cmdline").read_bytes()
        assert node.wait_status(job, *ENDED)["status"] == "completed"
        answers = {
            endpoint: node.get(endpoint, params)
            for endpoint, params in [
                ("jobstatus.json", {"job": job}),
                ("jobs.json", {}),
                ("events.json", {"since": 0}),
                ("nodes.json", {}),
                ("metrics", {}),
                ("dashboard", {}),
                ("listjobs.json", {}),
            ]
        }
        assert {e: a.code for e, a in answers.items()} == dict.fromkeys(answers, 200)
    finally:
        node.stop()
    crawl_log = next(node.workdir.rglob(f"{job}.log"))
    texts: dict[str, str | bytes] = {e: a.body for e, a in answers.items()}
    texts |= {"cmdline": command_line, "node log": node.log.read_bytes()}
    texts["crawl log"] = crawl_log.read_bytes()
    assert_hidden(form, texts)


# A node whose pool cannot log in again takes its pool's timeout (30 s) to
# stop: the forms with the password in the location.
@pytest.mark.parametrize("form", ["url, encoded", "dsn"], indirect=True)
def test_a_node_whose_store_refuses_it_answers_503_without_the_password(
    form: Form, postgres_url: str, tmp_path: Path
):
    node = ScrapydNode(tmp_path / "node", jobstatus={"db": form.location.replace("%", "%%")})
    try:
        node.start()
        assert node.get("jobs.json").code == 200
        # The password changes, and the node's sessions end: it must log in again.
        set_password(postgres_url, "An0ther-one")
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (SECRETS_ROLE,),
            )
        answers = {"events.json": node.get("events.json", {"since": 0})}
        if "sslpassword" in form.location:
            # metrics waits for the node's pool to give up (30 s): one form.
            answers["metrics"] = node.get("metrics", timeout=60)
    finally:
        node.stop()
    assert {e: a.code for e, a in answers.items()} == dict.fromkeys(answers, 503)
    bodies = {e: a.body for e, a in answers.items()}
    assert b"password authentication failed" in bodies["events.json"]
    assert_hidden(form, {**bodies, "node log": node.log.read_bytes()})


def test_a_node_refuses_a_store_location_that_is_no_store(tmp_path: Path):
    node = ScrapydNode(
        tmp_path / "node",
        jobstatus={"db": f"mysql://jobs:{quote(SPECIAL, safe='')}@h/db".replace("%", "%%")},
    )
    with pytest.raises(AssertionError, match="scrapyd exited"):
        node.start()
    log = node.log.read_text()
    assert "[jobstatus] db: a job store location with the scheme 'mysql:' is not one" in log
    assert quote(SPECIAL, safe="") not in log
    assert not list((tmp_path / "node").rglob("mysql*"))


def test_a_crawl_with_a_location_that_is_no_store_runs_unmonitored_saying_why(
    site: str, tmp_path: Path
):
    location = f"mysql://jobs:{quote(SPECIAL, safe='')}@h/db"
    log = tmp_path / "crawl.log"
    code = run_crawl("batch", location, log, args={"urls": f"{site}/sample/"})  # type: ignore[arg-type]
    text = log.read_text()
    assert code == 0
    assert "a job store location with the scheme 'mysql:' is not one" in text
    assert quote(SPECIAL, safe="") not in text
    assert not (ROOT / "mysql:").exists()  # the crawl's directory


MISTYPED = "postgres//u:SECRET2@h/db"  # "postgres://" without its ":"


def test_a_crawl_with_a_mistyped_url_makes_no_file_and_shows_no_password(site: str, tmp_path: Path):
    log = tmp_path / "crawl.log"
    code = run_crawl("batch", MISTYPED, log, args={"urls": f"{site}/sample/"})  # type: ignore[arg-type]
    text = log.read_text()
    assert code == 0
    assert "looks like a mistyped URL" in text and "SECRET2" not in text
    assert not (ROOT / "postgres").exists()


@pytest.mark.parametrize(
    "location",
    [
        MISTYPED,
        "u:SECRET1@h/db",
        "//u:SECRET5@h/db",
        # libpq refuses the key, and would quote the location: port 1 of the
        # loopback address, in case it did not.
        "host=127.0.0.1 port=1 PASSWORD=SECRETE",
        # libpq would quote the end of the password ("rd@127.0.0.1:1/db").
        "postgresql://u:p@SECRET/w?rd@127.0.0.1:1/db",
    ],
)
def test_the_jobs_command_refuses_a_location_in_one_line_without_its_password(location: str):
    done = scrapy("jobs", "--db", location)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "SECRET" not in output and "Traceback" not in output
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (ROOT / "postgres").exists() and not (ROOT / "u:SECRET1@h").exists()
    assert not Path("/u:SECRET5@h").exists()  # "//..." is the root's
