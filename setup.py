# All metadata is in pyproject.toml; this shim stays because the project's layout (the design
# card) names setup.py at the top level, and older tools look for it.
from setuptools import setup

setup()
