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


NOTEBOOK_LAUNCH = '''
import os, torch
from accelerate import notebook_launcher

def train():
    from segnb.data import load_shapes
    from segnb.models import build_model
    from segnb.train import fit
    torch.set_num_threads(1)
    data = load_shapes(n=40, size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    history = fit(model, data, epochs=1, batch_size=8, progress=False, device="cpu")
    total = float(sum(p.double().sum() for p in model.parameters()))
    with open(os.path.join(os.environ["RESULTS"], os.environ["RANK"]), "w") as handle:  # not stdout: lines mix
        handle.write(" ".join([os.environ["RANK"], os.environ["WORLD_SIZE"], str(history.steps), repr(total)]))

notebook_launcher(train, num_processes=2)
'''


def test_notebook_launcher_runs_fit_in_two_processes(tmp_path):
    import os
    import subprocess

    script = tmp_path / "launch.py"
    script.write_text(NOTEBOOK_LAUNCH)
    env = {**os.environ, "RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [(tmp_path / rank).read_text().split() for rank in ("0", "1")]
    assert [r[0] for r in results] == ["0", "1"] and all(r[1] == "2" for r in results)
    assert results[0][2] == results[1][2] == "2"  # 32 training images / batch 8 / 2 processes
    assert results[0][3] == results[1][3]  # the same weights on both ranks


NAN_ON_ONE_RANK = '''
import os, sys, torch
from segnb.data import load_shapes
from segnb.models import build_model
from segnb.train import fit

torch.set_num_threads(1)
rank = int(os.environ["RANK"])


class NaNOnRankOne(torch.nn.Module):
    """Cross-entropy, NaN at the 3rd step on rank 1 only."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, target):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=255)
        return loss * float("nan") if rank == 1 and self.calls == 3 else loss


data = load_shapes(n=40, size=32, seed=0)
torch.manual_seed(0)
model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
history = fit(model, data, epochs=2, batch_size=4, progress=False, device="cpu", loss=NaNOnRankOne(),
              grad_clip=None)
with open(os.path.join(sys.argv[1], str(rank)), "w") as handle:
    handle.write(f"{history.steps}\\n{history.stopped}")
'''


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step_without_a_hang(tmp_path):
    """No gradient clipping: the other rank's gradients say nothing; the flag itself is summed over ranks."""
    import os
    import subprocess

    script = tmp_path / "nan.py"
    script.write_text(NAN_ON_ONE_RANK)
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = [(tmp_path / rank).read_text().split("\n", 1) for rank in ("0", "1")]
    assert results[0] == results[1], results  # the same step, the same message
    steps, stopped = results[0]
    assert steps == "2" and stopped.startswith("non-finite loss (nan) at step 2 (epoch 1)"), results
