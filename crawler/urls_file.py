"""The batch spider's ``urls_file``: which files it may read, and how much.

A client of a Scrapyd node chooses a job's arguments, and so the file named
by ``urls_file``. On a node, the file is read only under the directory the
project names in its ``URLS_DIR`` setting; anywhere, only a regular file of
at most ``URLS_FILE_MAX`` bytes is read. An error names the file as it was
given and a line by its number, never the file's content.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from scrapy.settings import SETTINGS_PRIORITIES

from crawler.arguments import SpiderArgumentError

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

URLS_FILE_MAX = 50 * 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
# Settings only the project may give: on a node, a job's own ones (Scrapyd's
# ``setting=``, Scrapy's ``-s``) come at the command line's priority.
_PROJECT_ONLY = ("URLS_DIR", "URLS_FILE_MAX")


def on_scrapyd_node() -> bool:
    """Whether the crawl was started by Scrapyd, which names the project of
    every crawl it starts in SCRAPY_PROJECT: a client of the node chooses
    arguments and settings, never the environment."""
    return bool(os.environ.get("SCRAPY_PROJECT"))


@dataclass(frozen=True)
class UrlsFilePolicy:
    # None: no directory of its own (plain crawls read the user's files).
    directory: Path | None
    max_bytes: int = URLS_FILE_MAX
    on_node: bool = False

    @classmethod
    def from_settings(cls, settings: BaseSettings, on_node: bool) -> UrlsFilePolicy:
        """Raises SpiderArgumentError naming the setting when one is unusable."""
        if on_node:
            for name in _PROJECT_ONLY:
                if (settings.getpriority(name) or 0) >= SETTINGS_PRIORITIES["cmdline"]:
                    raise SpiderArgumentError(
                        f"urls_file: {name} is the project's setting; a job on a Scrapyd "
                        "node cannot set it"
                    )
        raw_max = settings.get("URLS_FILE_MAX")
        max_bytes = URLS_FILE_MAX
        if raw_max not in (None, ""):
            try:
                max_bytes = int(raw_max)
            except (TypeError, ValueError):
                raise SpiderArgumentError(
                    f"urls_file: URLS_FILE_MAX must be a number of bytes, not {str(raw_max)[:40]!r}"
                ) from None
            if max_bytes < 1:
                raise SpiderArgumentError(
                    f"urls_file: URLS_FILE_MAX must be at least 1, got {max_bytes}"
                )
        directory = settings.get("URLS_DIR") or None
        if directory is None and on_node:
            raise SpiderArgumentError(
                "urls_file: not read on a Scrapyd node unless the project's settings name "
                "the directory it reads from in URLS_DIR"
            )
        return cls(None if directory is None else Path(directory).expanduser(), max_bytes, on_node)

    def path(self, name: str) -> Path:
        """The file ``name`` names, symlinks and ``..`` resolved; under the
        directory when there is one (a relative name is taken in it)."""
        shown = repr(name[:200])
        if self.directory is None:
            return Path(name).expanduser().resolve()
        try:
            root = self.directory.resolve(strict=True)
        except OSError as exc:
            raise SpiderArgumentError(
                f"urls_file: URLS_DIR cannot be read: {exc.strerror or exc}"
            ) from None
        if not root.is_dir():
            raise SpiderArgumentError("urls_file: URLS_DIR is not a directory")
        # Resolved before anything is opened: the answer is the same whether
        # a file outside exists or not.
        path = (root / name).resolve()
        if not path.is_relative_to(root) or path == root:
            raise SpiderArgumentError(f"urls_file: {shown} is not a file in URLS_DIR")
        return path

    def read(self, name: str) -> bytes:
        """The file's bytes: a regular file, at most ``max_bytes`` of them,
        read without reading more than that."""
        shown = repr(name[:200])
        path = self.path(name)
        try:
            # Non-blocking: opening a FIFO must not wait for a writer.
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise SpiderArgumentError(
                f"urls_file: cannot read {shown}: {exc.strerror or exc}"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise SpiderArgumentError(f"urls_file: {shown} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            too_big = SpiderArgumentError(
                f"urls_file: {shown} is larger than URLS_FILE_MAX ({self.max_bytes} bytes)"
            )
            if info.st_size > self.max_bytes:
                raise too_big
            try:
                data = f.read(self.max_bytes + 1)
            except OSError as exc:
                raise SpiderArgumentError(
                    f"urls_file: cannot read {shown}: {exc.strerror or exc}"
                ) from None
        if len(data) > self.max_bytes:  # it grew since
            raise too_big
        return data


def parse_urls_file(data: bytes) -> list[str]:
    """The URLs of a file, one a line (blank lines skipped). A bad line is
    named by its number, never quoted: the file may hold anything."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpiderArgumentError(f"urls_file: line {line} is not UTF-8 text") from None
    urls = []
    for number, line in enumerate(text.splitlines(), start=1):
        url = line.strip()
        if not url:
            continue
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise SpiderArgumentError(f"urls_file: line {number} is not an http(s) URL")
        urls.append(url)
    return urls
