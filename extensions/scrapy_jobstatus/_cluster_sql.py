"""The statements of the queue, the nodes and the eggs, the same for every
backend: written with ``?`` for each bound value; PostgreSQL's store
rewrites the marks (``postgres``). Only constants are joined into them;
every value is bound."""

# ruff: noqa: S608

from __future__ import annotations

from typing import Any

from ._store import NodeInfo

# A pending job with no node yet waits in the queue; claiming it names its
# node. The queue index only holds such jobs, whatever the store's size.
QUEUED = "status = 'pending' AND node IS NULL"
QUEUE_ORDER = "priority DESC, created_at, id"
# PostgreSQL adds FOR UPDATE SKIP LOCKED ({lock}): a node never waits on
# the job another one is claiming, it takes the next.
CLAIM = (
    "UPDATE jobs SET node = ? WHERE id = (SELECT id FROM jobs WHERE " + QUEUED + "{project}"
    " ORDER BY " + QUEUE_ORDER + " LIMIT 1{lock}) AND " + QUEUED + " RETURNING *"
)
QUEUED_JOBS = "SELECT * FROM jobs WHERE " + QUEUED + "{project} ORDER BY " + QUEUE_ORDER
COUNT_QUEUED = "SELECT COUNT(*) AS n FROM jobs WHERE " + QUEUED + "{project}"
REQUEUE = "UPDATE jobs SET node = NULL WHERE status = 'pending' AND node = ? RETURNING job_id"

# Scrapyd's list of finished jobs, the latest to end first: the jobs whose
# crawl ran (a job cancelled while pending never did, and never had a pid).
ENDED = "completed_at IS NOT NULL AND NOT (status = 'cancelled' AND pid IS NULL)"
FINISHED = "SELECT * FROM jobs WHERE " + ENDED + " ORDER BY completed_at DESC, id DESC LIMIT ?"
COUNT_FINISHED = "SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs WHERE " + ENDED + " LIMIT ?) AS f"

BEAT = (
    "INSERT INTO nodes (name, url, max_proc, running, version, started_at, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
    " max_proc = excluded.max_proc, running = excluded.running, version = excluded.version,"
    " started_at = excluded.started_at, last_seen = excluded.last_seen"
)
NODES = "SELECT * FROM nodes ORDER BY name"
DEAD_NODES = "SELECT * FROM nodes WHERE last_seen < ?"

PUT_EGG = (
    "INSERT INTO eggs (project, version, egg, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (project, version) DO UPDATE SET egg = excluded.egg,"
    " created_at = excluded.created_at"
)
GET_EGG = "SELECT egg FROM eggs WHERE project = ? AND version = ?"
EGG_VERSIONS = "SELECT version FROM eggs WHERE project = ? ORDER BY created_at, id"
EGG_PROJECTS = "SELECT DISTINCT project FROM eggs ORDER BY project"
DELETE_EGGS = "DELETE FROM eggs WHERE project = ?"


def project_clause(project: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if project is None else (" AND project = ?", (project,))


def beat_values(node: NodeInfo) -> tuple[Any, ...]:
    return (
        node.name,
        node.url,
        node.max_proc,
        node.running,
        node.version,
        node.started_at,
        node.last_seen,
    )


def node_from_row(row: Any) -> NodeInfo:
    return NodeInfo(
        name=row["name"],
        url=row["url"],
        max_proc=row["max_proc"],
        running=row["running"],
        version=row["version"],
        started_at=row["started_at"],
        last_seen=row["last_seen"],
    )


def postgres(statement: str) -> str:
    """A statement with PostgreSQL's marks."""
    return statement.replace("?", "%s")
