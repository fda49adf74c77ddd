"""A resolver for test crawls: loopback names resolve as usual, anything
under ``.invalid`` fails at once, so DNS-error tests send no query out."""

from __future__ import annotations

from scrapy.resolver import CachingThreadedResolver
from twisted.internet import defer
from twisted.internet.error import DNSLookupError


class LoopbackResolver(CachingThreadedResolver):
    def getHostByName(self, name, timeout=()):  # noqa: N802 (Twisted's name)
        if name.endswith(".invalid"):
            return defer.fail(DNSLookupError(f"no such host: {name}"))
        return super().getHostByName(name, timeout)
