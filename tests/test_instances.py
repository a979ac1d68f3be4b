"""Instances in the data layer, Mask R-CNN training and its mask head, mask AP, panoptic merge and PQ."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import segnb
from segnb.callbacks import Callback, StopTraining
from segnb.data.instance_maps import coco_instance_map, decode_rle
from segnb.errors import DatasetError, ModelConfigError
from segnb.instances import instance_targets, mask_ap, panoptic_quality
from segnb.instances.maskhead import mask_head_view, paste, resolution_error
from segnb.instances.panoptic import colour_panoptic, panoptic_merge
from segnb.train import fit


@pytest.fixture(scope="module")
def shapes():
    return segnb.load_dataset("shapes", n=12, size=64)


# ---------------------------------------------------------------- data


def test_shapes_instance_ids_are_one_per_visible_thing(shapes):
    assert shapes.things == ["circle", "square", "triangle", "ring"]
    assert shapes.stuff == ["sky", "grass", "wall"] and shapes.has_instances
    for i in range(len(shapes["train"])):
        image, mask, ids = shapes["train"].get(i, instances=True)
        assert ids.shape == mask.shape and ids.dtype == np.int64
        assert np.array_equal(ids > 0, mask >= 3)  # things have ids, stuff has none
        present = np.unique(ids[ids > 0])
        assert list(present) == list(range(1, len(present) + 1))  # numbered 1..n
        for k in present:
            assert len(np.unique(mask[ids == k])) == 1  # one class per instance
    plain = segnb.load_dataset("shapes", n=12, size=64)["train"][0]
    assert np.array_equal(plain[0], shapes["train"][0][0])  # the images did not change


def test_instance_targets_boxes_labels_masks():
    mask = np.zeros((10, 12), np.int64)
    ids = np.zeros((10, 12), np.int64)
    mask[2:5, 3:7], ids[2:5, 3:7] = 4, 1
    mask[6:9, 0:2], ids[6:9, 0:2] = 5, 2
    mask[0, 0], ids[0, 0] = 1, 3  # an instance of a stuff class: skipped
    t = instance_targets(mask, ids, thing_ids=[4, 5])
    assert t["boxes"].tolist() == [[3, 2, 7, 5], [0, 6, 2, 9]]
    assert t["labels"].tolist() == [4, 5] and t["masks"].shape == (2, 10, 12)
    assert int(t["masks"][0].sum()) == 12


def _write_folder(root, with_instances=True):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    if with_instances:
        (root / "instances").mkdir()
    for i in range(3):
        image = np.full((16, 20, 3), 40 * i, np.uint8)
        mask = np.zeros((16, 20), np.uint8)
        ids = np.zeros((16, 20), np.uint16)
        mask[2:6, 2:6], ids[2:6, 2:6] = 1, 1
        mask[8:12, 10:18], ids[8:12, 10:18] = 1, 2
        Image.fromarray(image).save(root / "images" / f"a{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"a{i}.png")
        if with_instances:
            Image.fromarray(ids).save(root / "instances" / f"a{i}.png")


def test_folder_instance_maps(tmp_path):
    _write_folder(tmp_path)
    data = segnb.load_dataset(tmp_path, class_names=["bg", "cell"], things=["cell"])
    assert data.has_instances and data.stuff == ["bg"]
    _, mask, ids = data["train"].get(0, instances=True)
    assert set(np.unique(ids)) == {0, 1, 2} and np.array_equal(ids > 0, mask == 1)


def test_folder_instance_errors_are_clear(tmp_path):
    _write_folder(tmp_path / "a", with_instances=False)
    data = segnb.load_dataset(tmp_path / "a", class_names=["bg", "cell"])
    with pytest.raises(DatasetError, match="no instance maps.*instances/"):
        data["train"].get(0, instances=True)
    _write_folder(tmp_path / "b")
    (tmp_path / "b" / "instances" / "a1.png").unlink()
    with pytest.raises(DatasetError, match=r"1 images have no instance map \['a1'\]"):
        segnb.load_dataset(tmp_path / "b", class_names=["bg", "cell"])
    _write_folder(tmp_path / "c")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "c" / "instances" / "a0.png")
    data = segnb.load_dataset(tmp_path / "c", class_names=["bg", "cell"], val_fraction=0)
    with pytest.raises(DatasetError, match="instance map is"):
        data["train"].get(0, instances=True)
    with pytest.raises(DatasetError, match="things=.*not class names"):
        segnb.load_dataset(tmp_path / "c", class_names=["bg", "cell"], things=["dog"])


def test_coco_rle_matches_pycocotools():
    pycoco = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(3, 40, 2)
        mask = np.asfortranarray(rng.random((h, w)) < rng.random())
        encoded = pycoco.encode(mask.astype(np.uint8))
        assert np.array_equal(decode_rle(encoded["counts"], encoded["size"]), mask)
    assert decode_rle([1, 2, 1], (2, 2)).tolist() == [[False, True], [True, False]]
    with pytest.raises(DatasetError, match="runs add up"):
        decode_rle([1, 2], (2, 2))


def test_folder_with_coco_json_polygons_and_rle(tmp_path):
    pycoco = pytest.importorskip("pycocotools.mask")
    _write_folder(tmp_path, with_instances=False)
    square = np.zeros((16, 20), np.uint8)
    square[8:12, 10:18] = 1
    rle = pycoco.encode(np.asfortranarray(square))
    images = [{"id": i, "file_name": f"a{i}.png", "height": 16, "width": 20} for i in range(3)]
    annotations = []
    for i in range(3):
        annotations.append({"id": 2 * i, "image_id": i, "category_id": 1,
                            "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]})
        annotations.append({"id": 2 * i + 1, "image_id": i, "category_id": 1,
                            "segmentation": {"counts": rle["counts"].decode(), "size": [16, 20]}})
    (tmp_path / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    data = segnb.load_dataset(tmp_path, class_names=["bg", "cell"], things=["cell"], val_fraction=0)
    _, _, ids = data["train"].get(0, instances=True)
    assert np.array_equal(ids == 2, square.astype(bool))
    assert np.count_nonzero(ids == 1) >= 16  # the polygon, edges included
    assert coco_instance_map([], 4, 5).shape == (4, 5)


def test_hub_instance_column(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rows = {"image": [], "label": [], "instances": []}
    for i in range(4):
        mask = np.zeros((8, 8), np.uint8)
        ids = np.zeros((8, 8), np.uint8)
        mask[1:4, 1:4], ids[1:4, 1:4] = 1, 1
        rows["image"].append(Image.fromarray(np.full((8, 8, 3), i, np.uint8)))
        rows["label"].append(Image.fromarray(mask))
        rows["instances"].append(Image.fromarray(ids))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image(),
                                  "instances": datasets.Image()})
    data = segnb.load_dataset(datasets.Dataset.from_dict(rows, features=features), class_names=["bg", "box"],
                              things=["box"])
    assert data.info["instance_column"] == "instances" and data.has_instances
    assert int(data["train"].instances(0).sum()) == 9


# ---------------------------------------------------------------- Mask R-CNN


def test_maskrcnn_builds_offline_and_speaks_the_datasets_class_ids(shapes):
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things)
    assert model.thing_ids == [3, 4, 5, 6] and model.num_classes == 7
    image, mask, ids = shapes["train"].get(0, instances=True)
    target = instance_targets(mask, ids, model.thing_ids)
    model.train()
    losses = model(torch.randn(1, 3, 64, 64), [target])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    model.eval()
    with torch.no_grad():
        (out,) = model(torch.randn(1, 3, 64, 64))
    assert set(out["labels"].tolist()) <= {3, 4, 5, 6}
    assert out["masks"].shape[1:] == (1, 64, 64)
    assert segnb.describe_model(model)["output_stride"] == 32
    assert "maskrcnn" in segnb.list_architectures("instance")
    with pytest.raises(ModelConfigError, match="CNN backbone"):
        segnb.build_model("maskrcnn", "test_vit", class_names=shapes.class_names)
    with pytest.raises(ModelConfigError, match="things="):
        segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=["dog"])
    with pytest.raises(ModelConfigError, match="needs targets"):
        model.train()(torch.randn(1, 3, 64, 64))


class _StopAfter(Callback):
    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, trainer):
        if trainer.step >= self.steps:
            raise StopTraining("enough")


def test_fit_trains_maskrcnn_with_loss_terms_checkpoints_and_stop(shapes, tmp_path):
    torch.manual_seed(0)
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                              image_size=64)
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, shapes, epochs=1, batch_size=4, lr=1e-3, progress=False, checkpoint_dir=tmp_path / "run",
                  run=tmp_path / "record")
    assert segnb.runs.load_run(tmp_path / "record").config["train"]["loss"].startswith("Mask R-CNN's own")
    record = history.epochs[-1]
    for term in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"):
        assert math.isfinite(record[term]) and record[term] >= 0
    assert record["train_loss"] == pytest.approx(sum(record[t] for t in (
        "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")), rel=1e-4)
    assert 0 <= record["mask_ap50"] <= 1 and math.isnan(record["val_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert (tmp_path / "run" / "last" / "model.safetensors").is_file()
    loaded = segnb.load_model(tmp_path / "run" / "last").eval()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0]["boxes"], model(x)[0]["boxes"])
    stopped = fit(model, shapes, epochs=3, batch_size=2, progress=False, callbacks=[_StopAfter(2)])
    assert stopped.stopped == "enough" and stopped.steps == 2


def test_out_of_memory_probe_names_a_batch_size_for_maskrcnn(shapes):
    """The probe slices the per-image targets like the images, and logs nothing of its trial batches."""
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                              image_size=64)
    backbone_forward = model.detector.backbone.forward

    def small_gpu(x):
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return backbone_forward(x)

    model.detector.backbone.forward = small_gpu
    logged = {}

    class Terms(Callback):
        def on_step_end(self, trainer):
            logged["steps"] = trainer.step

    with pytest.warns(UserWarning, match="batch_size=2 fits"):
        history = fit(model, shapes, epochs=1, batch_size=8, progress=False, callbacks=[Terms()])
    assert history.stopped.startswith("CUDA out of memory at batch_size=8") and "intact" in history.stopped
    assert "steps" not in logged and history.epochs == []  # no trial batch counted as a step


def test_evaluate_and_predict_take_an_instance_model(shapes):
    from segnb.instances import InstanceScores
    from segnb.instances.train import predict_instances
    from segnb.train import evaluate, predict

    torch.manual_seed(0)
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                              image_size=64)
    model.detector.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection
    scores = evaluate(model, shapes)
    assert isinstance(scores, InstanceScores) and scores.miou is None
    assert 0 <= scores.mask_ap <= scores.mask_ap50 <= 1 and scores.images == len(shapes["validation"])
    assert "mask AP50" in scores.format() and "not mIoU" in scores.format()
    image = shapes["validation"][0][0]
    model.train()
    found = predict(model, [image, image[:48, :40]])
    assert model.training  # its mode is given back
    assert len(found) == 2 and len(found[0]) > 0
    assert found[0].masks.shape[1:] == (64, 64) and found[1].masks.shape[1:] == (48, 40)
    assert found[0].masks.dtype == torch.bool and torch.equal(found[0].masks, found[0].soft > 0.5)
    assert set(found[0].labels.tolist()) <= set(model.thing_ids)
    assert bool((found[0].scores[:-1] >= found[0].scores[1:]).all())  # most confident first
    model.eval()
    with torch.no_grad():  # the same detections as the model's own forward pass
        x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(model.mean).view(3, 1, 1))
        (direct,) = model((x / torch.tensor(model.std).view(3, 1, 1))[None])
    assert torch.allclose(found[0].boxes, direct["boxes"]) and torch.equal(found[0].labels, direct["labels"])
    kept = predict_instances(model, image, score_threshold=float(found[0].scores[2]))[0]
    assert len(kept) == 3
    with pytest.raises(segnb.errors.SegnbError, match="temperature"):
        predict(model, image, temperature=2.0)


def test_evaluate_and_predict_leave_an_instance_models_work_to_the_model(shapes):
    """evaluate() and predict() sit below segnb.instances: after their own checks, they call the
    model's evaluate_split and predict_images (segnb.infer.InstanceModel), whatever model it is."""
    from segnb.train import evaluate, predict

    class Detector(torch.nn.Module):
        task, num_classes = "instance", shapes.num_classes

        def evaluate_split(self, *args):
            return "scored", args

        def predict_images(self, *args):
            return "found", args

    model = Detector()
    assert evaluate(model, shapes, "train", batch_size=2, precision="fp32") == (
        "scored", (shapes, "train", 2, None, "auto", "fp32"))
    image = shapes["validation"][0][0]
    what, (images, batch_size, device, precision) = predict(model, image, batch_size=3, device="cpu")
    assert what == "found" and len(images) == 1 and np.array_equal(images[0], image)
    assert (batch_size, device, precision) == (3, "cpu", None)
    model.num_classes = 3
    with pytest.raises(segnb.errors.SegnbError, match="predicts 3 classes"):
        evaluate(model, shapes)


