import json
import math
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import nan_loss, small_gpu
from conftest import tiny_model as _model

from segnb.callbacks import (
    EVENTS,
    Callback,
    CSVLogger,
    EarlyStopping,
    StopTraining,
    TensorBoardLogger,
)
from segnb.checkpoint import load_checkpoint
from segnb.cli import main
from segnb.data import load_shapes
from segnb.losses import LOSSES, class_weights
from segnb.models import build_model, load_model
from segnb.progress import ProgressState, format_progress
from segnb.train import budget as train_schedules
from segnb.train import cosine_lr, evaluate, fit, lr_find, predict


@pytest.fixture(scope="module")
def tiny_data():
    return load_shapes(n=24, size=32, seed=1)




class Recorder(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name in EVENTS:
            return lambda trainer, *args: object.__getattribute__(self, "events").append(name)
        return object.__getattribute__(self, name)


def test_fit_learns_and_records_plain_floats(tiny_data):
    model = _model(tiny_data, "unet-classic")
    history = fit(model, tiny_data, epochs=3, batch_size=8, lr=1e-2, progress=False)
    assert history.stopped == "completed" and len(history.epochs) == 3 and history.steps == 9
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    for record in history.epochs:
        for key, value in record.items():
            assert not isinstance(value, torch.Tensor), key
    json.dumps(history.as_dict())  # plain data all the way down


def test_events_fire_in_the_documented_order(tiny_data):
    recorder = Recorder()
    fit(_model(tiny_data), tiny_data, epochs=2, batch_size=12, callbacks=[recorder], progress=False)
    epoch = ["on_epoch_start"] + ["on_step_end"] * 2 + ["on_eval_end", "on_epoch_end"]
    expected = ["on_fit_start", "on_data_ready"] + epoch * 2 + ["on_fit_end"]
    assert recorder.events == expected


def test_sigint_ends_training_after_the_current_step(tiny_data, sigint_as_in_a_kernel):
    steps = []

    class Interrupt(Callback):
        def on_step_end(self, trainer):
            steps.append(trainer.step)
            if trainer.step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # what Kernel > Interrupt sends

    model = _model(tiny_data)
    history = fit(model, tiny_data, epochs=5, batch_size=8, callbacks=[Interrupt()], progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert history.stopped == "interrupted at step 2" and steps == [1, 2]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_process_that_ignores_sigint_keeps_ignoring_it(tiny_data):
    """nohup or a shell's background job: an interrupt neither stops training nor is un-ignored."""
    outside = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        class Interrupt(Callback):
            def on_step_end(self, trainer):
                if trainer.step == 1:
                    os.kill(os.getpid(), signal.SIGINT)

        history = fit(_model(tiny_data), tiny_data, epochs=1, batch_size=8, callbacks=[Interrupt()], progress=False)
        assert history.stopped == "completed" and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outside)


def test_background_training_stops_within_one_step(tiny_data):
    data = load_shapes(n=200, size=32, seed=2)
    handle = fit(_model(data), data, epochs=50, batch_size=4, background=True, progress=False)
    deadline = time.monotonic() + 60
    while handle.trainer.step < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not handle.done
    at_stop = handle.trainer.step
    history = handle.stop()
    assert handle.done and history.stopped == "stopped by the user"
    assert history.steps <= at_stop + 1
    assert handle.wait() is history


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    model = _model(tiny_data)
    snapshots = {}

    class Snapshot(Callback):
        def on_step_end(self, trainer):
            snapshots[trainer.step] = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}

    # The 6th call: steps 0-2 of epoch 1, its validation (the training loss function), then steps 3 and 4.
    history = fit(model, tiny_data, epochs=3, batch_size=8, loss=nan_loss(6), callbacks=[Snapshot()],
                  checkpoint_dir=tmp_path, progress=False)
    assert history.stopped.startswith("non-finite loss (nan) at step 4 (epoch 2)")
    assert f"Last good checkpoint: {tmp_path / 'last'} (epoch 1)" in history.stopped
    assert "put back to its weights after epoch 1" in history.stopped
    assert len(history.epochs) == 1
    saved = load_model(tmp_path / "last").state_dict()
    for key, value in model.state_dict().items():  # the weights of the last good epoch, as saved
        assert torch.equal(value, snapshots[3][key]) and torch.equal(value, saved[key]), key
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1


