"""For scrapyd-deploy, which builds the project's egg with ``setup.py
bdist_egg``. Everything, the egg's settings entry point included, is in
pyproject.toml."""

from setuptools import setup

setup()
