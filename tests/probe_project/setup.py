"""The probe project's egg, as scrapyd-deploy builds it."""

from setuptools import find_packages, setup

setup(
    name="probe",
    version="1.0",
    packages=find_packages(include=["probe", "probe.*"]),
    entry_points={"scrapy": ["settings = probe.settings"]},
)
