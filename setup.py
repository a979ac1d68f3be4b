"""Package discovery: pyproject.toml holds everything else.

Every package under segnb/ is found (a new subpackage ships without anyone listing it), plus
segnb.widgets, which pyproject.toml maps to widgets/ (the anywidget front-end, no build step).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["segnb", "segnb.*"]), "segnb.widgets"])
