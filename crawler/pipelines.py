"""Item pipelines of the crawler's jobs."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline, FSFilesStore

from crawler.items import DownloadedDocument

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from scrapy.http import Response
    from scrapy.pipelines.files import FileInfo, FileInfoOrError
    from scrapy.pipelines.media import MediaPipeline


class DocumentDownloadError(Exception):
    pass


class DocumentFilesPipeline(FilesPipeline):
    """Scrapy's FilesPipeline for the documents job: fetches each
    :class:`~crawler.items.DownloadedDocument`'s URL, wherever it is hosted,
    and records the stored file's path, size and checksum in the item."""

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        if not isinstance(item, DownloadedDocument):
            return []
        # Documents are often hosted off the crawled domain (CDNs, file hosts).
        return [Request(item.url, callback=NO_CALLBACK, meta={"allow_offsite": True})]

    def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> FileInfo | Awaitable[FileInfo]:
        """Scrapy's, with the file's size and a failed download's HTTP
        status: a coroutine from Scrapy 2.15, the file's info before."""
        try:
            result = super().media_downloaded(response, request, info, item=item)
        except Exception as exc:
            if response.status != 200:
                raise DocumentDownloadError(f"HTTP {response.status}") from exc
            raise
        if inspect.isawaitable(result):
            return self._downloaded(result, response)
        return _sized(result, response)

    async def _downloaded(self, pending: Awaitable[FileInfo], response: Response) -> FileInfo:
        try:
            result = await pending
        except Exception as exc:
            if response.status != 200:
                raise DocumentDownloadError(f"HTTP {response.status}") from exc
            raise
        return _sized(result, response)

    def item_completed(
        self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo
    ) -> Any:
        super().item_completed(results, item, info)
        if not isinstance(item, DownloadedDocument):
            return item
        for ok, value in results:
            if ok:
                item.file_path = value["path"]
                item.file_checksum = value["checksum"]
                item.file_size = value.get("size", self._stored_size(value["path"]))
            else:
                item.download_error = _describe(value.value)
        return item

    def _stored_size(self, path: str) -> int | None:
        # An up-to-date file from an earlier job is not downloaded again.
        if isinstance(self.store, FSFilesStore):
            try:
                return (Path(self.store.basedir) / path).stat().st_size
            except OSError:
                return None
        return None


def _sized(result: FileInfo, response: Response) -> FileInfo:
    result["size"] = len(response.body)  # type: ignore[typeddict-unknown-key]
    return result


def _describe(exc: BaseException) -> str:
    # FilesPipeline raises a bare exception of its own while handling the
    # real one: that one says what happened.
    while not str(exc) and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, DocumentDownloadError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())[:500]
