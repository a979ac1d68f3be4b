"""segnb's widgets and notebook renderers: thin compositions over the core (``segnb``)."""

from segnb.ui.progress import NotebookProgress, NotebookRenderer

__all__ = ["NotebookProgress", "NotebookRenderer"]
