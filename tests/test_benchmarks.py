"""benchmarks/gpu_check.py's CPU smoke test: every section runs and the JSON summary is sane, so the
GPU check is ready to run in one call whenever a GPU is there."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"sync", "fit_vs_loop", "precision", "cache", "maskrcnn", "inference", "compiled"}


def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "summary.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])  # one JSON line on stdout
    assert summary == json.loads(out.read_text())
    assert {"device", "torch", "load_average", "sections", "goals", "peak_gib", "total_seconds"} <= set(summary)
    assert set(summary["sections"]) == SECTIONS
    errors = {name: s.get("error") or s.get("skipped") for name, s in summary["sections"].items()
              if ("error" in s or "skipped" in s) and name != "compiled"}
    assert not errors, errors
    assert "off" in summary["sections"]["compiled"]["skipped"]  # no compiler needed on the CPU
    assert summary["goals"]["errors"] == []

    sync = summary["sections"]["sync"]["dispatch"]
    assert sync["steps_watched"] == summary["settings"]["sync_steps"]
    assert isinstance(sync["host_reads"], int) and sync["copies_to_host"] == 0  # all on the CPU: nothing to copy

    run_ = summary["sections"]["fit_vs_loop"]["runs"]["batch2_eager"]
    assert run_["fit_stopped"] == "timed steps done"
    assert all(v > 0 for v in run_["fit_images_per_s"] + run_["loop_images_per_s"])
    assert run_["ratio_median"] > 0

    precision = summary["sections"]["precision"]
    assert all(precision[f"{side}_{p}_images_per_s"] > 0 for side in ("fit", "loop") for p in ("bf16", "fp32"))

    cache = summary["sections"]["cache"]
    assert set(cache) >= {"device", "ram", "false"}
    assert all(cache[k]["stopped"] == "completed" and 0 <= cache[k]["miou"] <= 1 for k in ("device", "ram", "false"))

    assert summary["sections"]["maskrcnn"]["steps"] == summary["settings"]["mask_steps"]
    inference = summary["sections"]["inference"]
    assert set(inference["seconds"]) >= {"predict", "evaluate", "soft_mask", "calibration", "grad_cam"}
    assert 0 <= inference["evaluate_miou"] <= 1