def test_fit_refuses_a_dataset_without_instances(tmp_path):
    _write_folder(tmp_path, with_instances=False)
    data = segnb.load_dataset(tmp_path, class_names=["bg", "cell"])
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=data.class_names, things=["cell"])
    with pytest.raises(DatasetError, match="no instance maps"):
        fit(model, data, epochs=1, progress=False)


def test_mask_ap_on_cases_computed_by_hand():
    truth = np.zeros((1, 20, 20), bool)
    truth[0, 0:10, 0:10] = True  # 100 pixels
    exact = {"masks": torch.tensor(truth), "scores": torch.tensor([0.9]), "labels": torch.tensor([3])}
    target = {"masks": torch.tensor(truth), "labels": torch.tensor([3])}
    scores = mask_ap([exact], [target])
    assert scores.mask_ap == pytest.approx(1.0) and scores.mask_ap50 == pytest.approx(1.0)
    shifted = np.zeros((1, 20, 20), bool)
    shifted[0, 0:10, 2:12] = True  # IoU = 80 / 120 = 0.667: a hit at 0.5, a miss at 0.75
    pred = {"masks": torch.tensor(shifted), "scores": torch.tensor([0.9]), "labels": torch.tensor([3])}
    scores = mask_ap([pred], [target])
    assert scores.mask_ap50 == pytest.approx(1.0) and scores.mask_ap75 == pytest.approx(0.0)
    # thresholds 0.50, 0.55, 0.60, 0.65 hit; six of ten miss
    assert scores.mask_ap == pytest.approx(0.4)
    wrong_class = {**pred, "labels": torch.tensor([4])}
    assert mask_ap([wrong_class], [target]).mask_ap50 == pytest.approx(0.0)


