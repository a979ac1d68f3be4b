import math

import pytest
import torch

from segnb.cli import main
from segnb.data import load_shapes
from segnb.models import build_model, load_model
from segnb.train import _lr_at, fit


@pytest.fixture(scope="module")
def tiny_data():
    return load_shapes(n=24, size=32, seed=1)


def test_fit_learns_and_records_plain_floats(tiny_data):
    torch.manual_seed(0)
    model = build_model("unet-classic", "vgg-tiny", class_names=tiny_data.class_names)
    history = fit(model, tiny_data, epochs=3, batch_size=8, lr=1e-2)
    assert history.stopped == "completed" and len(history.epochs) == 3
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    for record in history.epochs:
        for key, value in record.items():
            assert not isinstance(value, torch.Tensor), key
    assert 0.0 <= history.last("miou") <= 1.0 and history.steps == 3 * 3


def test_interrupt_ends_after_the_step_and_keeps_model_and_history(tiny_data):
    model = build_model("fcn32s", "vgg-tiny", class_names=tiny_data.class_names)
    calls = []

    def interrupt(record):
        calls.append(record)
        raise KeyboardInterrupt

    history = fit(model, tiny_data, epochs=5, batch_size=8, on_epoch=interrupt)
    assert history.stopped.startswith("interrupted at step 3")
    assert len(history.epochs) == 1 and len(calls) == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_loss_stops_with_the_step(tiny_data):
    model = build_model("fcn32s", "vgg-tiny", class_names=tiny_data.class_names)
    with torch.no_grad():
        model.net.score32.bias.fill_(float("nan"))
    history = fit(model, tiny_data, epochs=2, batch_size=8)
    assert history.stopped == "non-finite loss at step 0" and history.epochs == []


def test_learning_rate_schedule_warms_up_then_decays():
    lrs = [_lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.01, abs=0.01) and not any(math.isnan(v) for v in lrs)


def test_cli_demo_trains_reports_and_saves(tmp_path, capsys, monkeypatch):
    import segnb.data

    monkeypatch.setattr(segnb.data, "load_dataset", lambda source, **o: load_shapes(n=24, size=32, seed=0))
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "per-class IoU" in out and "ring" in out and "mIoU" in out
    assert load_model(tmp_path / "demo").class_names[-1] == "ring"
