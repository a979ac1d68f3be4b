"""Scoring protocols, the training input scale, sliding windows and test-time augmentation."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from segnb import tiling
from segnb.data.base import SegmentationDataset, Split
from segnb.errors import SegnbError
from segnb.evaluation import Scorer, evaluate
from segnb.metrics import confusion_matrix, scores_from_confusion
from segnb.models.io import TrainingInput, training_input
from segnb.prediction import predict


class ListSplit(Split):
    def __init__(self, name, pairs):
        super().__init__(name, len(pairs))
        self.pairs = pairs

    def _load(self, index):
        return self.pairs[index]


def dataset(pairs, classes=("background", "line", "blob")):
    return SegmentationDataset(splits={"train": ListSplit("train", pairs), "validation": ListSplit("validation", pairs)},
                               class_names=list(classes), source="hand-built")


class Colour(nn.Module):
    """Logits = the image's channels (mean 0, std 1): what each pixel looks like is its class."""

    def __init__(self, record=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 10)
            self.conv.bias.zero_()
        self.num_classes, self.mean, self.std = 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if record is not None:
            self.training_input = record

    def forward(self, x):
        return self.conv(x)


def thin_lines(h=32, w=32, column=5, width=2):
    """A background image with a thin vertical line (class 1) and a square blob (class 2)."""
    image = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    image[..., 0] = 200
    image[:, column:column + width] = (0, 200, 0)
    mask[:, column:column + width] = 1
    image[h // 2:h // 2 + 12, w // 2:w // 2 + 12] = (0, 0, 200)
    mask[h // 2:h // 2 + 12, w // 2:w // 2 + 12] = 2
    mask[0, :4] = 255  # a little void
    return image, mask


def mmseg_rule(model, pairs, size):
    """MMSegmentation's rule, written out: the image resized to the model's input, the logits
    resized bilinearly to the label's size, then argmax; scored by torchmetrics at full resolution."""
    preds, targets = [], []
    for image, mask in pairs:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            logits = F.interpolate(model(x), size=mask.shape, mode="bilinear", align_corners=False)
        preds.append(logits.argmax(1).flatten())
        targets.append(torch.from_numpy(mask).long().flatten())
    metric = MulticlassJaccardIndex(3, ignore_index=255, average="none")
    return metric(torch.cat(preds), torch.cat(targets))


def test_protocols_differ_and_full_equals_mmsegmentation_and_torchmetrics():
    pairs = [thin_lines(column=7, width=1), thin_lines(32, 48, column=20, width=1)]  # two sizes, each at its own
    data = dataset(pairs)
    model = Colour(TrainingInput(size=(8, 8)))
    full = evaluate(model, data, device="cpu")
    resized = evaluate(model, data, device="cpu", protocol="resized")
    assert full.protocol == "full" and resized.protocol == "resized"
    reference = mmseg_rule(model, pairs, (8, 8))
    assert np.allclose(full.scores.iou, reference.numpy())
    assert full.miou == pytest.approx(float(reference.mean()))
    assert resized.scores.iou[1] is None and full.scores.iou[1] == 0.0  # the thin line: gone when resized
    assert resized.miou - full.miou > 0.25
    assert sum(full.pixels) == sum(int((m != 255).sum()) for _, m in pairs)  # every labelled pixel, at full size
    assert sum(resized.pixels) < sum(full.pixels) / 10
    assert "full resolution" in full.format() and "resized" in resized.format()
    assert json.loads(json.dumps(full.as_dict()))["protocol"] == "full"
    with pytest.raises(SegnbError, match="protocol must be"):
        evaluate(model, data, protocol="paper")


def test_scorer_batches_per_image_confusions_as_one_matrix():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, 8, generator=g)
    labels = [torch.randint(0, 4, (12, 16), generator=g), torch.randint(0, 4, (12, 16), generator=g),
              torch.randint(0, 4, (9, 10), generator=g)]
    labels[0][:2] = 255
    scorer = Scorer(4, 255, per_image=True)
    scorer.update(logits, labels)
    total = torch.zeros(4, 4, dtype=torch.long)
    for i, y in enumerate(labels):
        pred = F.interpolate(logits[i:i + 1], size=y.shape, mode="bilinear", align_corners=False).argmax(1)[0]
        cm = confusion_matrix(pred, y, 4)
        total += cm
        row = next(r for r in scorer.per_image() if r["index"] == i)
        assert row["miou"] == pytest.approx(scores_from_confusion(cm).miou)
        assert row["pixel_accuracy"] == pytest.approx(scores_from_confusion(cm).pixel_accuracy)
    assert torch.equal(scorer.confusion_matrix(), total)


def test_training_input_scales_new_images_and_notes_other_sizes():
    record = TrainingInput(size=(16, 24), source_size=(32, 48))
    assert record.scale == (0.5, 0.5)
    assert tiling.plan(record, (32, 48)) == ((16, 24), None)
    assert tiling.plan(record, (64, 64)) == ((32, 32), None)  # the same scale: objects as large as in training
    assert tiling.plan(record, (128, 200)) == ((64, 100), (16, 24))  # > 2x the training size: tiled
    assert tiling.plan(record, (128, 200), tile=False) == ((64, 100), None)
    assert tiling.plan(TrainingInput(size=(16, 16)), (50, 70)) == ((16, 16), None)  # mixed sizes: as in training
    assert tiling.plan(None, (50, 70)) == ((50, 70), None)
    crops = TrainingInput(size=(128, 128), source_size=(512, 512), zoom=4.0)  # augment_scale=(4, 4): 1:1 crops
    assert crops.scale == (1.0, 1.0) and tiling.plan(crops, (512, 512)) == ((512, 512), (128, 128))
    model = Colour(record)
    image = thin_lines(32, 48)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, image, device="cpu")  # the training size: no note
    with pytest.warns(UserWarning, match="not at the training size 16x24"):
        predict(model, image, device="cpu", image_size=(32, 48))
    assert TrainingInput.from_dict(json.loads(json.dumps(record.as_dict()))) == record


