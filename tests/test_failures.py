"""Issue 14, training and inference: never silently wrong, never a failure that looks like success."""

import json
import math
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import nan_loss, small_gpu, tiny_model
from PIL import Image

from segnb import inspect as ins
from segnb.callbacks import Callback
from segnb.checkpoint import load_checkpoint, restore_rng_state, rng_state
from segnb.cli import main
from segnb.data import SegTransform, load_shapes
from segnb.errors import CheckpointError, DatasetError, MixedSizesError, SegnbError
from segnb.infer import Inference, normalisation, to_tensor
from segnb.models import build_model, load_model
from segnb.train import Trainer, evaluate, fit, lr_find, predict


@pytest.fixture(scope="module")
def data():
    return load_shapes(n=24, size=32, seed=1)


def _model(data, arch="fcn8s", seed=0):
    return tiny_model(data, arch, seed)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Boom(Callback):
    """Raises at one step, as a buggy callback would; keeps the trainer for the test to look at."""

    def __init__(self, step=2):
        self.step, self.trainer, self.weights = step, None, None

    def on_fit_start(self, trainer):
        self.trainer = trainer

    def on_step_end(self, trainer):
        if trainer.step == self.step - 1:
            self.weights = _state(trainer.unwrapped)
        if trainer.step == self.step:
            raise RuntimeError("boom")


# ---------------------------------------------------------------- item 1: evaluation refuses a class mismatch


def test_evaluate_refuses_a_model_for_other_classes(data):
    twelve = build_model("fcn8s", "vgg-tiny", num_classes=12)
    with pytest.raises(SegnbError, match=r"predicts 12 classes but the dataset 'shapes' has 7") as info:
        evaluate(twelve, data)
    assert "class_names=data.class_names" in str(info.value)
    with pytest.raises(SegnbError, match=r"predicts 12 classes but the dataset 'shapes' has 7") as info:
        fit(twelve, data, epochs=1, progress=False, run=False)  # training refuses it the same way
    assert "class_names=data.class_names" in str(info.value)

    class Bare(torch.nn.Module):  # no num_classes attribute: the logits say it
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 9, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(SegnbError, match="predicts 9 classes"):
        evaluate(Bare(), data)


def test_the_classical_table_refuses_a_model_for_other_classes(data):
    from segnb.classical import compare

    with pytest.raises(SegnbError, match="predicts 12 classes"):
        compare(data, methods=("kmeans",), images=1, model=build_model("fcn8s", "vgg-tiny", num_classes=12))


# ---------------------------------------------------------------- item 6: a failure says "failed" everywhere


def test_a_callback_error_fails_the_run_and_propagates_with_the_model_safe(data, tmp_path):
    model, boom = _model(data), Boom(step=5)
    with pytest.raises(RuntimeError, match="boom") as info:
        fit(model, data, epochs=3, batch_size=8, checkpoint_dir=tmp_path, callbacks=[boom], progress=False)
    history = boom.trainer.history
    assert history.stopped == "failed: boom" and history.steps == 5 and len(history.epochs) == 1
    assert any("training failed at step 5" in note for note in info.value.__notes__)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1  # the last checkpoint is intact
    history = fit(model, data, epochs=1, batch_size=8, progress=False)  # and the model is free again
    assert history.stopped == "completed"


@pytest.mark.parametrize("cache", [False, "auto"])
def test_a_bad_mask_mid_epoch_fails_the_run_and_leaves_batch_norm_as_it_was(data, cache):
    bad = load_shapes(n=24, size=32, seed=1)
    split = bad["train"]
    real = split._load

    def load(index):
        image, mask = real(index)
        return image, (np.full_like(mask, 42) if index == len(split) - 1 else mask)  # not in the first batch

    split._load = load
    model, seen = _model(bad, "unet-classic"), {}
    start = [b.clone() for b in model.buffers()]

    class Watch(Callback):
        def on_fit_start(self, trainer):
            seen["trainer"] = trainer

        def on_step_end(self, trainer):
            seen["buffers"] = [b.clone() for b in trainer.unwrapped.buffers()]

    with pytest.raises(DatasetError, match="42"):
        fit(model, bad, epochs=1, batch_size=4, callbacks=[Watch()], progress=False, cache=cache)
    assert seen["trainer"].history.stopped.startswith("failed: ") and "42" in seen["trainer"].history.stopped
    if cache:  # the cache's single pass checks every mask before the first step: nothing was trained
        assert "buffers" not in seen
    for before, after in zip(seen.get("buffers", start), model.buffers(), strict=True):
        assert torch.equal(before, after)


