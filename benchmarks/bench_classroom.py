"""A class on one machine: N student pages of `segnb studio` (Voila) opened at once.

    .venv/bin/python benchmarks/bench_classroom.py [--pages 10] [--preheat N [--fill-delay S] [--warmup S]]
        [--deadline 300]

Starts `segnb studio` on 127.0.0.1, opens N pages in headless chromium (one browser, a context
per student, all at the same moment), and prints for each page the seconds until it is
interactive (the Studio's Load button is on screen) and until it answered a first click (Load
-> the dataset summary), the peak memory of the server and its kernels together (PSS, so that
libraries shared between kernels count once) and of the browser, and every error. Bounded: pages
not interactive by --deadline count as failures. Goals: every page interactive within 30 s, the
server and its kernels within 8 GB, no errors.

It also prints the CPU seconds that the kernels, Voila and the browser used while the class opened
its pages (the browser runs on this machine here; in a real class it runs on each student's own).
With --preheat N it waits until Voila's pool of N kernels is full before the class arrives (or
--warmup seconds), and after the class, with the pages still open, until the pool has been
refilled (`segnb studio --fill-delay` seconds after the pages took its kernels): the peak memory
printed includes the refilled pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

CHROMIUM = os.environ.get("SEGNB_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def group(pid: int) -> list[int]:
    """The process and all its descendants."""
    try:
        parent = psutil.Process(pid)
        return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (not counting its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Sampler(threading.Thread):
    """Peak PSS of the server group and of the browser group, and the CPU seconds of each of their
    processes (the last value seen), sampled every 0.5 s."""

    def __init__(self, server_pid: int):
        super().__init__(daemon=True)
        self.server_pid, self.browser_pids = server_pid, []
        self.peak_server = self.peak_browser = 0.0
        self.kernels = 0
        self.cpu: dict[str, dict[int, float]] = {"server": {}, "kernels": {}, "browser": {}}
        self.class_peak_server, self.class_cpu = 0.0, {}
        self.live_kernels = 0
        self.done = threading.Event()

    def sample(self):
        pids = group(self.server_pid)
        try:  # `segnb studio` and Voila; the kernels are Voila's children
            server = [self.server_pid, *(c.pid for c in psutil.Process(self.server_pid).children())]
        except psutil.NoSuchProcess:
            server = []
        kernels = [p for p in pids if p not in server]
        self.live_kernels = len(kernels)
        self.kernels = max(self.kernels, len(kernels))
        self.peak_server = max(self.peak_server, pss_mb(pids))
        browser = [p for b in self.browser_pids for p in group(b)]
        self.peak_browser = max(self.peak_browser, pss_mb(browser))
        for kind, some in (("server", server), ("kernels", kernels), ("browser", browser)):
            for pid in some:
                used = cpu_s(pid)
                if used is not None:
                    self.cpu[kind][pid] = used

    def class_done(self) -> None:
        """Peaks and CPU times when the last page answered (before any pool refill)."""
        self.class_peak_server = self.peak_server
        self.class_cpu = {kind: self.cpu_total(kind) for kind in self.cpu}

    def cpu_total(self, kind: str) -> float:
        return sum(self.cpu[kind].values())

    def run(self):
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.5)


async def student(browser, url: str, number: int, deadline: float, start: float) -> dict:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error"
            and "Failed to load resource" not in m.text else None)
    result = {"page": number, "interactive_s": None, "first_answer_s": None, "errors": errors}
    try:
        left = max(1.0, deadline - (time.monotonic() - start))
        await page.goto(url, timeout=left * 1000)
        await page.locator(".segnb-studio .segnb-load").wait_for(state="visible", timeout=left * 1000)
        result["interactive_s"] = time.monotonic() - start
        await page.locator(".segnb-load").click()
        left = max(1.0, deadline - (time.monotonic() - start))
        await page.locator(".segnb-dataset-summary", has_text="classes (void").wait_for(timeout=left * 1000)
        result["first_answer_s"] = time.monotonic() - start
        shown = await page.locator(".segnb-error").all_inner_texts()
        errors += [f"error box: {t}" for t in shown if t.strip()]
    except Exception as error:  # a page that never became interactive is a result, not a crash
        errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    result["context"] = context  # closed by classroom(), after the pool refills
    return result


async def classroom(url: str, pages: int, deadline: float, sampler: Sampler, hold=None) -> list[dict]:
    """All pages at once; then ``hold()`` (in a thread) while they stay open."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        sampler.browser_pids = [c.pid for c in psutil.Process().children(recursive=True)
                                if "chrom" in c.name().lower()][:1]
        start = time.monotonic()
        results = await asyncio.gather(*(student(browser, url, i + 1, deadline, start) for i in range(pages)))
        sampler.sample()  # the browser's CPU time before it closes
        sampler.class_done()
        if hold is not None:
            await asyncio.to_thread(hold)
        for result in results:
            await result.pop("context").close()
        await browser.close()
    return list(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--preheat", type=int, default=0, help="Voila's preheated kernel pool size")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole class")
    parser.add_argument("--fill-delay", type=float, default=None,
                        help="segnb studio --fill-delay: seconds before Voila refills its pool (default: its own)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds to let the preheated pool fill before the class arrives "
                             "(default: until Voila says the pool is full, at most 600 s)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="segnb-classroom-"))
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({"JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                "IPYTHONDIR": str(home / "ipython"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    log = open(home / "voila.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "segnb.cli", "studio", "--port", str(port), "--token", token,
               "--preheat", str(args.preheat)]
    if args.fill_delay is not None:
        command += ["--fill-delay", str(args.fill_delay)]
    server = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)

    def wait_for_kernels(count: int, limit: float) -> tuple[bool, float]:
        """Until ``count`` kernels run and all are idle (under 0.2 CPU-s in 3 s: the pool's kernels have
        run the Studio notebook; Voila's own "pool is filled" comes when they have only started)."""
        started = time.monotonic()
        history = []
        while time.monotonic() - started < limit and server.poll() is None:
            history.append((time.monotonic(), sampler.live_kernels, sampler.cpu_total("kernels")))
            recent = [h for h in history if h[0] >= history[-1][0] - 3]
            if (history[-1][0] - history[0][0] >= 3 and all(h[1] >= count for h in recent)
                    and recent[-1][2] - recent[0][2] < 0.2):
                return True, time.monotonic() - started
            time.sleep(0.5)
        return False, time.monotonic() - started

    sampler = Sampler(server.pid)
    sampler.start()
    try:
        import urllib.request

        for _ in range(240):  # the server answers at all
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/none", timeout=2)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.5)
        warmup = refill = None
        if args.preheat:  # let the pool fill before the class arrives
            if args.warmup is not None:
                time.sleep(args.warmup)
                warmup = f"after {args.warmup:.0f} s of warm-up"
            else:
                full, waited = wait_for_kernels(args.preheat, 600)
                warmup = f"pool {'ready' if full else 'NOT ready'} after {waited:.0f} s"
        hold = None
        if args.preheat:
            def hold():  # the pages stay open while Voila refills its pool
                nonlocal refill
                full, waited = wait_for_kernels(args.pages + args.preheat, (args.fill_delay or 1.0) + 600)
                refill = f"{'refilled' if full else 'NOT refilled'} {waited:.0f} s after the last page answered"
        load = os.getloadavg()
        sampler.sample()
        before = {kind: sampler.cpu_total(kind) for kind in sampler.cpu}  # server start, a preheated pool
        results = asyncio.run(classroom(f"http://127.0.0.1:{port}/?token={token}", args.pages, args.deadline,
                                        sampler, hold))
        wall = max(r["first_answer_s"] or r["interactive_s"] or args.deadline for r in results)  # the last answer
    finally:
        sampler.done.set()
        sampler.join(2)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()

    print(f"{args.pages} student pages of `segnb studio` at once, preheated kernels: {args.preheat}"
          f"{f' ({warmup}, fill delay {args.fill_delay if args.fill_delay is not None else 1:g} s)' if args.preheat else ''}, "
          f"{os.cpu_count()} CPUs, load average before {load[0]:.1f} (other work on the machine counts)")
    print(f"{'page':>4} {'interactive s':>14} {'first answer s':>15}  errors")
    for r in results:
        fmt = lambda v: "   never" if v is None else f"{v:8.1f}"  # noqa: E731
        print(f"{r['page']:>4} {fmt(r['interactive_s']):>14} {fmt(r['first_answer_s']):>15}  "
              f"{'; '.join(r['errors'])[:160] or 'none'}")
    times = [r["interactive_s"] for r in results if r["interactive_s"] is not None]
    errors = sum(bool(r["errors"]) or r["interactive_s"] is None for r in results)
    print(f"interactive: {len(times)}/{args.pages} pages, slowest {max(times, default=float('nan')):.1f} s, "
          f"median {sorted(times)[len(times) // 2] if times else float('nan'):.1f} s (goal: all within 30 s)")
    print(f"peak memory, server and kernels (PSS): {sampler.class_peak_server / 1024:.2f} GB until the last "
          f"page answered" + (f", {sampler.peak_server / 1024:.2f} GB with {sampler.kernels} kernels once the pool "
                              f"was {refill}" if args.preheat else f" ({sampler.kernels} kernels)")
          + f" (goal <= 8 GB); browser: {sampler.peak_browser / 1024:.2f} GB; pages with errors: {errors}")
    used = {kind: sampler.class_cpu.get(kind, sampler.cpu_total(kind)) - before[kind] for kind in sampler.cpu}
    print(f"CPU seconds while the class opened its pages: kernels {used['kernels']:.0f}, Voila "
          f"{used['server']:.0f}, browser {used['browser']:.0f}; per page {sum(used.values()) / args.pages:.1f} "
          f"({os.cpu_count()} CPUs x {wall:.0f} s until the last answer = {os.cpu_count() * wall:.0f} CPU s)"
          + (f"; the preheated pool used {before['kernels']:.0f} before the class" if args.preheat else ""))
    print(f"server log: {home / 'voila.log'}")
    ok = len(times) == args.pages and max(times) <= 30 and sampler.peak_server <= 8 * 1024 and not errors
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