def test_pasted_mask_boundary_error_grows_with_object_size():
    errors = []
    for radius in (10, 40, 150):
        n = 2 * radius + 12
        yy, xx = np.mgrid[0:n, 0:n] - n / 2
        errors.append(resolution_error(np.hypot(yy, xx) <= radius))
    assert errors[0]["max"] < errors[1]["max"] < errors[2]["max"]
    assert errors[2]["mean"] > 2 * errors[0]["mean"]
    assert errors[2]["cell"] == pytest.approx(301 / 28, rel=0.02)  # one 28x28 cell spans 10.75 pixels


def test_mask_head_view_comes_from_the_models_own_computation(shapes):
    torch.manual_seed(0)
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                              image_size=64)
    model.detector.roi_heads.score_thresh = 0.0  # an untrained model: keep every detection
    image, mask, ids = shapes["train"].get(0, instances=True)
    truth = np.stack([ids == k for k in np.unique(ids[ids > 0])])
    view = mask_head_view(model, image, detection=0, truth_masks=truth)
    assert view.logits.shape == (28, 28) and view.target.shape == (28, 28)
    assert view.crop.shape == (112, 112, 3)
    # torchvision's own pasted mask equals the hooked 28x28 sigmoid pasted into the box
    np.testing.assert_allclose(paste(view.soft, view.box, image.shape[:2]), view.pasted_soft, atol=1e-5)
    assert view.pasted(0.0).sum() >= view.pasted(0.5).sum() >= view.pasted(0.99).sum()
    assert 0.0 <= view.iou() <= 1.0