def test_a_full_disk_mid_run_fails_the_run(data, tmp_path, monkeypatch):
    import segnb.checkpoint

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segnb.checkpoint, "save_model", disk_full)
    boom = Boom(step=10**6)  # never raises: only keeps the trainer
    with pytest.raises(OSError, match="No space left"):
        fit(_model(data), data, epochs=2, batch_size=8, checkpoint_dir=tmp_path, callbacks=[boom], progress=False)
    assert boom.trainer.history.stopped == "failed: [Errno 28] No space left on device"


def test_background_failure_shows_in_the_handle(data):
    handle = fit(_model(data), data, epochs=3, batch_size=8, callbacks=[Boom(step=2)], background=True,
                 progress=False)
    deadline = time.monotonic() + 60
    while not handle.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle.done and handle.failed and handle.status == "failed: boom"
    assert handle.history.stopped == "failed: boom" and "failed: boom" in repr(handle)
    assert handle.stop().stopped == "failed: boom"
    with pytest.raises(RuntimeError, match="boom"):
        handle.wait()


def test_train_panel_says_failed_not_completed():
    from segnb.ui.common import SharedState
    from segnb.ui.train_panel import TrainPanel

    state = SharedState()
    state.data = load_shapes(n=24, size=32, seed=1)
    state.model = _model(state.data)
    panel = TrainPanel(state, callbacks=[Boom(step=2)])
    panel.epochs.value = 2
    panel.start_button.click()
    with pytest.raises(RuntimeError, match="boom"):
        panel.handle.wait(60)
    assert panel.status.value.startswith("failed: boom") and "completed" not in panel.status.value
    assert panel.start_button.disabled is False


def test_cli_train_failure_exits_non_zero_with_one_line(tmp_path, capsys, monkeypatch):
    import segnb.checkpoint
    import segnb.data

    monkeypatch.setattr(segnb.data, "load_dataset", lambda source, **o: load_shapes(n=24, size=32, seed=0))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segnb.checkpoint, "save_model", disk_full)
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]) == 1
    captured = capsys.readouterr()
    assert "training failed: OSError: [Errno 28] No space left on device" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


# ---------------------------------------------------------------- item 7: problems found before the first epoch


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, trainer):
        self.steps += 1


def test_an_output_folder_that_cannot_be_written_is_found_before_the_first_step(data, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    counter = CountSteps()
    with pytest.raises(SegnbError, match="cannot be (written|made)"):  # the run folder is made first
        fit(_model(data), data, epochs=2, batch_size=8, checkpoint_dir=blocker / "run", callbacks=[counter],
            progress=False)
    assert counter.steps == 0

    import pathlib

    def read_only(self, payload):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)  # tests run as root: chmod would not stop us
    with pytest.raises(CheckpointError, match="Permission denied"):
        fit(_model(data), data, epochs=2, batch_size=8, checkpoint_dir=tmp_path / "ro", callbacks=[counter],
            progress=False)
    assert counter.steps == 0


def test_a_full_output_folder_is_found_before_the_first_step(data, tmp_path, monkeypatch):
    import segnb.checkpoint

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(segnb.checkpoint.shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))
    counter = CountSteps()
    with pytest.raises(CheckpointError, match=r"has 1 MiB free.*need about"):
        fit(_model(data), data, epochs=2, batch_size=8, checkpoint_dir=tmp_path, callbacks=[counter],
            progress=False)
    assert counter.steps == 0


def test_the_first_batch_is_checked_before_training(data):
    model = _model(data)
    model.std = (0.0, 0.0, 0.0)  # a broken normalisation: every input becomes inf or nan
    with pytest.raises(SegnbError, match="NaN or infinite"):
        fit(model, data, epochs=1, batch_size=8, progress=False)

    class FiveClasses(torch.nn.Module):  # says nothing about its classes; its output does
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(SegnbError, match="outputs 5 classes but the dataset has 7"):
        fit(FiveClasses(), data, epochs=1, batch_size=8, progress=False)


