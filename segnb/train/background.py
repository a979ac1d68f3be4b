"""Training in a background thread: the notebook stays free, Stop works, and the status never lies."""

from __future__ import annotations

import threading

from segnb.train.history import History

__all__ = ["TrainingHandle"]


class TrainingHandle:
    """A training run in a background thread: ``.stop()``, ``.wait()``, ``.history``, ``.done``,
    ``.status`` (``"running"`` or how it ended, as ``history.stopped`` says it), ``.failed`` (then
    ``.error`` is the exception) and ``.interrupted`` (a ``KeyboardInterrupt`` ended it)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="segnb-fit", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.trainer.run()
        except BaseException as err:  # kept for .wait() to re-raise in the caller's thread
            self.error = err

    @property
    def history(self) -> History:
        return self.trainer.history

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def interrupted(self) -> bool:
        return self.done and isinstance(self.error, KeyboardInterrupt)

    @property
    def failed(self) -> bool:
        return self.done and self.error is not None and not self.interrupted

    @property
    def status(self) -> str:
        """``"running"``, or ``history.stopped``: ``"completed"``, ``"stopped by the user"``,
        ``"interrupted at step N"``, ``"failed: ..."``."""
        return "running" if not self.done else self.history.stopped

    def __repr__(self) -> str:
        return f"<TrainingHandle {self.status}, step {self.trainer.step} of {self.trainer.total_steps}>"

    def stop(self, wait: bool = True, timeout: float | None = 60) -> History:
        """End training after the current step; ``history.stopped`` says how it ended
        (``"failed: ..."`` if it had failed before)."""
        self.trainer.request_stop("stopped by the user")
        if wait:
            self._thread.join(timeout)
        return self.history

    def wait(self, timeout: float | None = None) -> History:
        """Wait for the end; a failure is raised here (an interrupted run returns its history)."""
        self._thread.join(timeout)
        if self.error is not None and not self.interrupted:
            raise self.error
        return self.history
