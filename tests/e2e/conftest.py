"""Servers and browser for the end-to-end tests: JupyterLab and the Voila Studio, driven by
Debian's chromium through Playwright (no browser download).

Every server runs on 127.0.0.1 on a free port, in its own session (process group) under a
temporary directory, and is ended by pid when its module finishes. Screenshots go to
``tests/e2e/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path(os.environ.get("SEGNB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, pointed at the system chromium."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the end-to-end tests drive Debian's chromium. "
                    "Run `bash scripts/setup` (it installs scripts/apt-packages.txt) or set SEGNB_CHROMIUM.")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """tests/e2e/artifacts/, emptied once per run so that every file in it is from this run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir()
    return ARTIFACTS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A child process in its own session, with its log file; ``stop()`` ends the whole group."""

    def __init__(self, name: str, command: list[str], cwd: Path, env: dict, log: Path):
        self.name, self.log = name, log
        self._log_file = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = 90.0, any_status: bool = False) -> None:
        """Until ``url`` answers 200 (or anything at all with ``any_status``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError:
                if any_status:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group (the server and its kernels), SIGKILL after 10 s."""
        try:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.pid, signal.SIGKILL)  # kernels that outlived their server
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._log_file.close()
        deadline = time.monotonic() + 10  # killed orphans are reaped by init, not at once
        while time.monotonic() < deadline:
            try:  # nothing of the group may be left: the server, its kernels, their children
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        raise AssertionError(f"processes of {self.name} (group {self.pid}) outlived SIGKILL")


def _isolated_env(home: Path) -> dict:
    """The test's own Jupyter config, data and runtime folders; fast notebooks; no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({
        "SEGNB_FAST": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    })
    return env


LAB_CONFIG = """\
from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # exposes window.jupyterapp; no xsrf checks (tests only)
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = {port}
c.ServerApp.root_dir = {root!r}
c.LabApp.workspaces_dir = {workspaces!r}
c.IdentityProvider.token = {token!r}
c.ServerApp.allow_root = True  # CI runs as root
c.LabApp.user_settings_dir = {settings!r}
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
"""


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory, artifacts):
    """JupyterLab on a copy of notebooks/: yields (base url, token, root folder)."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    shutil.copytree(ROOT / "notebooks", root)
    port, token = free_port(), secrets.token_hex(16)
    config = home / "jupyter_lab_config.py"
    settings = home / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news pop-up over the page
    config.write_text(LAB_CONFIG.format(port=port, root=str(root), workspaces=str(home / "workspaces"),
                                        settings=str(settings), token=token))
    server = Server("jupyterlab", [sys.executable, "-m", "jupyterlab", f"--config={config}", "--no-browser"],
                    cwd=root, env=_isolated_env(home), log=artifacts / "jupyterlab.log")
    try:
        server.wait_http(f"http://127.0.0.1:{port}/api?token={token}")
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root, "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def voila_studio(tmp_path_factory, artifacts):
    """`segnb studio` (Voila) as a user starts it: yields (page url, server)."""
    home = tmp_path_factory.mktemp("voila")
    port, token = free_port(), secrets.token_hex(16)
    server = Server("segnb studio", [sys.executable, "-m", "segnb.cli", "studio", "--port", str(port),
                                     "--token", token],
                    cwd=home, env=_isolated_env(home), log=artifacts / "voila.log")
    try:
        # Voila runs the notebook for each page request: wait for the server to answer at all.
        server.wait_http(f"http://127.0.0.1:{port}/voila/static/none?token={token}", any_status=True)
        yield {"url": f"http://127.0.0.1:{port}/?token={token}", "server": server}
    finally:
        server.stop()
