"""What a run leaves behind: per-epoch figures as plain floats, and why it ended."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch records of plain floats (never tensors, so memory stays flat), and why training ended."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    stopped: str = ""
    limit: str = ""  # the limit that ended the run: "epochs" or "time" ("" when something else did)

    def last(self, key: str, default=None):
        return self.epochs[-1].get(key, default) if self.epochs else default

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps, "stopped": self.stopped, "limit": self.limit}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(list(data.get("epochs", [])), int(data.get("steps", 0)), data.get("stopped", ""),
                   data.get("limit", ""))