# ---------------------------------------------------------------- panoptic


def test_panoptic_quality_on_a_case_computed_by_hand():
    # sky (stuff 0) on the left half; two circles (thing 3) of 8 pixels each on the right
    true_sem = np.zeros((4, 8), np.int64)
    true_ins = np.zeros((4, 8), np.int64)
    true_sem[:, 4:], true_ins[:, 4:6], true_ins[:, 6:] = 3, 1, 2
    pred_sem = np.zeros((4, 8), np.int64)  # sky wherever no circle is predicted
    pred_ins = np.zeros((4, 8), np.int64)
    pred_sem[0:3, 4:6], pred_ins[0:3, 4:6] = 3, 5  # 6 of circle 1's 8 pixels: IoU 0.75, a match
    pred_sem[0, 6:], pred_ins[0, 6:] = 3, 9  # 2 of circle 2's 8 pixels: IoU 0.25, a false positive
    result = panoptic_quality(pred_sem, pred_ins, true_sem, true_ins, things=[3], stuff=[0])
    circle, sky = result["per_class"][3], result["per_class"][0]
    assert (circle["tp"], circle["fp"], circle["fn"]) == (1, 1, 1)  # circle 2 is missed
    assert circle["sq"] == pytest.approx(0.75) and circle["rq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert circle["pq"] == pytest.approx(0.375)
    # the predicted sky: its 16 true pixels plus the 2 + 6 circle pixels no circle claimed: IoU 16 / 24
    assert (sky["tp"], sky["fp"], sky["fn"]) == (1, 0, 0) and sky["sq"] == pytest.approx(2 / 3)
    assert sky["pq"] == pytest.approx(2 / 3) and sky["rq"] == 1.0
    assert result["pq"] == pytest.approx((0.375 + 2 / 3) / 2) and result["sq"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert result["rq"] == pytest.approx((0.5 + 1) / 2)
    # void in the truth is left out: voiding circle 2 removes the false negative and the false positive
    true_sem[:, 6:] = 255
    circle = panoptic_quality(pred_sem, pred_ins, true_sem, true_ins, things=[3], stuff=[0])["per_class"][3]
    assert (circle["tp"], circle["fp"], circle["fn"]) == (1, 0, 0) and circle["pq"] == pytest.approx(0.75)


def test_panoptic_quality_equals_torchmetrics_on_random_cases():
    from torchmetrics.detection import PanopticQuality

    things, stuff = [3, 4], [0, 1]
    rng = np.random.default_rng(0)
    for case in range(12):
        h, w = 24, 24
        true_sem = rng.choice([0, 1], (h, w))
        true_ins = np.zeros((h, w), np.int64)
        for k in range(1, rng.integers(1, 5)):
            y, x, s = rng.integers(0, 18), rng.integers(0, 18), rng.integers(3, 7)
            true_sem[y : y + s, x : x + s], true_ins[y : y + s, x : x + s] = rng.choice(things), k
        pred_sem, pred_ins = true_sem.copy(), true_ins.copy()
        shift = rng.integers(-2, 3, 2)
        pred_sem, pred_ins = np.roll(pred_sem, shift, (0, 1)), np.roll(pred_ins, shift, (0, 1))
        flip = rng.random((h, w)) < 0.1
        pred_sem[flip] = rng.choice([0, 1, 3, 4, 255], flip.sum())  # 255: nothing predicted there
        pred_ins[flip & np.isin(pred_sem, things)] = 7
        stuff_ids = pred_ins.copy()  # ids on stuff pixels mean nothing: ours must ignore them
        stuff_ids[~np.isin(pred_sem, things)] = rng.integers(0, 3, np.count_nonzero(~np.isin(pred_sem, things)))
        if case % 3 == 0:
            true_sem[rng.random((h, w)) < 0.05] = 255  # void in the truth
        ours = panoptic_quality(pred_sem, stuff_ids, true_sem, true_ins, things, stuff)
        metric = PanopticQuality(things=set(things), stuffs=set(stuff), return_sq_and_rq=True,
                                 return_per_class=True, allow_unknown_preds_category=True)
        preds = torch.tensor(np.stack([pred_sem, np.where(np.isin(pred_sem, things), pred_ins, 0)], -1))[None]
        target = torch.tensor(np.stack([true_sem, np.where(np.isin(true_sem, things), true_ins, 0)], -1))[None]
        per_class = metric(preds, target).reshape(-1, 3)  # rows: things, then stuff, each sorted
        present = (metric.true_positives + metric.false_positives + metric.false_negatives) > 0
        pq, sq, rq = per_class[present].mean(0).tolist()
        assert ours["pq"] == pytest.approx(pq, abs=1e-6), case
        assert ours["sq"] == pytest.approx(sq, abs=1e-6) and ours["rq"] == pytest.approx(rq, abs=1e-6)
        for k, c in enumerate(things + stuff):
            if present[k]:
                assert ours["per_class"][c]["pq"] == pytest.approx(float(per_class[k, 0]), abs=1e-6)


def test_panoptic_merge_by_hand():
    semantic = np.zeros((6, 6), np.int64)  # all sky (stuff 0)
    semantic[3:, :] = 1  # grass
    semantic[0, 0] = 3  # a thing pixel no detection covers: void
    masks = np.zeros((3, 1, 6, 6), np.float32)
    masks[0, 0, 1:3, 1:3] = 0.9  # score 0.95
    masks[1, 0, 1:3, 1:4] = 0.8  # score 0.9, 4 of 6 pixels taken by the first: dropped (overlap 0.5)
    masks[2, 0, 4:6, 4:6] = 0.7  # score 0.3: below the threshold
    detections = {"masks": torch.tensor(masks), "scores": torch.tensor([0.95, 0.9, 0.3]),
                  "labels": torch.tensor([4, 5, 4])}
    classes, ids = panoptic_merge(semantic, detections, things=[3, 4, 5, 6], stuff=[0, 1, 2], min_stuff_area=1)
    assert (ids[1:3, 1:3] == 1).all() and ids.max() == 1 and (classes[1:3, 1:3] == 4).all()
    assert classes[0, 0] == 255 and (classes[3:] == 1).all() and classes[0, 5] == 0
    picture = colour_panoptic(np.zeros((6, 6, 3), np.uint8), classes, ids, segnb.data.shapes.SHAPES_PALETTE)
    assert picture.shape == (6, 6, 3) and picture.dtype == np.uint8


@pytest.mark.slow
def test_maskrcnn_learns_the_built_in_dataset():
    """A loose floor under benchmarks/bench_instances.py (goal there: AP50 >= 0.5 in 3 minutes)."""
    from segnb.instances.maskrcnn import FIT_DEFAULTS
    from segnb.train import evaluate

    torch.manual_seed(0)
    data = segnb.load_dataset("shapes", n=160, size=64)
    model = segnb.build_model("maskrcnn", "mobilenetv3_small_100", class_names=data.class_names,
                              things=data.things, image_size=64)
    untrained = evaluate(model, data).mask_ap50
    history = fit(model, data, epochs=2, **FIT_DEFAULTS, progress=False)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    trained = evaluate(model, data).mask_ap50
    assert trained == pytest.approx(history.epochs[-1]["mask_ap50"])
    assert trained >= 0.05 and trained > untrained + 0.04


def test_maskrcnn_takes_pretrained_weights_like_every_encoder(tmp_path, shapes):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("test_resnet")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    model = segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, things=shapes.things,
                              pretrained=tmp_path / "w.safetensors")
    assert torch.equal(model.encoder.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(ModelConfigError, match="no such weights file"):
        segnb.build_model("maskrcnn", "test_resnet", class_names=shapes.class_names, pretrained=tmp_path / "x")
