"""The Scrapyd face of the job lifecycle: the job services, Scrapyd's
schedule.json and cancel.json overridden to record pending jobs, and a
launcher that passes the job store to every crawl and reports crashed crawls.

Wired by the shipped scrapyd.conf; see its ``[jobstatus]`` section.
"""

from .launcher import Launcher
from .webservice import Cancel, JobCancel, JobErrors, Jobs, JobStatus, Schedule

__all__ = ["Cancel", "JobCancel", "JobErrors", "JobStatus", "Jobs", "Launcher", "Schedule"]
