"""Issue 13 in fit(): the decoded cache, augmentation on the device, a step without host syncs,
validation with the training loss, a time budget that drives the schedule, compile with a fallback."""

import io
import math
import os

import nbformat
import numpy as np
import pytest
import torch
from conftest import nan_loss
from conftest import tiny_model as _model
from nbclient import NotebookClient
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import segnb.train as train_module
from segnb.callbacks import Callback
from segnb.data import load_dataset, load_shapes
from segnb.data.cache import STATS, CachedBatches, cached_split, decode_threads
from segnb.data.export import export_folder
from segnb.infer import normalisation
from segnb.train import TrainConfig, Trainer, fit


@pytest.fixture(scope="module")
def data():
    return load_shapes(n=40, size=32, seed=3)




class Lines:
    """A progress renderer that keeps what it would print."""

    def __init__(self):
        self.notes = []

    def update(self, state, force=False): ...
    def close(self, state): ...

    def note(self, text):
        self.notes.append(text)


def _progress():
    from segnb.callbacks import ProgressCallback

    renderer = Lines()
    return ProgressCallback(renderer), renderer


# ---------------------------------------------------------------- 1. which path the data takes


def test_a_cached_run_takes_batches_from_the_cache_and_says_why(data):
    progress, lines = _progress()
    seen = {}

    class Watch(Callback):
        def on_step_end(self, trainer):
            seen["loader"] = trainer.train_loader

    before = dict(STATS)
    fit(_model(data), data, epochs=1, batch_size=8, progress=progress, callbacks=[Watch()])
    assert isinstance(seen["loader"], CachedBatches) and seen["loader"].decoded.images.dtype == torch.uint8
    assert len(lines.notes) == 1 and "kept in RAM" in lines.notes[0] and lines.notes[0].startswith("data: ")
    fit(_model(data), data, epochs=1, batch_size=8, progress=False)  # the second fit reuses the cold pass
    assert STATS["hits"] >= before["hits"] + 2


def test_cache_false_streams_through_a_dataloader_and_says_so(data):
    progress, lines = _progress()
    trainer = Trainer(_model(data), data, epochs=1, batch_size=8, cache=False, num_workers=0, progress=progress)
    history = trainer.run()
    assert history.stopped == "completed" and isinstance(trainer.train_loader, torch.utils.data.DataLoader)
    assert "cache=False" in lines.notes[0]


def test_num_workers_auto_comes_from_the_cpu_count(data, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(5)))
    assert train_module.auto_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert train_module.auto_workers() == 8 and decode_threads() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert train_module.auto_workers() == 0 and decode_threads() == 2  # no workers: the cold pass uses threads
    trainer = Trainer(_model(data), data, epochs=1, cache=False, progress=False)
    assert trainer.train_loader.num_workers == 0
    trainer.close()


def test_images_of_different_sizes_without_image_size_stream_and_say_why(tmp_path):
    root = export_folder(load_shapes(n=12, size=32, seed=0), tmp_path / "mixed")
    for folder, suffix, resample in (("images", "jpg", Image.BILINEAR), ("masks", "png", Image.NEAREST)):
        path = sorted((root / "train" / folder).glob(f"*.{suffix}"))[0]
        Image.open(path).resize((40, 36), resample).save(path)
    mixed = load_dataset(str(root))
    progress, lines = _progress()
    history = fit(_model(mixed), mixed, epochs=1, batch_size=1, progress=progress)
    assert history.stopped == "completed"
    assert "different sizes" in lines.notes[0] and "image_size" in lines.notes[0]


def test_the_cache_follows_the_datasets_ignore_index_and_classes(data):
    trainer = Trainer(_model(data), data, epochs=1, batch_size=8, progress=False)
    trainer.open_feed()
    decoded = trainer.train_loader.decoded
    assert decoded.ignore_index == data.ignore_index and decoded.num_classes == data.num_classes
    x, y = data[data.train_split][0]
    assert torch.equal(decoded.labels(decoded.masks[:1])[0], torch.from_numpy(y).long())
    trainer.close()


