"""Without the job status add-on: the probe looks at its process alone."""

BOT_NAME = "probe"
SPIDER_MODULES = ["probe.spiders"]
ROBOTSTXT_OBEY = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
