"""Two CPU processes through torchrun (gloo): the same weights everywhere, the same evaluation."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_distributed import check, run_two_processes  # noqa: E402


def test_two_process_training_matches_one_process_evaluation(tmp_path):
    run_two_processes(tmp_path, n=40, epochs=1)
    report = check(tmp_path, n=40)
    assert report["world_size"] == 2
    assert report["identical_weights"]
    assert report["distributed_miou"] == pytest.approx(report["single_process_miou"], abs=1e-12)
