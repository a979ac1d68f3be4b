"""A progress renderer for notebooks: one HTML bar updated in place through a display handle.

The formatting is the core's (:func:`segnb.progress.format_progress_html`); this
only draws, throttled, and keeps drawing while the kernel is busy in ``fit()``.
"""

from __future__ import annotations

import html
import time

from IPython.display import HTML, display

from segnb.callbacks import ProgressCallback
from segnb.progress import ProgressState, format_progress_html

__all__ = ["NotebookRenderer", "NotebookProgress", "ThrottledRenderer"]


class ThrottledRenderer:
    """A progress renderer that draws at most every ``interval`` seconds; subclasses implement ``draw``."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval

    def update(self, state: ProgressState, force: bool = False) -> None:
        if not force and not self.due():
            return
        self._last = time.monotonic()
        self.draw(state)

    def draw(self, state: ProgressState) -> None:
        raise NotImplementedError

    def close(self, state: ProgressState) -> None:
        self.update(state, force=True)


class NotebookRenderer(ThrottledRenderer):
    """Draws :class:`ProgressState` as HTML in the cell output, at most every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5):
        super().__init__(interval)
        self._handle = None

    def draw(self, state: ProgressState) -> None:
        bar = HTML(format_progress_html(state))
        if self._handle is None:
            self._handle = display(bar, display_id=True)
        else:
            self._handle.update(bar)

    def note(self, text: str) -> None:
        """One line under the bar, e.g. which path the data takes and why."""
        display(HTML(f'<div class="segnb-progress-note">{html.escape(text)}</div>'))


def NotebookProgress(interval: float = 0.5) -> ProgressCallback:  # noqa: N802 - reads as a class
    """``fit(..., progress=NotebookProgress())``: the progress bar drawn in the notebook."""
    return ProgressCallback(NotebookRenderer(interval))
