"""``TrainConfig``: every option of a training run, its default, and its check, in one place.

``fit(**options)``, the ``segnb train`` command and the Studio's Train panel all
build one; it is saved with every checkpoint (``training.json``), and
``fit(..., resume=folder)`` rebuilds the run from it. Every value is checked
here, before any work: a mistake gets one sentence that says what is wrong and
how to write it instead.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segnb.errors import SegnbError
from segnb.evaluation import check_protocol

if TYPE_CHECKING:  # torch is imported where a value is checked: the command line's parser reads defaults here
    import torch

__all__ = ["TrainConfig", "DEFAULT_EPOCHS", "OPTIMIZERS", "SCHEDULER_NAMES", "CLASS_WEIGHT_METHODS",
           "default_batch_size"]

DEFAULT_EPOCHS = 10  # when neither epochs nor max_minutes is given
# batch_size=None: 8 on the CPU, where an image costs the same in a batch of 8 or 16, so that a time
# budget buys twice the updates (benchmarks/bench_equal_time.py); 16 on a GPU, which needs the batch.
DEFAULT_BATCH_SIZES = {"cpu": 8}
DEFAULT_BATCH_SIZE = 16
OPTIMIZERS = ("adamw", "sgd")
SCHEDULER_NAMES = ("wsd", "cosine", "constant")
CLASS_WEIGHT_METHODS = ("inverse", "inverse_sqrt", "median")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "no", "32", "16", "bfloat16", "float16")
CACHE_CHOICES = ("auto", "device", "ram", False)


@dataclass
class TrainConfig:
    """The options of one training run (see :func:`segnb.train.fit` for what each does).

    ``epochs=None`` with no ``max_minutes`` means :data:`DEFAULT_EPOCHS`; with
    ``max_minutes`` alone the run lasts as long as the budget.
    """

    epochs: int | None = None
    batch_size: int | None = None  # None: default_batch_size(device), resolved when the run starts
    lr: float = 1e-3
    loss: str | torch.nn.Module = "ce"
    optimizer: str | Callable = "adamw"
    scheduler: str | Callable = "wsd"  # warm-up, stable, decay (segnb.train.budget.wsd_lr)
    precision: str = "auto"
    device: str | torch.device = "auto"
    image_size: int | tuple[int, int] | None = None
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0
    warmup_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_dir: str | Path | None = None
    resume: str | Path | None = None
    num_workers: int | str = "auto"
    augment: bool = True
    augment_scale: tuple[float, float] | None = None
    class_weight_method: str = "inverse_sqrt"
    seed: int = 0
    cache: str | bool = "auto"
    eval_every: int = 1
    protocol: str = "full"  # validation scored at each label's own size, or "resized" (segnb.evaluation)
    compile: bool = False

    def __post_init__(self):
        self.epochs = _whole("epochs", self.epochs, minimum=1, none=True)
        self.max_minutes = _minutes(self.max_minutes)
        if self.epochs is None and self.max_minutes is None:
            self.epochs = DEFAULT_EPOCHS
        self.batch_size = _whole("batch_size", self.batch_size, minimum=1, none=True)
        self.eval_every = _whole("eval_every", self.eval_every, minimum=1)
        check_protocol(self.protocol)
        self.seed = _whole("seed", self.seed, minimum=0)
        self.warmup_steps = _whole("warmup_steps", self.warmup_steps, minimum=0, none=True)
        if self.num_workers != "auto":
            self.num_workers = _whole("num_workers", self.num_workers, minimum=0)
        self.lr = _number("lr", self.lr, positive=True)
        self.weight_decay = _number("weight_decay", self.weight_decay)
        if self.grad_clip is not None:
            self.grad_clip = _number("grad_clip", self.grad_clip, positive=True)
        self.loss = _loss(self.loss)
        _choice_or_callable("optimizer", self.optimizer, OPTIMIZERS, "a function params -> optimizer")
        _choice_or_callable("scheduler", self.scheduler, SCHEDULER_NAMES, "a function (step, total, lr, warmup) -> lr")
        if str(self.precision) not in PRECISIONS:
            raise SegnbError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}.")
        self.device = _device(self.device)
        self.image_size = _size(self.image_size)
        self.augment_scale = _scale(self.augment_scale)
        if self.class_weight_method not in CLASS_WEIGHT_METHODS:
            raise SegnbError(f"class_weight_method must be one of {CLASS_WEIGHT_METHODS}, "
                             f"got {self.class_weight_method!r}.")
        if not any(self.cache is c or (self.cache == c and isinstance(c, str)) for c in CACHE_CHOICES):
            raise SegnbError(f"cache must be one of {CACHE_CHOICES}, got {self.cache!r}.")
        for name in ("augment", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise SegnbError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        for name in ("checkpoint_dir", "resume"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise SegnbError(f"{name} must be a folder (a str or Path), got {value!r}.")

    def for_device(self, device: torch.device) -> TrainConfig:
        """This config with what depends on the device filled in (the batch size, when None)."""
        return self if self.batch_size is not None else self.replace(batch_size=default_batch_size(device))

    @classmethod
    def from_options(cls, **options) -> TrainConfig:
        """A config from keyword options; an unknown name is refused with the list of known ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            hint = (" Things (the classes an instance model detects) are chosen when the model is built: "
                    "build_model('maskrcnn', ..., things=['cell'])." if "things" in unknown else "")
            raise SegnbError(f"fit() has no option {', '.join(map(repr, unknown))}.{hint} "
                             f"Its options are: {', '.join(sorted(names))}.")
        return cls(**options)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``, checked like any other config."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return type(self).from_options(**{**current, **changes})

    def to_dict(self) -> dict:
        """Plain JSON values; a loss module, an optimizer or a scheduler function is kept by its name."""
        import torch

        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.nn.Module) or callable(value):
                value = {"custom": getattr(value, "__name__", type(value).__name__)}
            elif isinstance(value, (Path, torch.device)):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, saved: dict, **overrides) -> TrainConfig:
        """The saved config, with ``overrides`` on top. A custom loss, optimizer or scheduler cannot be
        saved as JSON: pass it again (the error names it)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in names}
        for key, value in list(values.items()):
            if isinstance(value, dict) and "custom" in value:
                if key not in overrides:
                    raise SegnbError(f"The saved run used a custom {key} ({value['custom']}), which a checkpoint "
                                     f"cannot hold: pass {key}= again to resume it.")
                values.pop(key)
            elif isinstance(value, list) and key in ("image_size", "augment_scale"):
                values[key] = tuple(value)
        values.pop("resume", None)
        return cls.from_options(**{**values, **overrides})


def default_batch_size(device) -> int:
    """The batch size ``fit()`` uses on ``device`` when none is given: 8 on the CPU, 16 elsewhere."""
    import torch

    return DEFAULT_BATCH_SIZES.get(torch.device(device).type, DEFAULT_BATCH_SIZE)


def _whole(name: str, value, minimum: int, none: bool = False):
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)) or (
            isinstance(value, float) and not value.is_integer()):
        kind = f"the string {value!r}" if isinstance(value, str) else repr(value)
        raise SegnbError(f"{name} must be a whole number (e.g. {name}={max(minimum, 1)}), got {kind}.")
    if value < minimum:
        raise SegnbError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def _number(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = f"the string {value!r}" if isinstance(value, str) else repr(value)
        raise SegnbError(f"{name} must be a number, got {kind}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SegnbError(f"{name} must be a finite {'positive' if positive else 'non-negative'} number, got {value}.")
    return value


def _minutes(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = f"the string {value!r}" if isinstance(value, str) else repr(value)
        raise SegnbError(f"max_minutes must be a number of minutes (e.g. max_minutes=5), got {kind}.")
    if math.isinf(value) and value > 0:
        raise SegnbError("max_minutes=inf is no budget: leave max_minutes out (None) to train for the epochs alone.")
    if not value > 0 or not math.isfinite(value):
        raise SegnbError(f"max_minutes must be a positive number of minutes, got {value!r}.")
    return float(value)


def _loss(value):
    import torch

    if isinstance(value, torch.nn.Module):
        return value
    from segnb.losses import LOSSES

    if not isinstance(value, str) or value.lower().replace(" ", "") not in LOSSES:
        raise SegnbError(f"loss must be one of {', '.join(LOSSES)}, or a torch module (logits, target) -> loss; "
                         f"got {value!r}.")
    return value


def _choice_or_callable(name: str, value, choices, what: str) -> None:
    if isinstance(value, str) and value in choices:
        return
    if callable(value) and not isinstance(value, str):
        return
    raise SegnbError(f"{name} must be {', '.join(map(repr, choices))} or {what}; got {value!r}.")


def _device(value):
    import torch

    if str(value) == "auto":
        return "auto"
    try:
        return torch.device(value) if not isinstance(value, torch.device) else value
    except (RuntimeError, TypeError):
        raise SegnbError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}.") from None


def _size(value):
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)):
        return (int(value[0]), int(value[1]))
    raise SegnbError(f"image_size must be a positive int or (height, width), got {value!r}.")


def _scale(value):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SegnbError(f"augment_scale must be (lo, hi), e.g. (0.5, 2.0); got {value!r}.") from None
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise SegnbError(f"augment_scale must be (lo, hi) with 0 < lo <= hi, got {value!r}.")
    return (lo, hi)
