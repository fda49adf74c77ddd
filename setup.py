"""Two builds from one tree.

pip builds the library's wheel: the import package ``scrapy_jobstatus`` from
the source root ``extensions/``, with the scrapy commands as entry points.

scrapyd-deploy builds the Scrapy project's egg by running ``setup.py
bdist_egg`` (or ``bdist_uberegg``) next to scrapy.cfg: that egg holds the
``crawler`` project alone, with the settings entry point Scrapyd's runner
reads. The node that runs it has scrapy-jobstatus installed.
"""

import atexit
import os
import shutil
import sys
import tempfile

from setuptools import find_namespace_packages, find_packages, setup

COMMANDS = ("jobs", "jobstatus", "jobcancel", "jobwatch", "jobpause", "jobresume", "jobnotify")

if {"bdist_egg", "bdist_uberegg"} & set(sys.argv):
    # Built outside the tree: an egg-info of the project's name in the
    # working directory would shadow the installed library's entry points.
    outside = tempfile.mkdtemp(prefix="crawler-egg-")
    atexit.register(shutil.rmtree, outside, ignore_errors=True)
    setup(
        packages=find_packages(include=["crawler", "crawler.*"]),
        entry_points={"scrapy": ["settings = crawler.settings"]},
        options={
            "egg_info": {"egg_base": outside},
            # Not ./build: a wheel built later from the tree would pick the
            # project up from there.
            "build": {"build_base": os.path.join(outside, "build")},
            "bdist_egg": {"bdist_dir": os.path.join(outside, "bdist")},
        },
    )
else:
    setup(
        package_dir={"": "extensions"},
        # Namespace packages too: the dashboard's static/ folder, whose files
        # are package data.
        packages=find_namespace_packages("extensions", include=["scrapy_jobstatus*"]),
        entry_points={
            "scrapy.commands": [
                f"{name} = scrapy_jobstatus.commands.{name}:Command" for name in COMMANDS
            ]
        },
    )
