"""Errors segnb raises on purpose.

Every message says what is wrong and how to fix it. They subclass the builtin
exception a caller would naturally catch (``ValueError``, ``ConnectionError``),
so ``except ValueError`` keeps working for code that does not know segnb.
"""

from __future__ import annotations

__all__ = [
    "SegnbError",
    "DatasetError",
    "HubUnavailableError",
    "ModelConfigError",
    "CheckpointError",
    "InputError",
    "MixedSizesError",
]


class SegnbError(Exception):
    """Base class of every error segnb raises on purpose."""


class DatasetError(SegnbError, ValueError):
    """A dataset could not be found, read or understood."""


class HubUnavailableError(SegnbError, ConnectionError):
    """The Hugging Face Hub could not be reached in time and nothing usable is cached."""


class ModelConfigError(SegnbError, ValueError):
    """A model cannot be built from this combination of options."""


class CheckpointError(SegnbError, ValueError):
    """A saved model or checkpoint is missing, truncated or tampered with."""


class InputError(SegnbError, ValueError):
    """An image, map or argument given to a segnb function has a shape, dtype or values it cannot take."""


class MixedSizesError(SegnbError):
    """Images of several sizes where one size is needed: a decoded cache or a batch without ``image_size``."""