def test_validation_striding_never_pads_or_repeats_an_image(data):
    decoded = Trainer(_model(data), data, epochs=1, batch_size=8, progress=False)
    decoded.open_feed()
    split = decoded.eval_loader.decoded
    decoded.close()
    seen = []
    for rank in range(3):
        batches = CachedBatches(split, 2, "cpu", rank=rank, world=3, pad=False, mean=(0, 0, 0), std=(1, 1, 1))
        order = batches._order().tolist()
        assert len(batches) == math.ceil(len(order) / 2)
        seen += order
    assert sorted(seen) == list(range(len(split)))


# ---------------------------------------------------------------- 2. augmentation on the device


def test_augment_false_trains_on_the_images_as_they_are(data):
    trainer = Trainer(_model(data), data, epochs=1, batch_size=8, augment=False, augment_scale=(0.5, 2.0),
                      progress=False)
    trainer.open_feed()
    assert trainer.train_loader.augment is False
    trainer.close()
    trainer = Trainer(_model(data), data, epochs=1, batch_size=8, augment_scale=(0.5, 2.0), progress=False)
    trainer.open_feed()
    loader = trainer.train_loader
    assert loader.augment and loader.scale == (0.5, 2.0)
    assert (loader.mean, loader.std) == normalisation(trainer.unwrapped)
    trainer.close()


# ---------------------------------------------------------------- 3. the step without host syncs


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_bad_step_is_skipped_on_the_device_named_and_the_schedule_does_not_move(optimizer, monkeypatch):
    data = load_shapes(n=80, size=32, seed=4)  # 16 steps of 4 in one epoch: the flag is read at its end
    model = _model(data, "unet-classic")  # batch norm
    states, reads = {}, []
    real_check = Trainer.check_flag

    def counted(self):
        reads.append(self.step)
        return real_check(self)

    monkeypatch.setattr(Trainer, "check_flag", counted)

    class Record(Callback):
        def on_fit_start(self, trainer):
            states["start"] = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}

        def on_step_end(self, trainer):
            states[trainer.step] = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
            states["trainer"] = trainer

    history = fit(model, data, epochs=1, batch_size=4, optimizer=optimizer, loss=nan_loss(6),
                  callbacks=[Record()], progress=False)
    trainer = states["trainer"]
    assert history.stopped.startswith("non-finite loss (nan) at step 5 (epoch 1)")
    assert trainer.step == 5 and history.steps == 5  # the skipped steps did not happen
    assert reads and len(reads) <= trainer.steps_per_epoch // train_module.SYNC_EVERY + 1  # not every step
    after_good = states[5]  # weights after the 5 good steps
    parameters = {name for name, _ in trainer.unwrapped.named_parameters()}
    for step in range(6, trainer.steps_per_epoch + 1):  # the bad step and every one after it changed no weight
        for key in parameters:
            assert torch.equal(states[step][key], after_good[key]), (step, key)
    # Batch-norm statistics moved in the skipped forward passes; the stop put everything back to the
    # weights from before training (no epoch had completed), statistics included.
    for key, value in trainer.unwrapped.state_dict().items():
        assert torch.equal(value, states["start"][key]), key
    if optimizer == "adamw":  # the optimizer counted only the applied steps
        counts = {float(s["step"]) for s in trainer.optimizer.state.values()}
        assert counts == {5.0}


def test_a_custom_optimizer_reads_the_flag_every_step(data):
    model = _model(data)
    history = fit(model, data, epochs=1, batch_size=8, loss=nan_loss(2), progress=False,
                  optimizer=lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True))
    assert history.stopped.startswith("non-finite loss (nan) at step 1 (epoch 1)")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- 4. validation


