"""``segnb lab`` and ``segnb studio``: JupyterLab and the Voila Studio, run as a child process."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["STUDIO_SHAPES", "lab_command", "serve", "studio_command"]


def _root_refusal(args, name: str) -> int | None:
    """Jupyter refuses to run as root; say so before starting, and what to do."""
    import os

    if hasattr(os, "geteuid") and os.geteuid() == 0 and not args.allow_root:
        print(f"segnb {name}: running as root, which Jupyter refuses. Run it as a normal user, or "
              f"in a container where root is expected: segnb {name} --allow-root", file=sys.stderr)
        return 2
    return None


def serve(command: list[str], env: dict) -> int:
    """Run a server child; SIGTERM, SIGHUP and Ctrl-C end the child too, never leave it listening."""
    import signal
    import subprocess

    child = subprocess.Popen(command, env=env)

    def forward(signum, frame):
        child.terminate()  # SIGTERM: Jupyter and Voila shut down cleanly

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C ends the server, as before
                child.terminate()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _token(args) -> str:
    """--token, else SEGNB_TOKEN, else a fresh random one. Never put on a command line (ps shows it)."""
    import os
    import secrets

    return args.token or os.environ.get("SEGNB_TOKEN") or secrets.token_urlsafe(16)


def lab_command(args) -> int:
    import os

    refused = _root_refusal(args, "lab")
    if refused is not None:
        return refused
    notebooks = Path(args.notebooks).resolve()
    token = _token(args)
    command = [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebooks}",
        f"--ServerApp.ip={args.ip}", f"--ServerApp.port={args.port}",
        "--no-browser" if args.no_browser else "--ServerApp.open_browser=True",
    ]
    if args.allow_root:
        command.append("--ServerApp.allow_root=True")
    env = {**os.environ, "JUPYTER_TOKEN": token}  # the environment, not the command line
    env.pop("JUPYTER_TOKEN_FILE", None)
    print(f"JupyterLab on http://{args.ip}:{args.port}/lab?token={token}")
    if args.ip == "127.0.0.1":
        print("Listening on this machine only. To expose it deliberately: segnb lab --ip 0.0.0.0 "
              "(anyone who can reach the port and has the token can run code).")
    return serve(command, env)


# What the Studio's Dataset tab loads by default (its "images" slider and the lesson seed).
STUDIO_SHAPES = {"n": 400, "seed": 0}


def studio_command(args) -> int:
    """The Studio as a standalone page (Voila): no code cells, for students."""
    import json as json_module
    import os
    import tempfile
    from importlib import resources

    notebook = resources.files("segnb.ui").joinpath("studio.ipynb")
    token = _token(args)
    with tempfile.TemporaryDirectory(prefix="segnb-studio-") as config:  # 0700: this user only
        # Voila reads its token from a config file here, not from the command line.
        path = Path(config) / "voila.json"
        path.touch(mode=0o600)
        path.write_text(json_module.dumps({"Voila": {"token": token}}))
        # segnb's Voila template (segnb/ui/jupyter/voila/templates/segnb): Voila's own, with a still
        # loading message instead of an animation that costs a waiting page's CPU (docs/CLASSROOM.md).
        data = resources.files("segnb.ui").joinpath("jupyter")
        # The built-in dataset as the Studio loads it by default, drawn once here for every student.
        from segnb.data.shapes import CACHE_ENV, rendered_scenes

        shapes = Path(config) / "shapes"
        shapes.mkdir()
        rendered_scenes(**STUDIO_SHAPES, size=128, void_border=0, folder=shapes)
        env = {**os.environ, CACHE_ENV: str(shapes), "SEGNB_PRESENTATION": "1" if args.presentation else "0",
               "JUPYTER_CONFIG_PATH": os.pathsep.join(
                   [config, *filter(None, [os.environ.get("JUPYTER_CONFIG_PATH")])]),
               "JUPYTER_PATH": os.pathsep.join([str(data), *filter(None, [os.environ.get("JUPYTER_PATH")])])}
        command = [sys.executable, "-m", "voila", str(notebook), f"--Voila.ip={args.ip}",
                   f"--port={args.port}", "--no-browser", "--template=segnb",
                   # A busy machine (a class opening pages at once) can take longer than Voila's 4 s
                   # to deliver a cell's output; without this the page comes up without the Studio.
                   "--VoilaExecutor.iopub_timeout=60"]
        if args.preheat > 0:  # kernels that have run the Studio notebook before anyone asks (docs/CLASSROOM.md)
            command += ["--preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={args.preheat}",
                        # Refill the pool this long after a kernel is taken, not while a class opens pages.
                        f"--VoilaKernelManager.fill_delay={args.fill_delay}"]
        print(f"segnb studio on http://{args.ip}:{args.port}/?token={token}")
        if args.ip == "127.0.0.1":
            print("Listening on this machine only. To expose it deliberately: segnb studio --ip 0.0.0.0 "
                  "(anyone who can reach the port and has the token can use it).")
        return serve(command, env)