def test_checkpoint_write_failure_leaves_the_previous_checkpoint_intact(tiny_data, tmp_path, monkeypatch):
    model = _model(tiny_data)
    fit(model, tiny_data, epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    before = (tmp_path / "last").resolve()
    import safetensors.torch

    real = safetensors.torch.save_file

    def disk_full(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:  # half-written, then the disk is full
            handle.truncate(os.path.getsize(filename) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fit(model, tiny_data, epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=tmp_path, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "last").resolve() == before
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1
    load_model(tmp_path / "last")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".last-") and p.resolve() != before]


def test_resume_continues_with_the_same_history_as_an_uninterrupted_run(tiny_data, tmp_path):
    options = dict(epochs=3, batch_size=8, lr=5e-3, progress=False, seed=3)
    straight = fit(_model(tiny_data, seed=7), tiny_data, checkpoint_dir=tmp_path / "a", **options)

    class Crash(Callback):  # the kernel dies right after the first epoch's checkpoint
        order = 100

        def on_epoch_end(self, trainer):
            raise StopTraining("kernel restarted")

    part = fit(_model(tiny_data, seed=7), tiny_data, checkpoint_dir=tmp_path / "b", callbacks=[Crash()], **options)
    assert part.stopped == "kernel restarted" and len(part.epochs) == 1
    resumed_model = _model(tiny_data, seed=99)  # a fresh kernel, another init: resume overwrites it
    resumed = fit(resumed_model, tiny_data, checkpoint_dir=tmp_path / "b", resume=tmp_path / "b", **options)
    assert [r["epoch"] for r in resumed.epochs] == [1, 2, 3]
    for a, b in zip(straight.epochs, resumed.epochs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["miou"] == pytest.approx(b["miou"], rel=1e-5)
    for key, value in straight_model_state(tmp_path / "a").items():
        assert torch.allclose(value, resumed_model.state_dict()[key], atol=1e-6), key


def straight_model_state(folder):
    return load_model(folder / "last").state_dict()


def test_out_of_memory_names_a_batch_size_that_fits(tiny_data):
    model = _model(tiny_data)

    with pytest.warns(UserWarning, match="batch_size=2 fits"):
        history = fit(small_gpu(model), tiny_data, epochs=1, batch_size=8, progress=False)
    assert history.stopped.startswith("CUDA out of memory at batch_size=8") and "intact" in history.stopped


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains(tiny_data, loss):
    history = fit(_model(tiny_data), tiny_data, epochs=1, batch_size=12, loss=loss, progress=False)
    assert history.stopped == "completed" and math.isfinite(history.epochs[0]["train_loss"])


def test_dice_of_one_object_logit_is_the_objects_dice_per_image_or_over_the_batch():
    from segnb.losses import Dice

    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 9)  # one object logit per pixel
    target = (torch.rand(3, 8, 9) > 0.6).long()
    target[1, :2] = 255  # void: left out of both sums
    valid = (target != 255).float()
    p, y = logits[:, 0].sigmoid() * valid, (target == 1).float()
    per_image = 1 - 2 * (p * y).sum((1, 2)) / (p + y).sum((1, 2))
    assert float(Dice(per_image=True)(logits, target)) == pytest.approx(float(per_image.mean()), rel=1e-5)
    whole = 1 - 2 * (p * y).sum() / (p + y).sum()
    assert float(Dice()(logits, target)) == pytest.approx(float(whole), rel=1e-5)
    assert float(Dice()(logits, target)) != pytest.approx(float(per_image.mean()), rel=1e-3)
    perfect = torch.where(target == 1, 30.0, -30.0)[:, None].float()
    assert float(Dice(per_image=True)(perfect, target)) < 1e-6


def test_class_weights_favour_rare_classes():
    w = class_weights([0.7, 0.25, 0.05, 0.0], "inverse")
    assert w[2] > w[1] > w[0] and w[3] == w.max()
    assert float(w.mean()) == pytest.approx(1.0)
    median = class_weights([0.5, 0.3, 0.2], "median")
    assert float(median[2] / median[0]) == pytest.approx(2.5)


def test_early_stopping(tiny_data):
    history = fit(_model(tiny_data), tiny_data, epochs=20, batch_size=12, lr=1e-9, progress=False,
                  callbacks=[EarlyStopping("miou", patience=2, mode="max", min_delta=0.5)])
    assert history.stopped.startswith("early stopping") and len(history.epochs) == 3


def test_csv_and_tensorboard_logs(tiny_data, tmp_path):
    fit(_model(tiny_data), tiny_data, epochs=2, batch_size=12, progress=False,
        callbacks=[CSVLogger(tmp_path / "log.csv"), TensorBoardLogger(tmp_path / "tb", every=1)])
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "iou_ring" in rows[0] and "miou" in rows[0]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_lr_find_restores_the_model(tiny_data):
    model = _model(tiny_data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, tiny_data, steps=12, batch_size=8)
    assert 1e-6 <= result["suggestion"] <= 1.0 and len(result["lrs"]) == len(result["losses"]) >= 3
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_evaluate_report_and_predict(tiny_data):
    model = _model(tiny_data, "unet-classic")
    history = fit(model, tiny_data, epochs=2, batch_size=8, lr=1e-2, progress=False)
    report = evaluate(model, tiny_data)
    assert report.miou == pytest.approx(history.last("miou"))
    assert len(report.per_image) == len(tiny_data["validation"])
    values = [r["miou"] for r in report.per_image]
    assert values == sorted(values)  # worst first
    assert [row["class"] for row in report.table()] == tiny_data.class_names
    assert "mIoU" in report.format()
    image, _ = tiny_data["validation"][0]
    out = predict(model, [image, image])
    assert out.probs.shape == (2, 7, 32, 32) and out.masks.shape == (2, 32, 32)
    assert torch.allclose(out.probs.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    odd = np.zeros((21, 27, 3), np.uint8)
    assert predict(model, odd).masks.shape == (1, 21, 27)


def test_precision_and_device_errors(tiny_data):
    from segnb.errors import SegnbError

    with pytest.raises(SegnbError, match="fp16 needs a CUDA GPU"):
        fit(_model(tiny_data), tiny_data, precision="fp16", device="cpu", progress=False)
    with pytest.raises(SegnbError, match="class_names=data.class_names"):
        fit(build_model("fcn32s", "vgg-tiny", num_classes=3), tiny_data, progress=False)
    history = fit(_model(tiny_data), tiny_data, epochs=1, batch_size=12, precision="bf16", progress=False)
    assert history.stopped == "completed"


@pytest.mark.parametrize("schedule", ["cosine_lr", "wsd_lr"])
def test_schedule_warms_up_then_decays(schedule):
    lrs = [getattr(train_schedules, schedule)(s, 100, 1.0, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.01)


def test_wsd_keeps_the_full_rate_until_its_last_fifth_whatever_the_planned_length():
    from segnb.train import wsd_lr

    assert all(wsd_lr(s, total, 1.0, 10) == 1.0 for total in (100, 150, 1000) for s in range(10, 80))
    assert wsd_lr(90, 100, 1.0, 10) == pytest.approx(0.505)  # half way down the decay
    assert cosine_lr(50, 100, 1.0, 10) < 0.6  # where cosine has spent half its rate already


def test_progress_formatting_is_pure():
    state = ProgressState(done=30, total=120, epoch=2, epochs=4, images=480, elapsed=12.0, loss=0.25)
    text = format_progress(state, width=8)
    assert "epoch 2/4" in text and "[##......]" in text and "40 img/s" in text and "ETA 00:36" in text


def test_cli_train_json_and_eval(tmp_path, capsys, monkeypatch):
    import segnb.data

    monkeypatch.setattr(segnb.data, "load_dataset", lambda source, **o: load_shapes(n=24, size=32, seed=0))
    assert main(["train", "--epochs", "1", "--arch", "fcn8s", "--encoder", "vgg-tiny", "--out",
                 str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 1 and 0 <= result["miou"] <= 1 and set(result["iou"]) >= {"ring", "sky"}
    assert load_model(result["model"]).spec["arch"] == "fcn8s"
    assert (tmp_path / "run" / "checkpoints" / "last" / "training.json").is_file()
    assert main(["eval", "--model", result["model"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["miou"] == pytest.approx(result["miou"])


def test_cli_demo_prints_the_per_class_table(tmp_path, capsys, monkeypatch):
    import segnb.data

    monkeypatch.setattr(segnb.data, "load_dataset", lambda source, **o: load_shapes(n=24, size=32, seed=0))
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "per-class IoU" in out and "ring" in out and "mIoU" in out


def test_training_thread_does_not_touch_signal_handlers(tiny_data):
    before = signal.getsignal(signal.SIGINT)
    result = {}
    thread = threading.Thread(target=lambda: result.update(h=fit(
        _model(tiny_data), tiny_data, epochs=1, batch_size=12, progress=False)))
    thread.start()
    thread.join(60)
    assert result["h"].stopped == "completed" and signal.getsignal(signal.SIGINT) is before


def test_augment_false_gives_the_training_loader_untouched_images(tiny_data):
    """fit(augment=False) (an ablation in notebook 06): no random flip or rescale of training pairs,
    on the streaming path and on the decoded cache."""
    from segnb.data.preprocess import normalize
    from segnb.infer import normalisation
    from segnb.train import Trainer

    options = dict(epochs=1, progress=False, augment_scale=(0.5, 2.0), image_size=32, cache=False)
    plain = Trainer(_model(tiny_data), tiny_data, augment=False, **options)
    augmented = Trainer(_model(tiny_data), tiny_data, **options)
    image, mask = tiny_data["train"][0]
    reference = plain.transform(train=False)(image, mask)
    torch.manual_seed(0)
    draws = [plain.train_loader.dataset[0] for _ in range(8)]
    assert all(torch.equal(x, reference[0]) and torch.equal(y, reference[1]) for x, y in draws)
    torch.manual_seed(0)
    changed = [augmented.transform(train=True)(image, mask) for _ in range(8)]
    assert any(not torch.equal(x, reference[0]) for x, _ in changed), "augmentation should change some draws"

    cached = Trainer(_model(tiny_data), tiny_data, augment=False, **{**options, "cache": "ram"})
    cached.open_feed()
    decoded = cached.train_loader.decoded
    originals = normalize(decoded.images, *normalisation(cached.unwrapped)).flatten(1)
    for images, _ in cached.train_loader:  # every batch image is one of the decoded images, untouched
        distance = torch.cdist(images.flatten(1), originals).min(dim=1).values
        assert distance.max() < 1e-4



# ---------------------------------------------------------------- the config: one place for defaults and checks


@pytest.mark.parametrize(("options", "message"), [
    ({"epochs": 2.5}, r"epochs must be a whole number \(e.g. epochs=1\), got 2.5"),
    ({"batch_size": 2.5}, r"batch_size must be a whole number"),
    ({"max_minutes": "5"}, r"max_minutes must be a number of minutes \(e.g. max_minutes=5\), got the string '5'"),
    ({"max_minutes": math.inf}, r"max_minutes=inf is no budget: leave max_minutes out"),
    ({"max_minutes": -1}, r"max_minutes must be a positive number"),
    ({"lr": math.nan}, r"lr must be a finite positive number"),
    ({"things": "cell"}, r"fit\(\) has no option 'things'.*build_model\('maskrcnn'"),
    ({"loss": "hinge"}, r"loss must be one of ce, weighted_ce"),
    ({"optimizer": "adam"}, r"optimizer must be 'adamw', 'sgd' or a function"),
    ({"cache": "gpu"}, r"cache must be one of"),
    ({"image_size": (32, 0)}, r"image_size must be a positive int or \(height, width\)"),
    ({"augment_scale": (2.0, 0.5)}, r"augment_scale must be \(lo, hi\) with 0 < lo <= hi"),
])
def test_bad_options_are_refused_before_any_work_with_the_fix(tiny_data, options, message, monkeypatch):
    from segnb.errors import SegnbError
    from segnb.train import api

    monkeypatch.setattr(api, "Trainer", None)  # no run is even set up
    model = _model(tiny_data)
    with pytest.raises(SegnbError, match=message):
        fit(model, tiny_data, progress=False, **options)


def test_a_model_built_with_one_thing_as_a_string_detects_that_class():
    from segnb.data import load_dataset

    shapes = load_dataset("shapes", n=8, size=32)
    model = build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things[0],
                        image_size=64)
    assert model.things == [shapes.things[0]]


def test_fit_the_cli_and_the_studio_take_their_defaults_from_the_config():
    import inspect

    from segnb.train import TrainConfig, lr_find

    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.lr, config.loss) == (10, None, 1e-3, "ce")
    assert inspect.signature(lr_find).parameters["batch_size"].default == config.batch_size
    text = inspect.getsource(__import__("segnb.train.api", fromlist=["fit"]).fit)
    assert "batch_size: int = " not in text  # fit repeats no default


def test_the_batch_size_defaults_to_the_device_and_the_run_records_the_one_it_used(tiny_data, tmp_path):
    from segnb.train import TrainConfig

    assert TrainConfig().for_device(torch.device("cpu")).batch_size == 8
    assert TrainConfig().for_device(torch.device("cuda", 0)).batch_size == 16  # no GPU needed to decide
    assert TrainConfig(batch_size=3).for_device(torch.device("cuda", 0)).batch_size == 3  # a given one stays
    fit(_model(tiny_data), tiny_data, epochs=1, checkpoint_dir=tmp_path, progress=False)
    meta, _ = load_checkpoint(tmp_path / "last")
    assert meta["config"]["batch_size"] == 8  # resume runs with the batch size the run had


def test_a_resumed_run_is_rebuilt_from_the_config_saved_with_its_checkpoint(tiny_data, tmp_path):
    class StopAfterOne(Callback):
        order = 100

        def on_epoch_end(self, trainer):
            raise StopTraining("later")

    options = dict(epochs=3, batch_size=4, lr=3e-3, scheduler="constant", seed=5, augment=False)
    fit(_model(tiny_data), tiny_data, checkpoint_dir=tmp_path, progress=False, callbacks=[StopAfterOne()],
        **options)
    meta, _ = load_checkpoint(tmp_path / "last")
    assert {k: meta["config"][k] for k in options} == options
    seen = {}

    class Look(Callback):
        def on_fit_start(self, trainer):
            seen.update(trainer.config.to_dict())

    history = fit(_model(tiny_data), tiny_data, resume=tmp_path, progress=False, callbacks=[Look()])
    assert {k: seen[k] for k in options} == options and seen["resume"] == str(tmp_path)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3] and history.stopped == "completed"
    assert history.steps == 3 * math.ceil(len(tiny_data["train"]) / 4)  # batch 4 from the checkpoint, not 16
    history = fit(_model(tiny_data), tiny_data, resume=tmp_path, epochs=4, progress=False)  # given: on top
    assert len(history.epochs) == 4


# ---------------------------------------------------------------- interrupts raised by callbacks


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_raised_by_a_callback_never_reads_as_completed(tiny_data, raised):
    class Raise(Callback):
        def on_step_end(self, trainer):
            if trainer.step == 2:
                raise raised()

    seen = {}

    class Last(Callback):
        def on_fit_end(self, trainer):
            seen["stopped"] = trainer.history.stopped

    model = _model(tiny_data)
    with pytest.raises(raised):
        fit(model, tiny_data, epochs=2, batch_size=4, progress=False, callbacks=[Raise(), Last()])
    expected = "interrupted at step 2" if raised is KeyboardInterrupt else "failed: SystemExit"
    assert seen["stopped"] == expected

    handle = fit(_model(tiny_data), tiny_data, epochs=2, batch_size=4, progress=False, callbacks=[Raise()],
                 background=True)
    handle._thread.join(120)
    assert handle.done and handle.status == handle.history.stopped == expected
    assert handle.failed is (raised is SystemExit) and handle.interrupted is (raised is KeyboardInterrupt)
    assert expected in repr(handle)
    if raised is SystemExit:
        with pytest.raises(SystemExit):
            handle.wait()
    else:
        assert handle.wait().stopped == expected


# ---------------------------------------------------------------- accelerate, out of memory


def test_accelerate_adds_no_mixed_precision_of_its_own_whatever_its_environment_says(tiny_data, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    seen = {}

    class Look(Callback):
        def on_fit_start(self, trainer):
            seen["accelerate"] = trainer.accelerator.mixed_precision
            seen["scaler"] = getattr(trainer.accelerator, "scaler", None)
            seen["precision"] = trainer.precision

    history = fit(_model(tiny_data), tiny_data, epochs=1, batch_size=8, progress=False, callbacks=[Look()])
    assert history.stopped == "completed"
    assert seen == {"accelerate": "no", "scaler": None, "precision": "fp32"}


def test_the_out_of_memory_probe_runs_after_the_exception_is_gone(tiny_data, monkeypatch):
    import sys

    from segnb.train import step

    during = []
    real = step.largest_batch_that_fits

    def probe(*args, **kwargs):
        during.append(sys.exc_info())
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "largest_batch_that_fits", probe)
    from segnb.train import loop

    monkeypatch.setattr(loop, "largest_batch_that_fits", probe)
    with pytest.warns(UserWarning, match="batch_size=2 fits"):
        history = fit(small_gpu(_model(tiny_data), fits=2), tiny_data, epochs=1, batch_size=8, progress=False)
    assert history.stopped.startswith("CUDA out of memory at batch_size=8")
    assert during == [(None, None, None)]