def test_resume_into_a_copied_run_folder(data, tmp_path):
    options = dict(batch_size=8, progress=False, seed=1)
    fit(_model(data), data, epochs=1, checkpoint_dir=tmp_path / "a", **options)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copies the folders the links point to
    assert (tmp_path / "b" / "last").is_dir() and not (tmp_path / "b" / "last").is_symlink()
    history = fit(_model(data), data, epochs=2, checkpoint_dir=tmp_path / "b", resume=tmp_path / "b", **options)
    assert history.stopped == "completed" and [r["epoch"] for r in history.epochs] == [1, 2]
    assert (tmp_path / "b" / "last").is_symlink() and load_checkpoint(tmp_path / "b")[0]["epoch"] == 2
    assert not list((tmp_path / "b").glob(".*.link-*"))
    load_model(tmp_path / "b" / "last")


def test_orphans_of_killed_writes_are_cleaned_at_the_next_start(data, tmp_path):
    fit(_model(data), data, epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    live = {(tmp_path / t).resolve() for t in ("last", "best")}
    for name in (".last-00000099-abc123", ".best-00000099-def456"):  # what kill -9 mid-write leaves
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 1000)
    os.symlink(".last-gone", tmp_path / ".last.link-abc123")
    fit(_model(data), data, epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=tmp_path, progress=False)
    hidden = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert hidden == {(tmp_path / t).resolve().name for t in ("last", "best")}
    assert not any(path.exists() for path in live - {(tmp_path / t).resolve() for t in ("last", "best")})


# ---------------------------------------------------------------- item 8: non-finite loss


class Explode(Callback):
    """The weights run away (as with a too-high learning rate) before the loss turns NaN."""

    def on_step_end(self, trainer):
        if trainer.step == 1:
            with torch.no_grad():
                for p in trainer.unwrapped.parameters():
                    p.mul_(1e30)


def test_non_finite_loss_without_checkpoints_goes_back_to_the_weights_in_memory(data):
    model = _model(data)
    start = _state(model)
    history = fit(model, data, epochs=2, batch_size=8, loss=nan_loss(2, then_on=True), callbacks=[Explode()], progress=False)
    assert history.stopped.startswith("non-finite loss (nan) at step 1 (epoch 1)")
    assert "put back to its weights from before training started" in history.stopped
    assert "No checkpoint was written (no checkpoint_dir)" in history.stopped and "/last" not in history.stopped
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key
    assert max(float(p.detach().abs().max()) for p in model.parameters()) < 1e3


def test_non_finite_loss_names_only_checkpoints_that_exist(data, tmp_path):
    history = fit(_model(data), data, epochs=2, batch_size=8, loss=nan_loss(2, then_on=True), checkpoint_dir=tmp_path,
                  progress=False)
    assert "No checkpoint was written yet" in history.stopped and str(tmp_path) not in history.stopped
    assert not (tmp_path / "last").exists()


def test_the_out_of_memory_probe_uses_the_training_step_and_leaves_batch_norm_alone(data):
    model = _model(data, "unet-classic")
    seen = {}
    with pytest.warns(UserWarning, match="batch_size=2 fits"):
        history = fit(small_gpu(model, seen=seen), data, epochs=1, batch_size=8, precision="bf16", progress=False)
    assert history.stopped.startswith("CUDA out of memory at batch_size=8")
    assert seen["autocast"]  # the probe ran the training step's forward, under its autocast
    for before, after in zip(seen["buffers"], model.buffers(), strict=True):
        assert torch.equal(before, after)  # the probe's forward passes moved no statistics


# ---------------------------------------------------------------- item 9: one fit per model at a time


class Pause(Callback):
    """Holds the training thread at a step boundary until the test lets it go."""

    def __init__(self, at=2):
        self.at, self.reached, self.go = at, threading.Event(), threading.Event()

    def on_step_end(self, trainer):
        if trainer.step == self.at:
            self.reached.set()
            self.go.wait(60)


def test_a_second_fit_on_a_model_being_trained_is_refused(data):
    model, pause = _model(data), Pause()
    handle = fit(model, data, epochs=3, batch_size=8, callbacks=[pause], background=True, progress=False)
    try:
        assert pause.reached.wait(60)
        with pytest.raises(SegnbError, match="already being trained"):
            fit(model, data, epochs=1, batch_size=8, progress=False)
        with pytest.raises(SegnbError, match="already being trained"):
            lr_find(model, data, steps=3, batch_size=8)
    finally:
        pause.go.set()
        handle.stop()
    assert handle.history.stopped == "stopped by the user"
    assert fit(model, data, epochs=1, batch_size=8, progress=False).stopped == "completed"