def test_validation_loss_is_the_training_loss_function_on_the_same_batch():
    data = load_shapes(n=24, size=32, seed=5)
    model = _model(data)
    trainer = Trainer(model, data, epochs=1, batch_size=64, loss="weighted_ce", progress=False)
    trainer.open_feed()
    _, figures = trainer.task.scores(trainer)
    val_loss = figures["val_loss"]
    split = data[data.eval_split]
    mean, std = normalisation(model)
    images = torch.stack([torch.from_numpy(split[i][0]).permute(2, 0, 1) for i in range(len(split))])
    masks = torch.stack([torch.from_numpy(split[i][1]).long() for i in range(len(split))])
    x = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        expected = trainer.loss_fn(model(x), masks)
        plain = torch.nn.functional.cross_entropy(model(x), masks, ignore_index=data.ignore_index)
    trainer.close()
    assert trainer.loss_fn.weight is not None and not math.isclose(float(plain), float(expected), rel_tol=1e-3)
    assert math.isclose(val_loss, float(expected), rel_tol=1e-5)


def test_eval_every_validates_every_nth_epoch_and_at_the_end(data):
    history = fit(_model(data), data, epochs=3, batch_size=16, eval_every=2, progress=False)
    assert [r["miou"] is None for r in history.epochs] == [True, False, False]
    assert history.epochs[0]["val_loss"] is None and math.isfinite(history.epochs[2]["val_loss"])


# ---------------------------------------------------------------- 5. the time budget


def test_a_budgeted_run_stops_on_time_and_validates_its_last_partial_epoch(data):
    history = fit(_model(data), data, max_minutes=0.05, batch_size=4, lr=1e-2, progress=False)  # no epochs
    assert history.limit == "time" and history.stopped.startswith("time budget of 0.05 min reached")
    assert history.epochs and history.steps >= 1  # the schedule's end on a clock of its own: below
    assert history.epochs[-1]["miou"] is not None  # the last, partial epoch is validated too


def test_the_budget_ends_the_schedule_at_its_final_rate_when_step_times_vary():
    """The loop's schedule under a budget, on a clock of its own: steps of 0.05-0.15 s, a 6 s budget,
    a first step that takes 1 s (compilation). The last step runs at the schedule's final rate."""
    from segnb.train.budget import Budget, warmup, wsd_lr

    rng, now, base = np.random.default_rng(0), [0.0], 1e-2
    budget = Budget(epochs=None, steps_per_epoch=20, max_minutes=0.1, clock=lambda: now[0])
    budget.begin()
    budget.steps_begin(0)
    step, lrs, plans = 0, [], []
    while not budget.out_of_time():
        total = budget.planned_steps(step)
        plans.append(total)
        lrs.append(wsd_lr(step, total, base, warmup(None, total)))  # the default schedule
        now[0] += 1.0 if step == 0 else rng.uniform(0.05, 0.15)
        step += 1
        if step == 1:
            budget.first_step_done(1)
    assert 30 <= step <= 60  # about (6 s less the first step and the validation's reserve) / 0.1 s
    assert abs(lrs[-1] - 0.01 * base) <= 0.05 * 0.01 * base  # the decay's end, not cut off mid-way
    assert max(lrs) > 0.9 * base  # and it went through its peak first
    # The compiling first step is left out of the rate: at step 3 the plan is already about right
    # (with it, 3 steps in 1.2 s would plan about 13).
    assert plans[3] >= 0.8 * step, (plans[3], step)


def test_with_epochs_and_a_budget_the_first_limit_ends_the_run(data):
    history = fit(_model(data), data, epochs=1, max_minutes=10, batch_size=8, progress=False)
    assert history.limit == "epochs" and history.stopped == "completed"
    assert math.isclose(history.epochs[-1]["lr"], train_module.wsd_lr(3, 4, 1e-3, 0))  # 4 steps, no warm-up


def test_neither_epochs_nor_a_budget_means_the_configs_ten_epochs(data, monkeypatch):
    assert TrainConfig().epochs == TrainConfig(epochs=None).epochs == 10
    assert TrainConfig(max_minutes=1).epochs is None  # a budget alone: as many epochs as fit
    planned = {}
    monkeypatch.setattr(Trainer, "run", lambda self: planned.setdefault("epochs", self.epochs))
    fit(_model(data), data, progress=False)
    assert planned["epochs"] == 10


