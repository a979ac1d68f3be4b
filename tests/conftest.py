import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Every test, and every kernel or server a test starts, uses a Hugging Face cache of its own:
# set before `datasets` or `huggingface_hub` is imported (they read it once, at import).
# The user's real ~/.cache/huggingface is never written (scripts/test checks it).
TEST_HF_HOME = Path(tempfile.mkdtemp(prefix="segnb-tests-hf-"))
os.environ["HF_HOME"] = str(TEST_HF_HOME)
for _name in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_name, None)

# Hypothesis keeps its example database and caches in ./.hypothesis: a temporary folder instead,
# so a test run leaves the working tree as it found it.
TEST_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="segnb-tests-hypothesis-"))
try:
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(TEST_HYPOTHESIS_HOME)
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


# Every fit() records a run (segnb.runs), by default under ./runs: in the tests, and in every kernel,
# server or command they start, a temporary folder instead (the working tree stays as it was).
TEST_RUNS = Path(tempfile.mkdtemp(prefix="segnb-tests-runs-"))
os.environ["SEGNB_RUNS"] = str(TEST_RUNS)


@pytest.fixture(scope="session", autouse=True)
def _temporary_hf_cache():
    """Fail at once if a library read its cache location before this conftest set it."""
    import datasets.config
    import huggingface_hub.constants

    for where in (datasets.config.HF_DATASETS_CACHE, huggingface_hub.constants.HF_HUB_CACHE):
        assert Path(where).is_relative_to(TEST_HF_HOME), f"a test cache outside {TEST_HF_HOME}: {where}"
    yield TEST_HF_HOME
    shutil.rmtree(TEST_HF_HOME, ignore_errors=True)
    shutil.rmtree(TEST_HYPOTHESIS_HOME, ignore_errors=True)
    shutil.rmtree(TEST_RUNS, ignore_errors=True)


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


def tiny_model(data, arch: str = "fcn32s", seed: int = 0):
    """A teaching model on the built-in tiny VGG, seeded: what the training tests train."""
    import torch

    from segnb.models import build_model

    torch.manual_seed(seed)
    return build_model(arch, "vgg-tiny", class_names=data.class_names)


@pytest.fixture
def sigint_as_in_a_kernel():
    """Python's own SIGINT handler, as a kernel and a terminal have it, for the test's duration: a
    shell's background job (nohup, `cmd &`) starts the tests with SIGINT ignored, and fit leaves
    an ignored SIGINT alone."""
    import signal

    outside = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, outside)


def nan_loss(at: int, then_on: bool = False):
    """Cross-entropy that turns NaN at call ``at`` (and every call after with ``then_on``), as an
    exploding loss would."""
    import torch

    class NaNLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, logits, target):
            self.calls += 1
            loss = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=255)
            bad = self.calls >= at if then_on else self.calls == at
            return loss * float("nan") if bad else loss

    return NaNLoss()


def small_gpu(inner, fits: int = 3, seen: dict | None = None):
    """``inner`` on a pretend GPU that runs out of memory on training batches of more than ``fits``
    images. ``seen`` gets the buffers as they were when memory ran out, and whether autocast was on
    for the batches that fit."""
    import torch

    class SmallGPU(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.num_classes, self.mean, self.std = inner.num_classes, inner.mean, inner.std

        def forward(self, x):
            if self.training and len(x) > fits:
                if seen is not None:
                    seen["buffers"] = [b.clone() for b in inner.buffers()]  # as they were before the step
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if self.training and seen is not None:
                seen["autocast"] = torch.is_autocast_enabled("cpu")
            return inner(x)

    return SmallGPU()


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once (an offline hub)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
