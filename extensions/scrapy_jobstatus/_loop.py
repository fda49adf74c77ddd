"""The crawl's event loop, in either of Scrapy's modes.

Scrapy runs a crawl on a Twisted reactor (the asyncio one by default) or,
with ``TWISTED_REACTOR_ENABLED = False``, on a bare asyncio loop, where
importing ``twisted.internet.reactor`` is forbidden (it would install one).
What the two modes share goes through Scrapy's own helpers elsewhere; this
module holds the little that differs: handing a call over to the loop from
another thread, and hearing of the reactor stopping.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from scrapy.utils.reactor import is_reactor_installed

if TYPE_CHECKING:
    from collections.abc import Callable


def installed_reactor() -> Any | None:
    """The Twisted reactor when one is installed, without installing one."""
    if not is_reactor_installed():
        return None
    return sys.modules["twisted.internet.reactor"]


class EventLoop:
    """The loop the crawl runs on, as seen from other threads (the store's,
    a signal handler). Made on the loop's thread."""

    def __init__(self) -> None:
        reactor = installed_reactor()
        if reactor is not None:
            self._call_soon: Callable[..., Any] = reactor.callFromThread
        else:
            self._call_soon = asyncio.get_event_loop().call_soon_threadsafe

    def call_soon_threadsafe(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop's thread, at its next turn."""
        try:
            self._call_soon(function, *args)
        except RuntimeError:
            pass  # the loop is closed: nothing is left to tell


def before_reactor_stops(function: Callable[[], Any]) -> None:
    """Call ``function`` before the reactor stops (the reactor waits for the
    Deferred it returns). Without a reactor, the crawl's own tasks end first:
    there is nothing to hook."""
    reactor = installed_reactor()
    if reactor is not None:
        reactor.addSystemEventTrigger("before", "shutdown", function)
