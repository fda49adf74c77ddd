"""Parsing of spider arguments (``-a name=value``).

Each parser raises :class:`SpiderArgumentError` with a message that starts
with the argument's name. Spiders call them from ``start()``, so that a bad
argument fails the job, with its status recorded, instead of the process.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cssselect import SelectorError
from parsel import Selector
from tldextract import TLDExtract

if TYPE_CHECKING:
    from parsel import SelectorList

# The bundled Public Suffix List snapshot: no download, no cache file.
# Private suffixes (github.io, blogspot.com, ...) count, so that one site on a
# hosting platform is not taken for the whole platform.
_split_host = TLDExtract(cache_dir=None, suffix_list_urls=(), include_psl_private_domains=True)
_XPATH_PREFIX = "xpath:"
_EMPTY_DOCUMENT = Selector(text="<html><body></body></html>")


class SpiderArgumentError(ValueError):
    pass


def parse_start_url(name: str, value: str | None) -> str:
    if not value or not value.strip():
        raise SpiderArgumentError(f"{name}: no URL given (use -a {name}=URL)")
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpiderArgumentError(f"{name}: {value[:200]!r} is not an http(s) URL")
    return value


def parse_int(name: str, value: str | None, *, default: int | None, minimum: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpiderArgumentError(f"{name}: {str(value)[:100]!r} is not an integer") from None
    if number < minimum:
        raise SpiderArgumentError(f"{name}: must be at least {minimum}, got {number}")
    return number


def parse_bool(name: str, value: str | None) -> bool:
    if value is None or value.strip() == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SpiderArgumentError(f"{name}: {value[:100]!r} is not a boolean (use 1 or 0)")


def registered_domain(url: str) -> str:
    """The domain a site owner registered (``docs.example.co.uk`` gives
    ``example.co.uk``); the host itself for IP addresses and single-label
    hosts such as ``localhost``."""
    host = urlsplit(url).hostname or ""
    return _split_host(host).top_domain_under_public_suffix or host


class FieldSelector:
    """A CSS selector, or an XPath one written ``xpath:EXPR``, evaluated in
    an element; its value is the text of the first match."""

    # Attributes whose values are URLs, made absolute when extracted.
    _URL_ATTRIBUTE = re.compile(r"(::attr\(\s*(href|src)\s*\)|@(href|src))\s*$")

    def __init__(self, argument: str, query: str):
        self.query = query
        if query.startswith(_XPATH_PREFIX):
            self.is_xpath, self.expression = True, query[len(_XPATH_PREFIX) :].strip()
        else:
            self.is_xpath, self.expression = False, query.strip()
        if not self.expression:
            raise SpiderArgumentError(f"{argument}: empty selector")
        try:
            # Compiling alone misses unknown XPath functions: evaluate once.
            self.select(_EMPTY_DOCUMENT)
        except (ValueError, SelectorError) as exc:
            message = " ".join(str(exc).split())[:200]
            raise SpiderArgumentError(
                f"{argument}: invalid selector {query[:200]!r}: {message}"
            ) from None
        self.is_url = bool(self._URL_ATTRIBUTE.search(self.expression))

    def select(self, root: Selector | SelectorList) -> SelectorList:
        if self.is_xpath:
            return root.xpath(self.expression)
        return root.css(self.expression)

    def first_text(self, root: Selector) -> str | None:
        """The first match as one line of text: a text node or attribute as
        it is, an element as its whole text content."""
        for match in self.select(root):
            if isinstance(match.root, str):
                text = match.root
            elif isinstance(match.root, (bool, int, float)):
                # An XPath function's result, such as count(...).
                text = str(match.root)
            else:
                text = match.xpath("string()").get() or ""
            return " ".join(text.split())
        return None

    def first_link(self, root: Selector) -> str | None:
        """The first match as a link: an element's ``href`` (or ``src``), or
        the text of an attribute or text node."""
        for match in self.select(root):
            if isinstance(match.root, str):
                value = match.root
            elif isinstance(match.root, (bool, int, float)):
                return None
            else:
                value = match.attrib.get("href") or match.attrib.get("src") or ""
            value = value.strip()
            return value or None
        return None


def parse_selector(name: str, value: str | None, *, required: bool) -> FieldSelector | None:
    if value is None or not value.strip():
        if required:
            raise SpiderArgumentError(
                f"{name}: no selector given (use -a {name}=CSS or -a {name}=xpath:XPATH)"
            )
        return None
    return FieldSelector(name, value)


def parse_fields(name: str, value: str | None, *, required: bool) -> dict[str, FieldSelector]:
    if value is None or not value.strip():
        if required:
            raise SpiderArgumentError(
                f'{name}: no fields given (use -a {name}=\'{{"title": "h2::text"}}\')'
            )
        return {}
    try:
        fields = json.loads(value)
    except ValueError as exc:
        raise SpiderArgumentError(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(fields, dict) or not fields:
        raise SpiderArgumentError(
            f"{name}: must be a non-empty JSON object mapping field names to selectors"
        )
    selectors = {}
    for field, query in fields.items():
        if not isinstance(query, str):
            raise SpiderArgumentError(
                f"{name}: the selector of {field!r} must be a string, got {json.dumps(query)[:100]}"
            )
        if not field.strip():
            raise SpiderArgumentError(f"{name}: empty field name")
        selectors[field] = FieldSelector(f"{name}: {field}", query)
    return selectors
