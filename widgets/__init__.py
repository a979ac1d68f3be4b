"""segnb's widget front-end: anywidget ES modules and CSS, loaded with importlib.resources."""

from importlib import resources

__all__ = ["asset"]


def asset(name: str) -> str:
    """The text of one front-end file shipped in this package, e.g. ``asset("segnb.css")``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