class SmallCNN(nn.Module):
    """Fully convolutional, stride 1, a receptive field of 7 px."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(8, 4, 3, padding=1))
        self.num_classes, self.mean, self.std = 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def forward(self, x):
        return self.net(x)


def test_tiled_equals_whole_image_for_a_fully_convolutional_model():
    model = SmallCNN()
    image = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    whole = predict(model, image, device="cpu", tile=False).probs
    tiled = predict(model, image, device="cpu", tile=(32, 48), overlap=0.5).probs
    assert tiled.shape == whole.shape == (1, 4, 90, 130)
    assert torch.allclose(tiled, whole, atol=0.03)  # only pixels near tile borders saw zero padding
    assert (tiled.argmax(1) == whole.argmax(1)).float().mean() > 0.99
    one_by_one = nn.Conv2d(3, 4, 1)
    one_by_one.num_classes, one_by_one.mean, one_by_one.std = 4, model.mean, model.std
    exact = predict(one_by_one, image, device="cpu", tile=(32, 48), overlap=0.25).probs
    assert torch.allclose(exact, predict(one_by_one, image, device="cpu").probs, atol=1e-5)


def test_no_seam_on_a_constant_image():
    model = SmallCNN()
    image = np.full((96, 160, 3), 120, np.uint8)
    whole = predict(model, image, device="cpu").probs[0, :, 4:-4, 4:-4]  # away from the image border
    seams = {}
    for blend in ("gaussian", "linear", "constant"):
        tiled = predict(model, image, device="cpu", tile=(32, 32), overlap=0.25, blend=blend).probs[0, :, 4:-4, 4:-4]
        seams[blend] = float((tiled - whole).abs().max())
    assert seams["gaussian"] < 1e-3  # tile borders weigh almost nothing
    assert seams["gaussian"] < seams["constant"] / 5 and seams["linear"] < seams["constant"]


def test_tiles_are_automatic_above_twice_the_training_size():
    calls = []

    class Spy(SmallCNN):
        def forward(self, x):
            calls.append(tuple(x.shape[-2:]))
            return super().forward(x)

    model = Spy()
    model.training_input = TrainingInput(size=None, source_size=(32, 32))
    predict(model, np.zeros((64, 64, 3), np.uint8), device="cpu")
    assert calls == [(64, 64)]
    calls.clear()
    out = predict(model, np.zeros((70, 100, 3), np.uint8), device="cpu")
    assert out.masks.shape == (1, 70, 100) and set(calls) == {(32, 32)}  # batches of 32x32 tiles


def test_tta_averages_probabilities_over_flips_and_scales_with_tiles():
    model = SmallCNN()
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    plain = predict(model, image, device="cpu").probs
    flipped = predict(model, image[:, ::-1].copy(), device="cpu").probs.flip(-1)
    both = predict(model, image, device="cpu", tta=("hflip",)).probs
    assert torch.allclose(both, (plain + flipped) / 2, atol=1e-5)
    multi = predict(model, image, device="cpu", tta=("hflip", 0.75, 1.0, 1.25), tile=(24, 24))
    assert multi.probs.shape == (1, 4, 40, 56)
    assert torch.allclose(multi.probs.sum(1), torch.ones(1, 40, 56), atol=1e-5)
    assert torch.equal(multi.masks, multi.probs.argmax(1))
    with pytest.raises(SegnbError, match="tta takes"):
        predict(model, image, tta=("vflip",))
    with pytest.raises(SegnbError, match="overlap"):
        predict(model, image, tile=(16, 16), overlap=1.0)
    data = dataset([thin_lines()])
    colour = Colour(TrainingInput(size=(16, 16)))
    report = evaluate(colour, data, device="cpu", tta=("hflip", 1.0, 2.0))
    assert report.input["tta"] == ["hflip", 1.0, 2.0] and 0 < report.miou <= 1


def test_tiled_evaluate_scores_like_whole_for_a_one_by_one_model():
    data = dataset([thin_lines(64, 96), thin_lines(64, 96, column=40)])
    model = Colour(TrainingInput(size=None, source_size=(64, 96)))
    whole = evaluate(model, data, device="cpu")
    tiled = evaluate(model, data, device="cpu", tile=(24, 32))
    assert tiled.input["tiled"] and not whole.input["tiled"]
    assert tiled.scores.confusion == whole.scores.confusion


# ---------------------------------------------------------------- fit: validation and the recorded input


@pytest.fixture(scope="module")
def shapes_48():
    from segnb.data import load_shapes

    return load_shapes(n=12, size=48, seed=2)


@pytest.mark.parametrize("cache", ["auto", False])
def test_fit_validates_at_full_resolution_like_evaluate_and_records_its_input(shapes_48, cache, tmp_path):
    from conftest import tiny_model

    from segnb.models import load_model, save_model
    from segnb.train import fit

    model = tiny_model(shapes_48, "unet-classic")
    history = fit(model, shapes_48, epochs=1, batch_size=4, image_size=32, cache=cache, progress=False)
    assert history.protocol == "full"
    assert model.training_input.size == (32, 32) and model.training_input.source_size == (48, 48)
    report = evaluate(model, shapes_48, device="cpu")  # the recorded size, no image_size needed
    assert report.miou == pytest.approx(history.last("miou"), abs=1e-6)
    assert sum(report.pixels) == sum(int((m != 255).sum()) for _, m in shapes_48["validation"])  # 48x48 labels
    folder = save_model(model, tmp_path / "m")
    assert json.loads((folder / "model.json").read_text())["input"]["size"] == [32, 32]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model that knows its input loads without a note
        again = load_model(folder)
    assert again.training_input == model.training_input
    meta = json.loads((folder / "model.json").read_text())
    del meta["input"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="trained at is unknown"):
        assert training_input(load_model(folder)) is None  # saved before segnb recorded it
    untrained = save_model(tiny_model(shapes_48, "unet-classic"), tmp_path / "untrained")
    assert json.loads((untrained / "model.json").read_text())["input"] is None  # recorded: no training scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: it was never trained at another size
        assert training_input(load_model(untrained)) is None


def test_fit_with_the_resized_protocol_scores_like_evaluate_resized(shapes_48):
    from conftest import tiny_model

    from segnb.train import fit

    model = tiny_model(shapes_48, "unet-classic")
    history = fit(model, shapes_48, epochs=1, batch_size=4, image_size=32, protocol="resized", progress=False)
    assert history.protocol == "resized"
    report = evaluate(model, shapes_48, device="cpu", protocol="resized")
    assert report.miou == pytest.approx(history.last("miou"), abs=1e-6)
    with pytest.raises(SegnbError, match="protocol must be"):
        fit(model, shapes_48, epochs=1, protocol="papers", progress=False)


def test_the_inspectors_run_at_the_training_scale():
    from segnb.inspect.features import grad_cam, stage_features
    from segnb.models import build_model

    model = build_model("unet-classic", "vgg-tiny", num_classes=3)
    model.training_input = TrainingInput(size=(32, 48), source_size=(64, 96))
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    cam = grad_cam(model, image, target_class=1, stage=2)
    assert seen == [(32, 48)] and cam.shape == (64, 96)  # run at the training scale, shown on the image
    stages = stage_features(model, image)
    assert stages[0]["mean"].shape[-2:] == (32, 48)