# ---------------------------------------------------------------- 6. compile


def test_compile_that_fails_says_so_once_and_trains_eagerly(data, monkeypatch):
    def broken(model, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: no compiler here\)"):
        history = fit(_model(data), data, epochs=1, batch_size=8, compile=True, progress=False)
    assert history.stopped == "completed" and len(history.epochs) == 1


# ---------------------------------------------------------------- workers inside a notebook


def test_streaming_workers_train_inside_a_notebook(tmp_path):
    source = """
import torch
from segnb.data import load_shapes
from segnb.models import build_model
from segnb.train import Trainer
data = load_shapes(n=16, size=32, seed=0)
torch.manual_seed(0)
model = build_model("fcn32s", "vgg-tiny", class_names=data.class_names)
trainer = Trainer(model, data, epochs=1, batch_size=4, cache=False, num_workers=2, progress=False)
history = trainer.run()
assert trainer.train_loader.num_workers == 2, trainer.train_loader.num_workers
assert history.stopped == "completed", history.stopped
print("workers", trainer.train_loader.num_workers, history.stopped)
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    assert "workers 2 completed" in text
    assert not np.any([o.get("output_type") == "error" for o in nb.cells[0].outputs])


class InfGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class InfGradientAtCall(torch.nn.Module):
    """A finite loss whose gradients are not (as another DDP process's NaN would make ours)."""

    def __init__(self, call):
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, logits, target):
        self.calls += 1
        if self.calls == self.call:
            logits = InfGradient.apply(logits)
        return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=255)


def test_non_finite_gradients_under_a_finite_loss_are_never_applied(data):
    model = _model(data)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model, data, epochs=1, batch_size=8, loss=InfGradientAtCall(1), progress=False)
    assert history.stopped.startswith("non-finite gradients (loss ") and "at step 0 (epoch 1)" in history.stopped
    for key, value in model.state_dict().items():
        assert torch.equal(value, start[key]), key


# ---------------------------------------------------------------- no host sync in a steady-state step


class HostReads(TorchDispatchMode):
    """Counts what makes the host wait for the device: reads of a device value (``.item()``, ``float()``,
    ``bool()``, ``if tensor:``), copies to the host, and tensors made from host data (a blocking
    host-to-device copy on a GPU)."""

    def __init__(self, made: bool = True):
        super().__init__()
        self.made = made  # count tensors made from host data (on the CPU, from_numpy also makes one)
        self.count = 0
        self.what: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        to_host = func is torch.ops.aten._to_copy.default and kwargs.get("device") is not None and torch.device(
            kwargs["device"]).type == "cpu"
        made = self.made and func is torch.ops.aten.lift_fresh.default
        if func is torch.ops.aten._local_scalar_dense.default or made or to_host:
            self.count += 1
            self.what.append(str(func))
        return func(*args, **kwargs)


class PerStep(Callback):
    """Host reads between two steps, by step number."""

    order = 100  # after every other callback, the progress renderers included

    def __init__(self, mode: HostReads):
        self.mode, self.seen, self.per_step, self.first_of_epoch = mode, 0, {}, set()

    def on_epoch_start(self, trainer):
        self.first_of_epoch.add(trainer.step + 1)

    def on_step_end(self, trainer):
        self.per_step[trainer.step] = (self.mode.count - self.seen, trainer.host_synced)
        self.seen = self.mode.count


def _renderer(name):
    from segnb.callbacks import ProgressCallback
    from segnb.progress import ConsoleRenderer

    if name == "console":
        return ProgressCallback(ConsoleRenderer(stream=io.StringIO(), interval=0))  # draws at every step
    if name == "notebook":
        from segnb.ui import NotebookProgress

        return NotebookProgress(interval=0)
    from segnb.ui.train_panel import TrainPanel, _PanelRenderer

    return ProgressCallback(_PanelRenderer(TrainPanel(), interval=0))


