import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data; skip visibly when absent, except in CI where it must exist."""
    path = SHARED_DATA / name
    if not path.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing in CI; the real-data tests must run there.")
        pytest.skip(f"real data not available at {path}")
    return path


@pytest.fixture(scope="session")
def shapes_small():
    from segnb.data import load_shapes

    return load_shapes(n=40, size=64, seed=3)


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once (an offline hub)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
