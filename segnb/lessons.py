"""Prepared lessons; one job in one file: the recipes, their cache keys and the cache change together.

Every model the notebooks train, trained once at full quality and loaded in seconds.

``segnb lessons prepare`` (or :func:`prepare`) trains each :class:`Recipe` below, prints the plan with
an estimate of the time first, and stores every model as safetensors + JSON (:func:`segnb.save_model`)
with a ``record.json`` of how it was made and what it scored. ``segnb lessons status`` (:func:`status`)
lists what is prepared. A notebook calls :func:`load` (or :func:`load_all` for a comparison): it loads
the prepared model when there is one and says so ("prepared model, trained for 8 epochs, mIoU 0.912"),
and otherwise trains it now ("trained now, fast mode: ...").

The cache is one folder, ``$SEGNB_LESSONS`` or ``~/.cache/segnb/lessons``::

    <root>/<recipe name>/<key>/model.json, model.safetensors, record.json

The key is a sha256 over the recipe's settings, the source of the segnb modules that build, feed and
train that model (its architecture's own file, not the others), and the data (the built-in shapes are
made by code that is hashed; the ISBI slices by their checksums). Changing one architecture's file
retrains only the models of that architecture; nothing in the key depends on paths or the machine, so
the folder can be copied to another computer (prepare on a GPU, teach from a laptop).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["PREPARE_HINT", "RECIPES", "Lesson", "Recipe", "cache_root", "dataset", "estimate", "find", "find_all",
           "key", "load", "load_all", "prepare", "status"]

ENV = "SEGNB_LESSONS"
PACKAGE = Path(__file__).resolve().parent
PREPARE_HINT = "run `segnb lessons prepare` to see it"


def cache_root(root=None) -> Path:
    """Where prepared lessons live: ``root``, else ``$SEGNB_LESSONS``, else ``~/.cache/segnb/lessons``."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path("~/.cache/segnb/lessons").expanduser()


@dataclass(frozen=True)
class Recipe:
    """How one lesson model is made: data, architecture, training settings, and their fast-mode variant.

    ``fast`` overrides ``data`` and ``fit`` (``{"data": {...}, "fit": {...}}``) for the quick run a
    notebook does in fast mode when nothing is prepared. ``seconds`` is what the full run took on the
    2-core development machine, the base of :func:`estimate`.
    """

    name: str
    notebook: str
    title: str
    data: dict
    arch: str = ""
    encoder: str = ""
    upsample: str | None = None
    options: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    fast: dict = field(default_factory=dict)
    seed: int = 0
    init_encoder_from: str | None = None
    kind: str = "segmodel"  # or "click": segnb.interactive's click model
    seconds: float = 60.0

    def settings(self, fast: bool = False) -> tuple[dict, dict]:
        """(data options, fit options) of the full run, or of the fast-mode run."""
        if not fast:
            return dict(self.data), dict(self.fit)
        return {**self.data, **self.fast.get("data", {})}, {**self.fit, **self.fast.get("fit", {})}


def _shapes(**options) -> dict:
    return {"source": "shapes", **options}


