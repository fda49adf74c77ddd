"""The store's backends, picked by the form of a location. The contract
(``_store``) names none of them: each is imported when a store of its form
is opened, so SQLite's needs no PostgreSQL driver."""

from __future__ import annotations

import os
from importlib import import_module
from typing import TYPE_CHECKING

from ._location import InvalidLocation, check_location, is_postgres
from ._store import StoreError, node_name

if TYPE_CHECKING:
    from ._store import JobStore


class Backend:
    """A backend: its store class (``module:Class``), and the modules it
    needs beyond Python's own, with the command that installs them."""

    def __init__(self, path: str, needs: tuple[str, ...] = (), install: str = ""):
        self.path = path
        self.needs = needs
        self.install = install

    def store_class(self) -> type[JobStore]:
        for module in self.needs:
            try:
                import_module(module)
            except ImportError as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise StoreError(self.install.format(reason=reason)) from None
        module, _, name = self.path.partition(":")
        return getattr(import_module(module, __package__), name)


POSTGRES = Backend(
    "._postgres:PostgresStore",
    needs=("psycopg", "psycopg_pool"),
    install="a PostgreSQL job store needs psycopg ({reason}):"
    " pip install 'scrapy-jobstatus[postgres]'",
)
SQLITE = Backend("._sqlite:SQLiteStore")


def backend_of(location: str | os.PathLike[str]) -> Backend:
    """PostgreSQL's for a ``postgresql://`` URL or a keyword DSN, else
    SQLite's (a path)."""
    return POSTGRES if is_postgres(location) else SQLITE


def open_store(
    location: str | os.PathLike[str],
    *,
    readonly: bool = False,
    node: str | None = None,
    deadline: float | None = None,
) -> JobStore:
    """The store at ``location``: PostgreSQL's (a ``postgresql://`` URL or a
    keyword DSN), else a SQLite path; ``node`` names the node whose jobs it
    reaps (this process's node by default). A location that is neither is
    refused, and no file is made of it. ``deadline``: seconds after which a
    call waiting for the store (a connection, a statement, SQLite's write
    lock) fails with StoreError, instead of the defaults made for crawls."""
    try:
        check_location(location)
    except InvalidLocation as e:
        raise StoreError(str(e)) from None
    store_class = backend_of(location).store_class()
    store = store_class(os.fspath(location), readonly=readonly, deadline=deadline)  # type: ignore[call-arg]
    store.node = node or node_name()
    return store
