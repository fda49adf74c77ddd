"""Where the job store is: a SQLite file path, or PostgreSQL as libpq takes
it (a ``postgresql://`` URL or a keyword DSN such as ``host=h dbname=d``,
with a password in it, in ``PGPASSWORD`` or in ``~/.pgpass``).

libpq itself reads a PostgreSQL location (psycopg hands it over as it is);
this module tells the kinds apart, refuses what is neither, and gives the
location as it may be shown: every password as ``***``. It reads a location
by libpq's own rules (a URL's user part ends at its first ``@``, so ``#``
and ``?`` may stand raw in a password), never by ``urllib``'s, which would
take ``#`` for the start of a fragment and show what follows.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

URL_PREFIXES = ("postgresql://", "postgres://")
# libpq's parameters whose value is a secret (``password``, ``sslpassword``);
# a key that ends so in any case is taken for one too: libpq refuses it, and
# quotes the location in its error.
SECRET_SUFFIX = "password"  # noqa: S105 (a key's name, not a password)
HIDDEN = "***"
# A secret this short is hidden in a message only where it stands apart: a
# short password would otherwise hide pieces of every word.
SHORT_SECRET = 3
# Whatever a key ending in "password" is given, in a URL's query (or what
# follows a "#") or in a keyword DSN, read loosely: a location libpq
# refuses is still searched for what its writer meant as a password.
_LOOSE_SECRET = re.compile(r"[A-Za-z_]*password\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&#]+)", re.IGNORECASE)
# A keyword DSN begins with a keyword and "=": a SQLite file path does not
# (``./a=b.db`` names such a file).
_DSN_START = re.compile(r"\s*[A-Za-z_]+\s*=")
# A URI scheme of two characters or more (one is a Windows drive letter).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
# What only a mistyped URL has, never a file path: a "://" anywhere, a word
# and "//" at the start (``postgres//u:pw@h/db``), PostgreSQL's scheme
# without its "://", or a user and password before an "@" (``u:pw@h/db``;
# a Windows drive letter aside).
_MISTYPED_URL = re.compile(r"://|^[A-Za-z][A-Za-z0-9+.-]*:?//|^postgres(?:ql)?(?:[:/\\]|$)", re.I)
_CREDENTIALS = re.compile(r":[^@]*@")
_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
KINDS = "a SQLite file path, a postgresql:// URL or a PostgreSQL keyword DSN (host=... dbname=...)"


class InvalidLocation(ValueError):
    """A location that is no job store: its message is one line and never
    quotes a password."""


def is_url(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and location.startswith(URL_PREFIXES)


def is_dsn(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and _DSN_START.match(location) is not None


def is_postgres(location: str | os.PathLike[str]) -> bool:
    """Whether the store is PostgreSQL (a URL or a keyword DSN)."""
    return is_url(location) or is_dsn(location)


def check_location(location: str | os.PathLike[str]) -> str:
    """The location, as a string; raises InvalidLocation for one that is
    neither PostgreSQL's nor a plausible file path (a file is never made of
    a mistyped URL), and for a PostgreSQL one libpq would misread."""
    text = os.fspath(location)
    if not isinstance(location, str):
        return text
    if is_url(text):
        _url_parts(text)  # raises what libpq would misread
        return text
    if is_dsn(text):
        _dsn_pairs(text)
        return text
    if not text.strip():
        raise InvalidLocation(f"an empty job store location: give {KINDS}")
    scheme = _SCHEME.match(text)
    if scheme:
        raise InvalidLocation(
            f"a job store location with the scheme {scheme.group()[:20]!r} is not one: give {KINDS}"
        )
    if _MISTYPED_URL.search(text) or _CREDENTIALS.search(_DRIVE.sub("", text, count=1)):
        # Nothing of it is quoted: what follows may be a password.
        raise InvalidLocation(
            "a job store location that looks like a mistyped URL (a user:password@host, or"
            f" no '://' after its scheme) is no file path: give {KINDS}"
        )
    if _CONTROL.search(text) or text != text.strip():
        raise InvalidLocation(
            f"a job store path with control characters or surrounding blanks: give {KINDS}"
        )
    return text


def display_location(location: str | os.PathLike[str]) -> str:
    """The location as it may be shown or logged: every password ``***``."""
    text = os.fspath(location)
    if not isinstance(location, str):
        return text
    if not is_postgres(text):
        try:
            return check_location(text)
        except InvalidLocation:
            # Whatever follows a scheme may be credentials.
            scheme = _SCHEME.match(text)
            return f"{scheme.group()}{HIDDEN}" if scheme else f"(not a location: {HIDDEN})"
    try:
        shown = _mask_url(text) if is_url(text) else _mask_dsn(text)
    except InvalidLocation:
        return _hidden(text)
    # libpq is the judge where psycopg is at hand: a password it would read
    # (or one written loosely, after a "#" say) that still shows means the
    # location is hidden whole.
    secrets = [*_libpq_secrets(text), *_loose_secrets(text)]
    if any(secret in shown for secret in secrets if len(secret) >= 4):
        return _hidden(text)
    return shown


def location_secrets(location: str | os.PathLike[str]) -> list[str]:
    """The passwords a message about the location must not show: as
    written and as libpq reads them, ``PGPASSWORD``'s too; longest first,
    so that one inside another goes whole."""
    text = os.fspath(location)
    found: list[str] = []
    if isinstance(location, str) and is_postgres(text):
        try:
            found += _written_secrets(text)
        except InvalidLocation:
            found += _misread_secrets(text)
        found += _libpq_secrets(text)
        found += _loose_secrets(text)
    found.append(os.environ.get("PGPASSWORD") or "")
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def hide_secrets(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, HIDDEN)
        else:
            apart = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
            text = re.sub(apart, HIDDEN, text)
    return text


def is_secret_key(key: str) -> bool:
    return unquote(key).strip().lower().endswith(SECRET_SUFFIX)


# -- URLs --------------------------------------------------------------------------


def _url_parts(url: str) -> tuple[str, str | None, str, list[str]]:
    """A URL cut as libpq cuts it: (scheme://, user part or None, hosts and
    database, query pairs). Raises for what libpq would misread."""
    prefix = next(p for p in URL_PREFIXES if url.startswith(p))
    rest = url[len(prefix) :]
    if _BAD_PERCENT.search(url):
        raise InvalidLocation(
            "a '%' in a PostgreSQL URL begins a percent-encoded byte (%25 for '%' itself)"
        )
    # libpq: a user part is there if an "@" comes before any "/".
    cut = re.search(r"[@/]", rest)
    user: str | None = None
    if cut is not None and cut.group() == "@":
        user, rest = rest[: cut.start()], rest[cut.end() :]
    path, _, query = rest.partition("?")
    pairs = query.split("&") if query else []
    if "@" in path or any(
        "=" not in pair or ("@" in pair and not is_secret_key(pair.partition("=")[0]))
        for pair in pairs
    ):
        # libpq would quote the rest, which holds the end of the password.
        raise InvalidLocation(
            "a PostgreSQL URL with a second '@' or a '/' or '?' in its user part, or a query"
            " parameter without '=': percent-encode '@' as %40, '/' as %2F and '?' as %3F"
            " in a password"
        )
    return prefix, user, path, pairs


def _mask_url(url: str) -> str:
    prefix, user, path, pairs = _url_parts(url)
    shown = prefix
    if user is not None:
        name, colon, _ = user.partition(":")
        shown += f"{name}:{HIDDEN}@" if colon else f"{user}@"
    shown += path
    if pairs:
        shown += "?" + "&".join(_mask_pair(p) for p in pairs)
    return shown


def _mask_pair(pair: str) -> str:
    key, eq, value = pair.partition("=")
    if eq and is_secret_key(key):
        return f"{key}={HIDDEN}"
    if eq and unquote(key) == "dbname" and is_postgres(unquote(value)):
        return f"{key}={HIDDEN}"  # a location inside a location
    return pair


def _written_secrets(text: str) -> list[str]:
    if is_url(text):
        _, user, _, pairs = _url_parts(text)
        found = [user.partition(":")[2]] if user and ":" in user else []
        for pair in pairs:
            key, _, value = pair.partition("=")
            if is_secret_key(key):
                found.append(value)
        return found
    return [text[a:b] for key, a, b in _dsn_pairs(text) if is_secret_key(key)]


def _misread_secrets(url: str) -> list[str]:
    """The password of a URL libpq would misread (a raw '@' or '/' in it):
    from its first ':' to its last '@', and to its first '@' as libpq reads it."""
    rest = url.partition("//")[2]
    user = rest.rpartition("@")[0]
    if ":" not in user:
        return []
    password = user.partition(":")[2]
    return [password, password.partition("@")[0]]


def _loose_secrets(text: str) -> list[str]:
    found = []
    for value in _LOOSE_SECRET.findall(text):
        found += [value, value.strip("'")]
    return found


# -- keyword DSNs ------------------------------------------------------------------


def _dsn_pairs(dsn: str) -> list[tuple[str, int, int]]:
    """Each ``key=value`` of a keyword DSN, as libpq reads one: the key, and
    where its value is written (quotes and escapes included)."""
    pairs = []
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i == n:
            return pairs
        start = i
        while i < n and not dsn[i].isspace() and dsn[i] != "=":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i == n or dsn[i] != "=":
            # The word is not quoted: it may be the end of a password.
            raise InvalidLocation(
                "a PostgreSQL keyword DSN with a word not followed by '=': quote a value"
                " with blanks in it (password='a b')"
            )
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        start = i
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                i += 2 if dsn[i] == "\\" else 1
            if i >= n:
                raise InvalidLocation(
                    f"a PostgreSQL keyword DSN whose {key[:30]} value's quote never ends"
                )
            i += 1
        else:
            while i < n and not dsn[i].isspace():
                i += 2 if dsn[i] == "\\" else 1
            i = min(i, n)
        pairs.append((key, start, i))


def _mask_dsn(dsn: str) -> str:
    shown, at = [], 0
    for key, start, end in _dsn_pairs(dsn):
        if is_secret_key(key) or (key == "dbname" and _holds_location(dsn[start:end])):
            shown += [dsn[at:start], HIDDEN]
            at = end
    return "".join([*shown, dsn[at:]])


def _holds_location(value: str) -> bool:
    return is_postgres(value.strip("'"))


def _hidden(text: str) -> str:
    if is_url(text):
        return f"{text.partition('//')[0]}//{HIDDEN}"
    return f"(a PostgreSQL DSN: {HIDDEN})"


def _libpq_secrets(text: str) -> list[str]:
    """The secrets libpq reads in the location, where psycopg is at hand."""
    try:
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return []
    try:
        params = conninfo_to_dict(text)
    except Error:
        return []
    return [str(v) for k, v in params.items() if is_secret_key(k) and v]
