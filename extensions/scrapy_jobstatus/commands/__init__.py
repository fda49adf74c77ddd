"""The scrapy commands of the job lifecycle: jobs, jobstatus, jobcancel,
jobwatch. They read the local job store, or with ``--url`` a Scrapyd node's
job services."""
