"""Settings of the crawler project: the batch, documents and listings jobs."""

BOT_NAME = "crawler"

SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

ADDONS = {"scrapy_jobstatus.Addon": 100}

# The job lifecycle: the seeds' defaults, a timeout of 5 minutes that a job
# may raise up to 30 minutes.
JOBSTATUS_ENABLED = True
JOBSTATUS_TIMEOUT = 300
JOBSTATUS_TIMEOUT_MAX = 1800
JOBSTATUS_INTERVAL = 1.0
# A job with requests waiting and no progress for 10 minutes is warned of.
JOBSTATUS_STALL_TIMEOUT = 600

ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_TIMEOUT = 30
RETRY_TIMES = 1
TELNETCONSOLE_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"

# The batch spider's urls_file: on a Scrapyd node, read only in this
# directory (unset: a node reads no file), and at most URLS_FILE_MAX bytes
# (default 50 MiB) anywhere. A job cannot set either on a node.
# URLS_DIR = "/srv/crawler/urls"
# URLS_FILE_MAX = 50 * 1024 * 1024
