"""Progress: pure formatting, and a console renderer that owns throttling.

In the manner of fastprogress: :func:`format_progress` turns numbers into a
line of text (and :func:`format_progress_html` into HTML for notebook
renderers in ``segnb.ui``); renderers only draw. Rendering is throttled, so a
fast loop spends nearly nothing on it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

__all__ = ["ProgressState", "format_duration", "format_progress", "format_progress_html", "ConsoleRenderer"]


@dataclass
class ProgressState:
    """Where training is: ``done`` of ``total`` steps, images seen, time, and the latest figures."""

    done: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    images: int = 0
    elapsed: float = 0.0
    loss: float | None = None
    miou: float | None = None
    device: str = ""
    precision: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done == 0 or self.total <= self.done:
            return None
        return self.elapsed / self.done * (self.total - self.done)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def format_progress(state: ProgressState, width: int = 24) -> str:
    """``epoch 2/5 [#########.......] 40% 120/300 steps, 85 img/s, ETA 00:42, loss 0.312``."""
    filled = round(state.fraction * width)
    parts = [
        f"epoch {state.epoch}/{state.epochs}",
        f"[{'#' * filled}{'.' * (width - filled)}] {state.fraction:4.0%}",
        f"{state.done}/{state.total} steps",
        f"{state.images_per_s:.0f} img/s",
        f"elapsed {format_duration(state.elapsed)}",
        f"ETA {format_duration(state.eta)}",
    ]
    if state.loss is not None:
        parts.append(f"loss {state.loss:.4f}")
    if state.miou is not None:
        parts.append(f"val mIoU {state.miou:.3f}")
    return ", ".join(parts)


def format_progress_html(state: ProgressState) -> str:
    """The same as :func:`format_progress`, as a small HTML bar for notebooks."""
    text = format_progress(state).split("] ", 1)[-1]
    return (
        f'<div class="segnb-progress"><progress value="{state.done}" max="{max(state.total, 1)}" '
        f'style="width:40%"></progress> <span>epoch {state.epoch}/{state.epochs}, {text}</span></div>'
    )


class ConsoleRenderer:
    """Redraws one line on a terminal (``\\r``), or prints a line now and then into a log file."""

    def __init__(self, stream=None, interval: float = 0.5):
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def update(self, state: ProgressState, force: bool = False) -> None:
        now = time.monotonic()
        interval = self.interval if self.tty else max(self.interval, 10.0)
        if not force and now - self._last < interval:
            return
        self._last = now
        line = format_progress(state)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """One line of its own, e.g. which path the data takes."""
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self, state: ProgressState) -> None:
        self.update(state, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
