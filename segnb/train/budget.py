"""Learning-rate schedules and the time budget.

A schedule is a pure function ``(step, total_steps, base_lr, warmup) -> lr``: ``wsd`` (the default),
``cosine`` or ``constant``.
:class:`Budget` knows how many steps the run will take: from the epochs, or,
with ``max_minutes``, from the rate measured so far and the time left, so the
schedule ends when the time does. The rate is measured from the step after the
first, so a first step that compiles the model (or warms a cache) does not
shorten the schedule. Validation and checks together may take at most
:data:`EVAL_SHARE` of a budget: :meth:`Budget.validate_now` skips a validation
that would go over, and the training part ends early enough for the last one.
"""

from __future__ import annotations

import math
import time

__all__ = ["wsd_lr", "cosine_lr", "constant_lr", "SCHEDULES", "warmup", "Budget", "EVAL_SHARE"]

EVAL_SHARE = 0.05  # of a time budget, at most, for validation and checks: the budget is for training
# (a tenth made fit() lose to a loop that validates only at the end: benchmarks/bench_equal_time.py)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of ``base`` (nanoGPT's get_lr)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def constant_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then ``base``."""
    return base * min(1.0, (step + 1) / max(1, warmup))


DECAY_SHARE = 0.2  # of the run: the last fifth decays


def wsd_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Warm-up, stable, decay: linear warm-up, ``base`` until the last :data:`DECAY_SHARE` of the run,
    then a linear decay to 1% of ``base``.

    At a known length it matches cosine (Hägele et al., 2024, "Scaling Laws and Compute-Optimal
    Training Beyond Fixed Training Durations"); unlike cosine, nothing before its last fifth depends
    on the length, which a time budget only estimates as it goes. In a short run it keeps the full
    rate where cosine has already decayed (benchmarks/bench_equal_time.py).
    """
    if step < warmup:
        return base * (step + 1) / warmup
    decay_from = max(warmup, (1 - DECAY_SHARE) * total)
    if step < decay_from:
        return base
    return base * max(0.01, 1 - 0.99 * (step - decay_from) / max(1.0, total - decay_from))


SCHEDULES = {"wsd": wsd_lr, "cosine": cosine_lr, "constant": constant_lr}


def warmup(steps: int | None, total: int) -> int:
    """Warm-up steps: those given, else 5% of the run, at most 100 (a short run spends little of its
    rate on it)."""
    return steps if steps is not None else min(100, total // 20)


class Budget:
    """Steps planned from ``epochs`` and/or ``max_minutes``, and the time spent outside training steps."""

    def __init__(self, epochs: int | None, steps_per_epoch: int, max_minutes: float | None,
                 eval_images: int = 0, clock=time.monotonic):
        self.eval_images = eval_images
        self.epochs, self.steps_per_epoch, self.clock = epochs, max(1, steps_per_epoch), clock
        self.seconds = max_minutes * 60 if max_minutes else None
        self.start = self.deadline = None
        self._rate_from: tuple[float, int] | None = None  # (time, step) at the end of the first step
        self._steps_from: tuple[float, int] | None = None  # (time, step) when the steps began
        self.checks = 0.0  # seconds spent validating and checking, so far
        self.last_eval: float | None = None  # seconds the last validation took

    def begin(self) -> None:
        self.start = self.clock()
        self.deadline = self.start + self.seconds if self.seconds else None

    def steps_begin(self, step: int) -> None:
        """Training steps start now (after the checks and the cold pass): the rate's fallback until
        the step after the first is done."""
        self._steps_from = (self.clock(), step)

    def first_step_done(self, step: int) -> None:
        """The rate counts from here: the first step (compilation, warm-up) is not a sample of it."""
        self._rate_from = (self.clock(), step)

    def charge(self, seconds: float) -> None:
        """Time spent on validation or checks: it counts against :data:`EVAL_SHARE` of the budget."""
        self.checks += seconds

    def record_eval(self, seconds: float) -> None:
        self.last_eval = seconds
        self.charge(seconds)

    def planned_steps(self, step: int) -> int:
        """How many steps the run takes: from the epochs; with a time budget, from the rate and the
        time left (the fewer of the two), so the schedule ends when the time runs out."""
        by_epochs = self.epochs * self.steps_per_epoch if self.epochs else None
        guess = by_epochs or 10 * self.steps_per_epoch
        if self.deadline is None:
            return guess
        now = self.clock()
        # The rate from the step after the first, once it is done; until then from the first step.
        for began, first in (self._rate_from or (None, 0), self._steps_from or (None, 0)):
            if began is not None and step - first > 0 and now > began:
                break
        else:
            return guess
        done = step - first
        # Whole steps that still fit before the training part ends: none in the last one, so it runs at the final lr.
        by_time = step + math.floor(done / (now - began) * max(0.0, self.train_deadline() - now))
        return max(step, min(by_epochs, by_time) if by_epochs else by_time)

    def eval_reserve(self) -> float:
        """Seconds kept at the end of a budget for the last validation (at most the share left)."""
        if self.seconds is None:
            return 0.0
        expected = self.last_eval if self.last_eval is not None else 0.5 * EVAL_SHARE * self.seconds
        return min(expected, max(0.0, EVAL_SHARE * self.seconds - self.checks))

    def train_deadline(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.eval_reserve()

    def out_of_time(self) -> bool:
        deadline = self.train_deadline()
        return deadline is not None and self.clock() > deadline

    def expected_eval(self, images_per_s: float) -> float:
        """Seconds a validation should take: the last one's, or, before any, its images at the training
        rate (a forward pass costs about a third of a step: half is a safe guess)."""
        if self.last_eval is not None:
            return self.last_eval
        return self.eval_images / (2 * images_per_s) if images_per_s > 0 else 0.0

    def validate_now(self, images_per_s: float = 0.0) -> bool:
        """A validation before the last one fits in the budget's share (always, without a budget),
        with the last one's share still free."""
        if self.seconds is None:
            return True
        return self.checks + 2 * self.expected_eval(images_per_s) <= EVAL_SHARE * self.seconds