def test_start_in_a_second_panel_is_refused_while_the_first_trains():
    from segnb.ui.common import SharedState
    from segnb.ui.train_panel import TrainPanel

    state, pause = SharedState(), Pause()
    state.data = load_shapes(n=24, size=32, seed=1)
    state.model = _model(state.data)
    first, second = TrainPanel(state, callbacks=[pause]), TrainPanel(state)
    first.start_button.click()
    try:
        assert pause.reached.wait(60)
        second.start_button.click()
        assert "already being trained" in second.errors.value
        assert second.start_button.disabled is False and second.handle is None
    finally:
        pause.go.set()
        first.handle.stop()
    assert "stopped by the user" in first.status.value


# ---------------------------------------------------------------- one home for inference


def test_preprocessing_is_the_datasets_own(data):
    model = _model(data)
    image, mask = data["train"][0]
    mean, std = normalisation(model)
    assert (mean, std) == (model.mean, model.std)
    expected, _ = SegTransform(mean=mean, std=std)(image, mask)
    assert torch.allclose(to_tensor(image, mean, std), expected)


def test_predict_restores_each_modules_mode_and_takes_images_of_any_size(data):
    model = _model(data, "unet-classic")
    model.train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # a frozen batch norm, as in fine-tuning
    modes = {name: m.training for name, m in model.named_modules()}
    images = [np.zeros((32, 32, 3), np.uint8), np.full((21, 27, 3), 200, np.uint8), np.zeros((32, 32, 3), np.uint8)]
    out = predict(model, images, batch_size=2)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert [tuple(p.shape) for p in out.probs] == [(7, 32, 32), (7, 21, 27), (7, 32, 32)]
    assert [tuple(m.shape) for m in out.masks] == [(32, 32), (21, 27), (32, 32)]
    alone = predict(model, images[1])
    assert torch.allclose(alone.probs[0], out.probs[1], atol=1e-6)
    out.probs[0] *= 2  # ordinary tensors, not inference-mode ones


def test_inference_uses_the_training_precision(data):
    model = _model(data)
    fit(model, data, epochs=1, batch_size=8, precision="bf16", progress=False)
    with Inference(model) as run:
        assert run.precision == "bf16"
        assert run(run.batch(data["train"][0][0])).dtype == torch.float32
    assert Inference(model, precision="fp32").precision == "fp32"


def test_looking_at_a_model_while_it_trains_never_touches_the_training_model(data):
    model, pause = _model(data, "unet-classic"), Pause()
    handle = fit(model, data, epochs=3, batch_size=4, callbacks=[pause], background=True, progress=False)
    try:
        assert pause.reached.wait(60)
        before = _state(model)
        image = data["validation"][0][0]
        assert all(m.training for m in model.modules())
        probs = predict(model, image).probs[0]
        cam = ins.grad_cam(model, image, target_class=1, stage=-2)
        stages = ins.stage_features(model, image)
        decoder = ins.decoder_activations(model, image)
        report = evaluate(model, data)
        assert all(m.training for m in model.modules())  # no batch-norm mode switch
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # no hooks
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
        with Inference(model) as run:
            assert run.module is not model  # a copy of the weights, taken between two steps
            for key, value in run.module.state_dict().items():
                assert torch.equal(value, before[key]), key
        assert probs.shape == (7, 32, 32) and cam.shape == (32, 32) and stages and decoder
        assert 0 <= report.miou <= 1
    finally:
        pause.go.set()
        handle.stop()
    assert handle.history.stopped == "stopped by the user"


def test_attention_maps_while_a_vit_trains_leave_its_attention_alone(data):
    torch.manual_seed(0)
    model = build_model("setr-pup", "test_vit", class_names=data.class_names)
    vit = ins.find_vit(model)
    for block in vit.blocks:
        block.attn.fused_attn = True
    pause = Pause(at=1)
    handle = fit(model, data, epochs=1, batch_size=8, callbacks=[pause], background=True, progress=False)
    try:
        assert pause.reached.wait(120)
        seen = []
        for block in vit.blocks:  # records every module that runs (copies of this hook included)
            block.attn.register_forward_pre_hook(lambda m, i: seen.append(m))
        maps = ins.attention_maps(model, data["train"][0][0])
        originals = {id(block.attn) for block in vit.blocks}
        assert len(seen) == len(vit.blocks) and not originals & {id(m) for m in seen}  # ran on a copy
        assert all(block.attn.fused_attn for block in vit.blocks)
        assert maps.fused_was_on and np.allclose(maps.attn.sum(-1), 1.0, atol=1e-4)
    finally:
        for block in vit.blocks:
            block.attn._forward_pre_hooks.clear()
        pause.go.set()
        handle.wait(120)