def _recipes() -> list[Recipe]:
    wce = {"batch_size": 16, "loss": "weighted_ce"}
    d04, f04 = _shapes(n=400, size=96), {"data": {"n": 240, "size": 64}, "fit": {"epochs": 1}}
    fit04 = {**wce, "epochs": 8, "lr": 3e-3}
    d05 = _shapes(n=800, size=128, void_border=1)
    f_small = {"data": {"n": 300, "size": 64}, "fit": {"epochs": 2}}
    d06, f06 = _shapes(n=300, size=96, seed=3), {"data": {"n": 64, "size": 64}, "fit": {"epochs": 2}}
    fit06 = {**wce, "epochs": 12, "lr": 1e-2}
    d07, f07 = _shapes(n=800, size=128), {"data": {"n": 200, "size": 64}, "fit": {"epochs": 1}}
    fit07 = {**wce, "epochs": 12, "lr": 1e-3}
    d09, f09 = _shapes(n=1000, size=128), {"data": {"n": 96, "size": 64}, "fit": {"epochs": 1}}
    return [
        Recipe("02-unet", "02_classical_vs_deep", "U-Net on vgg-tiny", _shapes(n=800, size=128), "unet-classic",
               "vgg-tiny", fit={**wce, "epochs": 4, "lr": 1e-2}, fast=f_small, seconds=180),
        Recipe("04-fcn32s", "04_fcn_segnet_unet", "FCN-32s on vgg-small", d04, "fcn32s", "vgg-small",
               "transposed4", fit=fit04, fast=f04, seconds=150),
        Recipe("04-fcn16s", "04_fcn_segnet_unet", "FCN-16s on vgg-small", d04, "fcn16s", "vgg-small",
               "transposed4", fit=fit04, fast=f04, seconds=150),
        Recipe("04-fcn8s", "04_fcn_segnet_unet", "FCN-8s on vgg-small", d04, "fcn8s", "vgg-small",
               "transposed4", fit=fit04, fast=f04, seconds=150),
        Recipe("04-fcn8s-bilinear", "04_fcn_segnet_unet", "FCN-8s on vgg-small, bilinear upsampling", d04,
               "fcn8s", "vgg-small", "bilinear", fit=fit04, fast=f04, seconds=150),
        Recipe("04-segnet", "04_fcn_segnet_unet", "SegNet on vgg-small", d04, "segnet", "vgg-small",
               "max_unpool", fit=fit04, fast=f04, seconds=200),
        Recipe("04-unet", "04_fcn_segnet_unet", "U-Net on vgg-small", d04, "unet-classic", "vgg-small",
               "transposed4", fit=fit04, fast=f04, seconds=250),
        Recipe("04-tiramisu56", "04_fcn_segnet_unet", "Tiramisu (FC-DenseNet-56)", d04, "tiramisu",
               "fc-densenet56", fit=fit04, fast=f04, seconds=400),
        Recipe("05-unet", "05_soft_masks_and_iou", "U-Net on vgg-tiny (void borders)", d05, "unet-classic",
               "vgg-tiny", fit={**wce, "epochs": 4, "lr": 1e-2}, fast=f_small, seconds=180),
        Recipe("05-unet-ce", "05_soft_masks_and_iou", "U-Net on vgg-tiny, plain cross-entropy", d05,
               "unet-classic", "vgg-tiny", fit={"batch_size": 16, "loss": "ce", "epochs": 3, "lr": 1e-2},
               fast={**f_small, "fit": {"epochs": 1}}, seed=1, seconds=140),
        Recipe("05-unet-weighted", "05_soft_masks_and_iou", "U-Net on vgg-tiny, weighted cross-entropy", d05,
               "unet-classic", "vgg-tiny", fit={**wce, "epochs": 3, "lr": 1e-2},
               fast={**f_small, "fit": {"epochs": 1}}, seed=1, seconds=140),
        Recipe("06-aug-none", "06_real_data_membranes", "U-Net, no augmentation", d06, "unet-classic",
               "vgg-tiny", fit={**fit06, "augment": False}, fast=f06, seconds=120),
        Recipe("06-aug-flip", "06_real_data_membranes", "U-Net, flips", d06, "unet-classic", "vgg-tiny",
               fit=fit06, fast=f06, seconds=120),
        Recipe("06-aug-rescale", "06_real_data_membranes", "U-Net, flips and rescaling", d06, "unet-classic",
               "vgg-tiny", fit={**fit06, "augment_scale": [0.7, 1.5], "image_size": 96},
               fast={**f06, "fit": {"epochs": 2, "image_size": 64}}, seconds=120),
        Recipe("06-teacher", "06_real_data_membranes", "U-Net trained on other shapes (the source task)",
               _shapes(n=1000, size=96, seed=11), "unet-classic", "vgg-tiny", fit={**wce, "epochs": 4, "lr": 1e-2},
               fast={"data": {"n": 160, "size": 64}, "fit": {"epochs": 1}}, seconds=150),
        Recipe("06-student", "06_real_data_membranes", "U-Net, encoder transferred from the source task", d06,
               "unet-classic", "vgg-tiny", fit=fit06, fast=f06, init_encoder_from="06-teacher", seconds=120),
        Recipe("06-membranes", "06_real_data_membranes", "U-Net on vgg-small, ISBI 2012 membranes",
               {"source": "isbi2012"}, "unet-classic", "vgg-small",
               fit={"batch_size": 8, "loss": "weighted_ce", "epochs": 60, "lr": 3e-3, "image_size": 128,
                    "augment_scale": [4.0, 4.0]}, fast={"fit": {"epochs": 3}}, seconds=300),
        Recipe("07-setr", "07_transformers", "SETR-PUP on ViT-tiny (attention maps)", d07, "setr-pup",
               "vit_tiny_patch16_224", fit=fit07, fast={**f07, "encoder": "test_vit"}, seconds=500),
        Recipe("07-dpt", "07_transformers", "DPT on ViT-tiny, slim decoder", d07, "dpt", "vit_tiny_patch16_224",
               options={"decoder_intermediate_channels": [32, 64, 128, 128], "decoder_fusion_channels": 32},
               fit=fit07, fast={**f07, "encoder": "test_vit"}, seconds=500),
        Recipe("07-segformer", "07_transformers", "Segformer on ConvNeXt-atto", d07, "segformer", "convnext_atto",
               fit=fit07, fast={**f07, "encoder": "test_convnext"}, seconds=400),
        Recipe("08-click", "08_interactive", "click model (U-Net on RGB + 2 click maps)", _shapes(n=1000, size=128),
               kind="click", fit={"seconds": 120}, fast={"data": {"n": 240, "size": 64}, "fit": {"seconds": 15}},
               seconds=160),
        Recipe("09-maskrcnn", "09_instances_and_panoptic", "Mask R-CNN on mobilenetv3_small_100", d09, "maskrcnn",
               "mobilenetv3_small_100", options={"fpn_channels": 64},
               fit={"epochs": 6, "batch_size": 8, "lr": 2e-3}, fast=f09, seconds=500),
        Recipe("09-semantic", "09_instances_and_panoptic", "U-Net on vgg-tiny (the stuff for the panoptic merge)",
               d09, "unet-classic", "vgg-tiny", fit={"epochs": 4, "batch_size": 16, "lr": 3e-3}, fast=f09,
               seconds=200),
    ]


