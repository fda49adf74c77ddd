"""A Scrapy project that reports the process its crawl runs in: deployed to
a node by the warm start tests. The tests rewrite VERSION before each
deploy."""

VERSION = "1"
