"""Kernel > Interrupt (SIGINT) during training: the first ends the run after the current step, a second
raises ``KeyboardInterrupt`` at once. A process that ignores SIGINT (nohup, a background job) keeps ignoring it."""

from __future__ import annotations

import signal
import threading

__all__ = ["install_sigint", "restore_sigint"]


def install_sigint(t):
    """Kernel > Interrupt (SIGINT) ends training after the current step; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a process that ignores interrupts
        return None  # (nohup, a shell's background job) keeps ignoring them

    def handler(signum, frame):
        if t.stop_requested:
            raise KeyboardInterrupt
        t.request_stop("interrupted")  # named "interrupted at step N" when training has ended

    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main interpreter
        return None


def restore_sigint(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