RECIPES: dict[str, Recipe] = {r.name: r for r in _recipes()}


# -- keys ---------------------------------------------------------------------------------------------

def _code_files(recipe: Recipe) -> list[Path]:
    """The segnb source files that make this model: its architecture's file, the shared model code,
    the training loop and the data code it reads (whichever layout of those packages is installed)."""
    patterns = ["models/build.py", "models/upsample.py", "models/encoders.py", "models/registry.py",
                "train.py", "train/*.py", "losses.py", "device.py", "data/base.py", "data/augment.py",
                "data/cache.py", "data/transform.py", "data/preprocess*.py"]
    if recipe.kind == "click":
        patterns += ["interactive.py", "interactive/*.py"]
    elif recipe.arch == "maskrcnn":
        patterns += ["instances/*.py"]
    patterns += ["data/shapes.py"] if recipe.data["source"] == "shapes" else ["data/folder.py", "data/isbi.py"]
    files = {p for pattern in patterns for p in PACKAGE.glob(pattern)}
    if recipe.arch:
        import importlib.util

        from segnb.models.registry import get_architecture

        module = get_architecture(recipe.arch).build.__module__
        files.add(Path(importlib.util.find_spec(module).origin))
    return sorted(files)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def key(recipe: Recipe | str, fast: bool = False) -> str:
    """The cache key: settings, code and data of this recipe (and of the model it starts from)."""
    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    data, fit = recipe.settings(fast)
    payload = {
        "settings": {"data": data, "fit": fit, "arch": recipe.arch, "upsample": recipe.upsample,
                     "encoder": recipe.fast.get("encoder", recipe.encoder) if fast else recipe.encoder,
                     "options": recipe.options, "seed": recipe.seed, "kind": recipe.kind},
        "code": {str(p.relative_to(PACKAGE)): _digest(p) for p in _code_files(recipe)},
        "data": _data_fingerprint(data),
        "init": key(recipe.init_encoder_from, fast) if recipe.init_encoder_from else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _data_fingerprint(data: dict) -> str:
    if data["source"] == "isbi2012":
        from segnb.data.isbi import fingerprint

        return fingerprint()
    return data["source"]  # the built-in shapes: made by data/shapes.py, which is in the code part


# -- the cache ----------------------------------------------------------------------------------------

def _folder(recipe: Recipe, fast: bool, root=None) -> Path:
    return cache_root(root) / recipe.name / key(recipe, fast)


def _record(recipe: Recipe, fast: bool, root=None) -> dict | None:
    path = _folder(recipe, fast, root) / "record.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def status(root=None) -> list[dict]:
    """One row per recipe: ``state`` is ``prepared``, ``outdated`` (made by other code, data or settings:
    ``prepare`` retrains it) or ``missing``; prepared rows carry their ``record``."""
    rows = []
    for recipe in RECIPES.values():
        record = _record(recipe, False, root)
        folder = cache_root(root) / recipe.name
        others = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        state = "prepared" if record else "outdated" if others else "missing"
        rows.append({"name": recipe.name, "notebook": recipe.notebook, "title": recipe.title, "state": state,
                     "key": key(recipe), "record": record})
    return rows


def format_status(rows: list[dict], root=None) -> str:
    lines = [f"prepared lessons in {cache_root(root)}:"]
    for row in rows:
        record = row["record"]
        done = (f"{_score_text(record)}, {record['epochs']} epochs, {record['seconds']:.0f} s on {record['device']}"
                if record else "")
        lines.append(f"  {row['name']:18s} {row['state']:9s} {done}")
    ready = sum(r["state"] == "prepared" for r in rows)
    lines.append(f"{ready} of {len(rows)} prepared" + ("" if ready == len(rows) else "; `segnb lessons prepare` "
                                                       "trains the rest"))
    return "\n".join(lines)


def _score_text(record: dict) -> str:
    return f"{record['metric']} {record['score']:.3f}"


# -- training one recipe -------------------------------------------------------------------------------

_DATA: dict[str, object] = {}


def dataset(recipe: Recipe | str, fast: bool = False):
    """The recipe's dataset (loaded once per process and shared by the recipes that use the same one)."""
    import segnb

    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    options = recipe.settings(fast)[0]
    text = json.dumps(options, sort_keys=True)
    if text not in _DATA:
        options = dict(options)
        _DATA[text] = segnb.load_dataset(options.pop("source"), **options)
    return _DATA[text]


def _train(recipe: Recipe, fast: bool, progress: bool, root=None):
    """Train one recipe; returns (model, record)."""
    import torch

    import segnb
    from segnb.evaluation import evaluate
    from segnb.train import fit

    data = dataset(recipe, fast)
    fit_options = recipe.settings(fast)[1]
    start = time.perf_counter()
    if recipe.kind == "click":
        return _train_click(recipe, fast, data, fit_options, start, progress)
    torch.manual_seed(recipe.seed)
    options = dict(recipe.options)
    if recipe.arch == "maskrcnn":
        options["things"] = data.things
    encoder = recipe.fast.get("encoder", recipe.encoder) if fast else recipe.encoder
    model = segnb.build_model(recipe.arch, encoder, class_names=data.class_names, upsample=recipe.upsample,
                              **options)
    if recipe.init_encoder_from:
        parent = load(recipe.init_encoder_from, fast=fast, root=root, quiet=True)
        model.net.encoder.load_state_dict(parent.model.net.encoder.state_dict())
    for name in ("augment_scale",):
        if name in fit_options:
            fit_options[name] = tuple(fit_options[name])
    history = fit(model, data, progress=progress, **fit_options)
    report = evaluate(model, data)
    instance = recipe.arch == "maskrcnn"
    record = {
        "metric": "mask AP50" if instance else "mIoU",
        "score": float(report.mask_ap50 if instance else report.miou),
        "per_class_iou": None if instance else [None if v is None else float(v) for v in report.scores.iou],
        "pixel_accuracy": None if instance else float(report.scores.pixel_accuracy),
        "epochs": len(history.epochs), "steps": history.steps, "history": history.as_dict(),
    }
    return model, _finish(record, recipe, fast, data, start)


def _train_click(recipe, fast, data, fit_options, start, progress):
    import torch

    from segnb import interactive as ia

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the budget is wall seconds of one thread, as in notebook 08
    try:
        model = ia.train_click_model(data, seconds=fit_options["seconds"], progress=progress)
    finally:
        torch.set_num_threads(threads)
    report = ia.evaluate_clicks(model, data, limit=40, max_clicks=10)
    history = model.history
    record = {"metric": "NoC@85", "score": float(report.noc[0.85]), "per_class_iou": None,
              "epochs": len(history.epochs), "steps": history.steps,
              "history": {**history.as_dict(), "curve": [float(v) for v in report.curve]}}
    return model, _finish(record, recipe, fast, data, start)


def _finish(record, recipe, fast, data, start) -> dict:
    import torch

    import segnb

    return {"name": recipe.name, "title": recipe.title, "notebook": recipe.notebook, "fast": fast,
            "key": key(recipe, fast), "data": recipe.settings(fast)[0], "data_summary": repr(data),
            "fit": recipe.settings(fast)[1], "seconds": time.perf_counter() - start,
            "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
            "segnb": segnb.__version__, "prepared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **record}


def _save(model, record: dict, recipe: Recipe, fast: bool, root=None) -> Path:
    from segnb.models.io import atomic_write, save_model

    folder = _folder(recipe, fast, root)
    if recipe.kind == "click":
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "click.safetensors", lambda tmp: model.save(tmp))
    else:
        save_model(model, folder, extra={"lesson": recipe.name})
    # record.json last: its presence is what marks the folder as prepared
    atomic_write(folder / "record.json", lambda p: p.write_text(json.dumps(record, indent=1)))
    return folder


def _load_model(recipe: Recipe, fast: bool, root=None):
    folder = _folder(recipe, fast, root)
    if recipe.kind == "click":
        from segnb.interactive import ClickModel

        return ClickModel.load(folder / "click.safetensors")
    from segnb.models.io import load_model

    return load_model(folder)


# -- what notebooks call ---------------------------------------------------------------------------------

@dataclass
class Lesson:
    """A lesson model, prepared or trained now, with its data and a sentence that says which."""

    name: str
    model: object
    data: object
    record: dict
    prepared: bool

    @property
    def score(self) -> float:
        return self.record["score"]

    def describe(self) -> str:
        r = self.record
        what = (f"{r['epochs']} epoch{'s' * (r['epochs'] != 1)}" if r["epochs"] else f"{r['steps']} steps")
        if self.prepared:
            settings = " (fast settings)" if r["fast"] else ""
            return f"prepared model{settings}, trained for {what}, {_score_text(r)}"
        if r["fast"]:
            return f"trained now, fast mode: {what}, {_score_text(r)}; for the full-quality model, {PREPARE_HINT}"
        return f"trained now: {what} in {r['seconds']:.0f} s, {_score_text(r)} (saved: next time it loads in seconds)"

    def __repr__(self) -> str:
        return f"{self.name}: {self.describe()}"


def load(name: str, fast: bool = False, root=None, quiet: bool = False, progress: bool = False) -> Lesson:
    """The prepared model ``name`` if there is one (the full-quality one first), else one trained now.

    In fast mode a missing model is trained with the recipe's fast settings and not saved; otherwise
    with its full settings, and saved to the cache so the next call loads it. Prints one line saying
    which it used unless ``quiet``.
    """
    recipe = RECIPES[name]
    lesson = None
    for variant in ((False, True) if fast else (False,)):
        lesson = _prepared(recipe, variant, root)
        if lesson is not None:
            break
    if lesson is None:
        lesson = _train_now(recipe, fast, root, progress)
    if not quiet:
        print(f"{recipe.title}: {lesson.describe()}")
    return lesson


def _prepared(recipe: Recipe, variant: bool, root=None) -> Lesson | None:
    record = _record(recipe, variant, root)
    if record is None:
        return None
    try:
        return Lesson(recipe.name, _load_model(recipe, variant, root), dataset(recipe, variant), record, True)
    except Exception as error:  # a damaged or partial copy: say so; the caller trains instead
        print(f"{recipe.name}: the prepared model could not be loaded ({error})")
        return None


_TRAINED: dict[tuple[str, str], Lesson] = {}  # fast-mode models trained in this process, by (name, key)


def _train_now(recipe: Recipe, fast: bool, root=None, progress: bool = False) -> Lesson:
    """Train now; a fast-mode model is kept for the process (a second cell that asks for it gets it)."""
    known = (recipe.name, key(recipe, fast))
    if fast and known in _TRAINED:
        return _TRAINED[known]
    model, record = _train(recipe, fast, progress, root)
    if not fast:
        _save(model, record, recipe, False, root)
    lesson = Lesson(recipe.name, model, dataset(recipe, fast), record, False)
    if fast:
        _TRAINED[known] = lesson
    return lesson


def find(name: str, fast: bool = False, root=None) -> Lesson | None:
    """The prepared model ``name`` (in fast mode also its fast-settings variant), or None: nothing is trained."""
    recipe = RECIPES[name]
    for variant in ((False, True) if fast else (False,)):
        lesson = _prepared(recipe, variant, root)
        if lesson is not None:
            return lesson
    return None


def find_all(names, fast: bool = False, root=None) -> dict[str, Lesson] | None:
    """The prepared models ``names``, all made with the same settings variant, or None if one is missing."""
    names = list(names)
    for variant in ((False, True) if fast else (False,)):
        if all(_record(RECIPES[n], variant, root) for n in names):
            found = {n: _prepared(RECIPES[n], variant, root) for n in names}
            if all(found.values()):
                return found
    return None


def load_all(names, fast: bool = False, root=None, quiet: bool = False) -> dict[str, Lesson]:
    """:func:`load` for models that are compared on one dataset, never mixing data: in fast mode the
    full-quality models are used only when all of them are prepared; otherwise every one comes from
    the fast settings (prepared so, or trained now), on the same small data."""
    names = list(names)
    if not fast or all(_record(RECIPES[n], False, root) for n in names):
        return {n: load(n, False, root, quiet) for n in names}
    lessons = {}
    for name in names:  # fast mode: every one on the fast data, prepared with the fast settings or trained now
        recipe = RECIPES[name]
        lessons[name] = _prepared(recipe, True, root) or _train_now(recipe, True, root)
        if not quiet:
            print(f"{recipe.title}: {lessons[name].describe()}")
    return lessons


# -- preparing ----------------------------------------------------------------------------------------

REFERENCE_STEP_SECONDS = 0.05  # _speed() on the 2-core development machine (idle), the base of the estimate


def _speed() -> float:
    """Seconds for a small convolutional training step on this machine (GPU if there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1)).to(device)
    x = torch.randn(8, 3, 96, 96, device=device)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        net(x).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def estimate(names=None, root=None, fast: bool = False) -> tuple[list[Recipe], float]:
    """The recipes still to train and the seconds they should take here (scaled from the reference machine)."""
    todo = [RECIPES[n] for n in (names or RECIPES)]
    todo = [r for r in todo if _record(r, fast, root) is None]
    if not todo:
        return [], 0.0
    factor = _speed() / REFERENCE_STEP_SECONDS
    scale = 0.15 if fast else 1.0
    return todo, factor * scale * sum(r.seconds for r in todo)


def prepare(names=None, root=None, force: bool = False, fast: bool = False, progress: bool = True,
            say=print) -> list[dict]:
    """Train every recipe (or ``names``) that is not prepared yet, and store it; returns their records.

    Prints the plan and an estimate of the time before it starts, then one line per model with its
    score and the time left. ``fast`` prepares the fast-mode variants (for tests); ``force`` retrains.
    """
    unknown = [n for n in (names or []) if n not in RECIPES]
    if unknown:
        raise KeyError(f"no lesson named {', '.join(unknown)}; the lessons are: {', '.join(RECIPES)}")
    if force:
        for recipe in (RECIPES[n] for n in (names or RECIPES)):
            (_folder(recipe, fast, root) / "record.json").unlink(missing_ok=True)
    todo, seconds = estimate(names, root, fast)
    ready = len(names or RECIPES) - len(todo)
    say(f"segnb lessons prepare: {len(todo)} models to train ({ready} already prepared) into {cache_root(root)}")
    if not todo:
        return []
    say(f"estimated time: about {_duration(seconds)} on this machine; each model is saved when it is done, "
        "so an interrupted run continues where it stopped")
    records, failed, planned, spent = [], [], sum(r.seconds for r in todo), 0.0
    done_planned = 0.0
    for i, recipe in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] {recipe.name}: {recipe.title}")
        try:
            model, record = _train(recipe, fast, progress, root)
            _save(model, record, recipe, fast, root)
        except Exception as error:  # one broken recipe must not cost the night's run of the others
            failed.append(f"{recipe.name}: {type(error).__name__}: {error}")
            say(f"[{i}/{len(todo)}] {recipe.name} FAILED: {type(error).__name__}: {error}")
            done_planned += recipe.seconds
            continue
        records.append(record)
        spent += record["seconds"]
        done_planned += recipe.seconds
        left = spent / done_planned * (planned - done_planned)
        say(f"[{i}/{len(todo)}] {recipe.name}: {_score_text(record)} in {record['seconds']:.0f} s"
            + (f"; about {_duration(left)} left" if i < len(todo) else f"; all done in {_duration(spent)}"))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} lessons failed (the others are saved):\n" + "\n".join(failed))
    return records


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


# -- command line (``segnb lessons ...``; also ``python -m segnb.lessons ...``) ---------------------------

def add_arguments(parser) -> None:
    """The ``prepare`` and ``status`` sub-commands, for ``segnb lessons`` and ``python -m segnb.lessons``."""
    sub = parser.add_subparsers(dest="lessons_command", required=True)
    p = sub.add_parser("prepare", help="train every lesson model once, at full quality, and store it")
    p.add_argument("names", nargs="*", help=f"lessons to prepare (default: all): {', '.join(RECIPES)}")
    p.add_argument("--root", help=f"cache folder (default ${ENV} or ~/.cache/segnb/lessons)")
    p.add_argument("--force", action="store_true", help="retrain even if prepared")
    p.add_argument("--fast", action="store_true", help="the fast-mode variants (minutes; for tests and CI)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress, only one line per model")
    s = sub.add_parser("status", help="list the lessons and which are prepared")
    s.add_argument("--root", help=f"cache folder (default ${ENV} or ~/.cache/segnb/lessons)")
    s.add_argument("--json", action="store_true", help="one JSON document instead of the table")


def run(args) -> int:
    if args.lessons_command == "status":
        rows = status(args.root)
        print(json.dumps({"root": str(cache_root(args.root)), "lessons": rows}, indent=1) if args.json
              else format_status(rows, args.root))
        return 0
    try:
        prepare(args.names or None, args.root, force=args.force, fast=args.fast, progress=not args.quiet)
    except KeyError as error:
        print(error.args[0])
        return 2
    except RuntimeError as error:
        print(error)
        return 1
    print(format_status(status(args.root), args.root))
    return 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="segnb lessons", description=__doc__.split("\n\n")[1])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