@pytest.mark.parametrize(("renderer", "loss"), [("console", "ce"), ("notebook", "ce"), ("studio", "ce"),
                                                ("console", "weighted_ce"), ("console", "dice"),
                                                ("console", "ce+dice")])
@pytest.mark.timeout(1800)  # every op goes through the counting mode: slow on a busy machine
def test_a_steady_state_step_never_waits_for_the_device(renderer, loss, monkeypatch):
    from unittest import mock

    data = load_shapes(n=36, size=32, seed=6)  # 28 or so training images: 2 epochs of single-image steps
    model = _model(data)
    mode = HostReads()
    steps = PerStep(mode)
    with mock.patch("segnb.ui.progress.display"), mode:
        history = fit(model, data, epochs=2, batch_size=1, loss=loss, progress=_renderer(renderer),
                      callbacks=[steps], cache="ram")
    assert history.stopped == "completed" and history.steps >= 50
    for step, (reads, synced) in steps.per_step.items():
        if step in steps.first_of_epoch:
            continue  # the previous epoch's end (its flag read, validation) is counted below
        # None, apart from one copy of the flag (with the loss the progress shows) every SYNC_EVERY steps
        # (on the CPU that copy is no copy, so it may count 0 here).
        assert reads <= (1 if synced else 0), (step, reads, mode.what[-5:])
    assert sum(1 for _, synced in steps.per_step.values() if synced) == history.steps // train_module.SYNC_EVERY


def test_validation_reads_the_host_a_fixed_number_of_times_whatever_the_batch_count(data):
    trainer = Trainer(_model(data), data, epochs=1, batch_size=8, progress=False)
    trainer.open_feed()
    counts = []
    for batch_size in (1, 4):
        trainer.feed.eval.batch_size = batch_size  # 8 and 2 validation batches
        with HostReads(made=False) as mode:  # reads only: the CPU's confusion matrix goes through numpy
            trainer.task.scores(trainer)
        counts.append(mode.count)
    trainer.close()
    assert counts[0] == counts[1] <= 6, counts


# ---------------------------------------------------------------- one device, named one way

INDEXED = torch.device("cpu", 0)  # not equal to torch.device("cpu"): the same class of bug as cuda:0 and cuda


def test_devices_are_compared_in_their_canonical_form():
    from segnb.device import canonical_device, resolve_device, same_device

    assert INDEXED != torch.device("cpu")
    assert resolve_device(INDEXED) == resolve_device("cpu") == torch.ones(1).device == canonical_device(INDEXED)
    assert same_device(INDEXED, "cpu") and resolve_device("auto").type in ("cpu", "cuda")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    split = load_shapes(n=8, size=32, seed=0)
    decoded = CachedBatches(cached_split(split["train"], None, 255, split.num_classes), 4, INDEXED,
                            mean=(0, 0, 0), std=(1, 1, 1))
    assert decoded.on_device  # a cache where training runs is used there, whatever the device's spelling


