"""A quick, bounded answer to "can the Hugging Face Hub be reached?".

The hub client retries for 25-60 s when offline. A class of thirty students
should not wait that long to learn they are offline, so segnb asks the hub's
HTTP API once, with a short timeout, before handing work to ``datasets`` or
``timm``. ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

__all__ = ["HubStatus", "hub_endpoint", "probe_repo", "hub_offline_forced"]

DEFAULT_TIMEOUT = 5.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline_forced() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubStatus:
    """The outcome of one probe: ``reachable`` and, if reachable, whether the repo ``exists``."""

    reachable: bool
    exists: bool
    detail: str


def probe_repo(repo_id: str, repo_type: str = "dataset", timeout: float = DEFAULT_TIMEOUT) -> HubStatus:
    """Ask the hub's API about one repository, giving up after ``timeout`` seconds.

    Returns a :class:`HubStatus`; never raises for network trouble.
    """
    if hub_offline_forced():
        return HubStatus(False, False, "HF_HUB_OFFLINE is set")
    kind = {"dataset": "datasets", "model": "models"}[repo_type]
    url = f"{hub_endpoint()}/api/{kind}/{urllib.parse.quote(repo_id, safe='/')}"
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "segnb"})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HubStatus(True, response.status == 200, f"HTTP {response.status}")
    except urllib.error.HTTPError as err:  # the hub answered: the repo is missing, gated or private
        return HubStatus(True, False, f"HTTP {err.code} from {url}")
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        return HubStatus(False, False, f"{url} could not be reached within {timeout:g} s ({reason})")