def test_lr_find_shares_the_training_step_and_never_suggests_from_the_nan_region(data, monkeypatch):
    calls = []
    real = getattr(Trainer, "train_step", None)

    def counted(self, images, masks, lr):
        calls.append(lr)
        return real(self, images, masks, lr)

    monkeypatch.setattr(Trainer, "train_step", counted, raising=False)
    model = _model(data)
    before = _state(model)
    result = lr_find(model, data, start_lr=1e-6, end_lr=1.0, steps=20, batch_size=8, loss=nan_loss(10, then_on=True))
    assert len(result["losses"]) == 9 and all(math.isfinite(v) for v in result["losses"])
    assert result["suggestion"] in result["lrs"][:9]
    assert len(calls) == 10  # fit's own step, ten times: the tenth loss was NaN and the test ended there
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------- smaller defects


def test_interrupted_cli_train_exits_130_and_its_step_counts_agree(tmp_path, capsys, monkeypatch,
                                                                   sigint_as_in_a_kernel):
    import segnb.data
    import segnb.models

    monkeypatch.setattr(segnb.data, "load_dataset", lambda source, **o: load_shapes(n=24, size=32, seed=0))
    real_build = segnb.models.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward, calls = model.forward, []

        def interrupting(x):
            if model.training:
                calls.append(1)
                if len(calls) == 8:  # Ctrl+C arrives in the middle of step 8 (epoch 2 of 5 steps each)
                    os.kill(os.getpid(), signal.SIGINT)
            return forward(x)

        model.forward = interrupting
        return model

    monkeypatch.setattr(segnb.models, "build_model", build)
    code = main(["train", "--epochs", "3", "--batch-size", "4", "--out", str(tmp_path / "run"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 130
    assert result["stopped"] == "interrupted at step 8" and result["steps"] == 8 and result["epochs"] == 1


def test_resume_with_another_optimizer_says_so(data, tmp_path):
    fit(_model(data), data, epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    model = _model(data, seed=5)
    before = _state(model)
    with pytest.raises(CheckpointError, match="written with optimizer 'adamw'.*uses 'sgd'"):
        fit(model, data, epochs=2, batch_size=8, optimizer="sgd", resume=tmp_path, progress=False)
    for key, value in model.state_dict().items():  # refused before anything was loaded into it
        assert torch.equal(value, before[key]), key
    assert fit(_model(data), data, epochs=2, batch_size=8, resume=tmp_path, progress=False).stopped == "completed"


def test_unknown_scheduler_is_a_clear_error(data):
    with pytest.raises(SegnbError, match="scheduler must be 'wsd', 'cosine', 'constant' or a function.*got 'cosin'"):
        fit(_model(data), data, scheduler="cosin", progress=False)


def test_resume_restores_the_cuda_random_state(monkeypatch):
    fake = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [fake])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    saved = rng_state()
    assert torch.equal(saved["rng.cuda.0"], fake)
    saved["rng.cuda.1"] = fake + 1  # written on two GPUs, resumed on one
    restore_rng_state(saved)
    assert len(restored) == 1 and torch.equal(restored[0][0], fake) and restored[0][1] == 0


# ---------------------------------------------------------------- issue 27


class Boundaries(Callback):
    """Keeps the model's state at every step boundary (on_step_end runs between two steps)."""

    def __init__(self):
        self.states = []

    def on_step_end(self, trainer):
        self.states.append(_state(trainer.unwrapped))


def test_save_model_during_a_background_fit_saves_the_weights_from_between_two_steps(data, tmp_path):
    """Before, save_model read the state in the middle of a step: batch-norm statistics already
    moved by the forward pass, parameters not yet stepped (31 of 40 saves)."""
    from safetensors.torch import load_file

    from segnb.models import save_model

    model, boundaries, mid_step, saving = _model(data), Boundaries(), threading.Event(), threading.Event()
    forward, calls = model.forward, []

    def forward_that_lingers(x):
        out = forward(x)  # batch-norm statistics have moved; the optimizer has not stepped yet
        calls.append(model.training)
        if model.training and calls.count(True) == 3:
            mid_step.set()
            saving.wait(10)
            time.sleep(0.3)  # time for save_model to read a half-done step
        return out

    model.forward = forward_that_lingers
    handle = fit(model, data, epochs=1, batch_size=8, callbacks=[boundaries], background=True, progress=False)
    assert mid_step.wait(60)
    saving.set()
    folder = save_model(model, tmp_path / "saved")
    handle.wait()
    saved = load_file(str(folder / "model.safetensors"))
    assert any(all(torch.equal(saved[k], state[k].cpu()) for k in saved) for state in boundaries.states)
    assert any("running_mean" in k for k in saved)  # the model has batch-norm statistics to get wrong


def _two_class_folder(root, n=6, size=32):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        mask[rng.integers(0, size // 2):, rng.integers(0, size // 2):] = 1
        picture = np.where(mask[:, :, None] == 1, 200, 40) + rng.integers(0, 30, (size, size, 3))
        Image.fromarray(picture.astype(np.uint8)).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    return root


def test_masks_rewritten_on_disk_are_decoded_again_not_served_from_the_cache(tmp_path):
    """Before, a second fit(cache="ram") trained and validated on the old masks while evaluate used
    the new ones. The decoded cache is keyed by each file's identity (inode, size, times)."""
    from segnb.data import load_dataset

    root = _two_class_folder(tmp_path)
    data = load_dataset(root, class_names=["bg", "fg"], val_fraction=0.5)
    model = _model(data)
    fit(model, data, epochs=1, batch_size=4, cache="ram", progress=False)
    for path in (root / "masks").iterdir():  # the labels swapped: every old score is wrong now
        mask = np.asarray(Image.open(path))
        Image.fromarray((1 - mask).astype(np.uint8)).save(path)
    history = fit(model, data, epochs=1, batch_size=4, cache="ram", progress=False)
    report = evaluate(model, data)
    assert history.last("miou") == pytest.approx(report.miou, abs=1e-3)
    flipped = load_dataset(root, class_names=["bg", "fg"], val_fraction=0.5)
    assert np.array_equal(flipped["validation"][0][1], data["validation"][0][1])


def _mixed_size_folder(root, instances=False):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks") + (("instances",) if instances else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate([(24, 24), (32, 20), (24, 24), (32, 20), (24, 24), (32, 20)]):
        mask = np.zeros((h, w), np.uint8)
        mask[4:12, 4:12] = 1
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"m{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"m{i}.png")
        if instances:
            Image.fromarray(mask).save(root / "instances" / f"m{i}.png")
    return root


@pytest.mark.parametrize("cache", ["auto", False])
def test_mixed_image_sizes_are_refused_before_the_first_step_with_the_fix(tmp_path, cache):
    """Before, a folder of mixed sizes with batch_size=4 and no image_size ended in torch's raw
    'stack expects each tensor to be equal size' (semantic models, Mask R-CNN, segnb train)."""
    from segnb.data import load_dataset

    data = load_dataset(_mixed_size_folder(tmp_path / "d"), class_names=["bg", "fg"], val_fraction=0.5)
    model = _model(data)
    before = _state(model)
    steps = CountSteps()
    with pytest.raises(MixedSizesError, match=r"different sizes \(\d+x\d+ and \d+x\d+.*Pass image_size=") as error:
        fit(model, data, epochs=1, batch_size=4, cache=cache, callbacks=[steps], progress=False)
    assert "stack expects" not in str(error.value) and steps.steps == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert fit(model, data, epochs=1, batch_size=4, cache=cache, image_size=24, progress=False).stopped == "completed"
    assert fit(model, data, epochs=1, batch_size=1, cache=cache, progress=False).stopped == "completed"


def test_mixed_image_sizes_are_refused_for_mask_rcnn_and_segnb_train(tmp_path, capsys):
    from segnb.data import load_dataset

    folder = _mixed_size_folder(tmp_path / "d", instances=True)
    data = load_dataset(folder, class_names=["bg", "cell"], things=["cell"], val_fraction=0.5)
    model = build_model("maskrcnn", "test_resnet", class_names=data.class_names, things=["cell"])
    with pytest.raises(SegnbError, match="different sizes.*Pass image_size="):
        fit(model, data, epochs=1, batch_size=4, progress=False)
    code = main(["train", "--dataset", str(folder), "--epochs", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0 and "different sizes" in err and "--image-size" in err and "Traceback" not in err