def test_every_path_runs_on_an_indexed_device(monkeypatch):
    """accelerate names the device its own way (``cuda`` where the cache says ``cuda:0``): here it says
    ``cpu:0`` where tensors say ``cpu``, and every path must still take the right branch."""
    from accelerate import Accelerator

    import segnb
    from segnb.inspect import stage_features
    from segnb.interactive import ClickModel
    from segnb.train import evaluate, lr_find, predict

    monkeypatch.setattr(Accelerator, "device", property(lambda self: INDEXED))
    data = load_shapes(n=16, size=32, seed=2)
    model = _model(data)
    paths = {}

    class Path(Callback):
        def on_data_ready(self, trainer):
            paths[trainer.config.cache] = (trainer.cache, trainer.device, getattr(trainer.train_loader, "on_device",
                                                                                  None))

    for cache in ("device", "ram", False):
        history = fit(model, data, epochs=1, batch_size=4, device=INDEXED, cache=cache, num_workers=0,
                      progress=False, callbacks=[Path()])
        assert history.stopped == "completed" and math.isfinite(history.epochs[0]["miou"])
    assert paths["device"] == ("ram", torch.device("cpu"), True)  # the CPU's memory is the RAM: no copies
    assert paths["ram"] == ("ram", torch.device("cpu"), True) and paths[False][0] is False
    assert lr_find(model, data, steps=3, batch_size=4, device=INDEXED)["lrs"]
    image = data["validation"][0][0]
    assert predict(model, image, device=INDEXED).masks.shape[-2:] == image.shape[:2]
    assert 0 <= evaluate(model, data, device=INDEXED).miou <= 1
    assert stage_features(model.to(INDEXED), image)
    shapes = segnb.load_dataset("shapes", n=8, size=64)
    rcnn = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                             image_size=64)
    assert fit(rcnn, shapes, epochs=1, batch_size=4, device=INDEXED, progress=False).stopped == "completed"
    assert evaluate(rcnn, shapes, device=INDEXED).mask_ap is not None
    clicks = ClickModel()
    clicks.net.to(INDEXED)
    assert clicks.predict(image, [(5, 5, True)]).shape == image.shape[:2]


# ---------------------------------------------------------------- compile


def test_compiled_training_batches_have_one_shape(data, monkeypatch):
    import time

    shapes = []

    def recording(model, **kwargs):
        def run(x):
            shapes.append(tuple(x.shape))
            if len(shapes) == 1:
                time.sleep(3.0)  # the first call compiles
            return model(x)
        return run

    monkeypatch.setattr(torch, "compile", recording)
    # 32 training images in batches of 12: two of 12, and the 8 left over are dropped.
    history = fit(_model(data), data, max_minutes=0.2, batch_size=12, compile=True, progress=False)
    assert history.limit == "time" and history.steps >= 2
    assert {s[0] for s in shapes} == {12}
    # The rate that plans the schedule leaves the compiling step out: on a clock of its own in
    # test_the_budget_ends_the_schedule_at_its_final_rate_when_step_times_vary.


def test_a_compile_failure_in_backward_falls_back_to_eager_once(data, monkeypatch):
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("backward compiler failed")

    def compiled(model, **kwargs):
        return lambda x: Broken.apply(model(x))

    monkeypatch.setattr(torch, "compile", compiled)
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: backward compiler failed\)") as caught:
        history = fit(_model(data), data, epochs=2, batch_size=8, compile=True, progress=False)
    assert history.stopped == "completed" and history.steps == 8
    assert sum("torch.compile failed" in str(w.message) for w in caught) == 1


def test_validation_and_checks_take_at_most_their_share_of_a_time_budget():
    """The budget's rule, on a clock of its own: epochs of 1 s, validations of 0.25 s, a 24 s budget."""
    from segnb.train.budget import EVAL_SHARE, Budget

    now = [0.0]
    budget = Budget(epochs=None, steps_per_epoch=10, max_minutes=0.4, eval_images=40, clock=lambda: now[0])
    budget.begin()
    budget.charge(0.1)  # the first batch's check
    now[0] += 0.1
    budget.steps_begin(0)
    validated, step = [], 0
    while True:
        for _ in range(10):  # one epoch: ten steps of 0.1 s
            now[0] += 0.1
            step += 1
            if step == 1:
                budget.first_step_done(1)
            if budget.out_of_time():
                break
        last = budget.out_of_time()
        if last or budget.validate_now(images_per_s=40.0):  # a forward pass at 80 images/s: 0.5 s expected
            now[0] += 0.25
            budget.record_eval(0.25)
            validated.append(step)
        if last:
            break
    assert validated[-1] == step  # the last one always runs
    assert 2 <= len(validated) < step // 10  # not after every epoch
    assert budget.checks <= EVAL_SHARE * 24 + 1e-9, budget.checks
    assert now[0] <= 24 + 0.1 + 1e-9  # the run, its last validation included, fits the budget (within a step)
    assert budget.planned_steps(step) >= step
