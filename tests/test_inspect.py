import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segnb import inspect as ins
from segnb import viz
from segnb.classical import METHODS, label_segments, mrf_smooth, score_segments, segment
from segnb.data import load_shapes
from segnb.models import build_model

# ---------------------------------------------------------------- attention


@pytest.fixture(scope="module")
def vit_model():
    torch.manual_seed(0)
    return build_model("setr-pup", "test_vit", num_classes=3).eval()


def test_attention_from_a_timm_vit_has_one_value_per_patch_and_rows_summing_to_one(vit_model):
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    maps = ins.attention_maps(vit_model, image)
    vit = ins.find_vit(vit_model)
    assert maps.grid == (4, 5) and maps.prefix == vit.num_prefix_tokens
    tokens = maps.prefix + 20
    assert maps.attn.shape == (len(vit.blocks), vit.blocks[0].attn.num_heads, tokens, tokens)
    assert np.allclose(maps.attn.sum(-1), 1.0, atol=1e-5)
    assert maps.cls_map(layer=0, head=1).shape == (4, 5)
    assert maps.query_map((1, 2), layer=-1).shape == (4, 5)
    assert np.array_equal(maps.query_map((20, 40), pixel=True), maps.query_map((1, 2)))
    assert ins.upsample_map(maps.cls_map(), (64, 80)).shape == (64, 80)


def test_fused_attention_is_restored_and_no_hooks_are_left(vit_model):
    vit = ins.find_vit(vit_model)
    for block in vit.blocks:
        block.attn.fused_attn = True
    maps = ins.attention_maps(vit_model, np.zeros((32, 32, 3), np.uint8))
    assert maps.fused_was_on
    assert all(block.attn.fused_attn for block in vit.blocks)
    assert all(not block.attn.attn_drop._forward_hooks for block in vit.blocks)


def test_query_maps_change_with_the_patch(vit_model):
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    maps = ins.attention_maps(vit_model, image)
    assert not np.allclose(maps.query_map((0, 0)), maps.query_map((3, 3)))


def test_rollout_of_identity_attention_is_the_identity():
    eye = np.broadcast_to(np.eye(6), (4, 3, 6, 6)).copy()
    assert np.allclose(ins.rollout(eye), np.eye(6))
    assert np.allclose(ins.rollout(eye, head_fusion="max", discard_ratio=0.5), np.eye(6))


def test_rollout_rows_sum_to_one_and_discard_sparsifies():
    rng = np.random.default_rng(0)
    a = rng.random((3, 2, 8, 8))
    a /= a.sum(-1, keepdims=True)
    r = ins.rollout(a, "mean")
    assert np.allclose(r.sum(1), 1.0)
    sharp = ins.rollout(a, "mean", discard_ratio=0.75)
    assert np.allclose(sharp.sum(1), 1.0) and not np.allclose(sharp, r)
    with pytest.raises(ValueError, match="head_fusion"):
        ins.rollout(a, "median")


def test_models_without_a_vit_say_what_to_use():
    with pytest.raises(ValueError, match="grad_cam"):
        ins.attention_maps(build_model("fcn32s", "vgg-tiny", num_classes=2), np.zeros((32, 32, 3), np.uint8))


# ---------------------------------------------------------------- CNN features


def test_grad_cam_and_stage_features():
    torch.manual_seed(0)
    model = build_model("unet", "test_resnet", num_classes=3).eval()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), bool)
    region[:32, :32] = True
    cam = ins.grad_cam(model, image, target_class=1, region=region)
    assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() <= 1.0
    assert all(p.grad is None for p in model.parameters())  # inspection leaves no gradients behind
    stages = ins.stage_features(model, image, top=2)
    assert [s["stride"] for s in stages] == [2, 4, 8, 16, 32]
    assert stages[-1]["top"].shape[0] == 2


# ---------------------------------------------------------------- upsampling


def test_toy_operators_on_the_slides_examples():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert ins.toy_upsample(x, "nearest").tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert ins.toy_upsample(x, "bed_of_nails").tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    source = np.array([[0, 9, 0, 0], [0, 0, 0, 9], [9, 0, 0, 0], [0, 0, 9, 0]])
    assert ins.toy_upsample(x, "max_unpool", pool_source=source).tolist() == [
        [0, 1, 0, 0], [0, 0, 0, 2], [3, 0, 0, 0], [0, 0, 4, 0]]
    # "Input gives weight for filter, sum where outputs overlap": kernel of ones, 3x3, stride 2.
    t = ins.toy_upsample(x, "transposed", kernel_size=3, padding=0)
    assert t.shape == (5, 5)
    assert t[2, 2] == 1 + 2 + 3 + 4 and t[0, 2] == 1 + 2 and t[0, 0] == 1


def test_transposed_convolution_is_the_transposed_matrix():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=3)
    for stride, padding in ((1, 0), (2, 0), (2, 1)):
        n_in = 5
        transposed = ins.conv_transpose1d_matrix(kernel, n_in, stride, padding)
        n_out = transposed.shape[0]
        forward = ins.conv1d_matrix(kernel, n_out, stride, padding)
        assert forward.shape == (n_in, n_out)
        assert np.allclose(transposed, forward.T)
        x = rng.normal(size=n_in)
        torch_out = F.conv_transpose1d(torch.tensor(x)[None, None], torch.tensor(kernel)[None, None],
                                       stride=stride, padding=padding)[0, 0].numpy()
        assert np.allclose(transposed @ x, torch_out)
        y = rng.normal(size=n_out)
        conv_out = F.conv1d(torch.tensor(y)[None, None], torch.tensor(kernel)[None, None], stride=stride,
                            padding=padding)[0, 0].numpy()
        assert np.allclose(forward @ y, conv_out)


def test_overlap_maps_kernel3_uneven_kernel4_even():
    k3 = ins.overlap_map(3, 2, 0, 4)
    interior = k3[1:-1, 1:-1]
    assert set(np.unique(interior)) == {1.0, 2.0, 4.0}  # the 1-2-4 checkerboard
    assert k3[2, 2] == 4 and k3[2, 3] == 2 and k3[3, 3] == 1
    k4 = ins.overlap_map(4, 2, 1, 4)
    assert k4.shape == (8, 8) and np.all(k4[1:-1, 1:-1] == 4)  # flat inside


def test_checkerboard_score():
    board = np.indices((16, 16)).sum(0) % 2
    assert ins.checkerboard_score(board) == pytest.approx(1.0)
    assert ins.checkerboard_score(np.ones((16, 16))) == 0.0
    smooth = np.add.outer(np.arange(16.0), np.arange(16.0))
    assert ins.checkerboard_score(smooth) < 0.05
    constant = torch.ones(1, 1, 8, 8)
    transposed = F.conv_transpose2d(constant, torch.ones(1, 1, 3, 3), stride=2, padding=1, output_padding=1)
    resize_conv = F.conv2d(F.interpolate(constant, scale_factor=2, mode="nearest"), torch.ones(1, 1, 3, 3) / 9,
                           padding=1)
    assert ins.checkerboard_score(transposed[0, 0].numpy()) > 3 * ins.checkerboard_score(resize_conv[0, 0].numpy())


def test_untrained_transposed_decoder_already_shows_checkerboards():
    image = np.full((64, 64, 3), 128, np.uint8)
    scores = {}
    for kind in ("transposed3", "bilinear"):
        torch.manual_seed(0)
        model = build_model("fcn32s", "vgg-tiny", num_classes=4, upsample=kind, final="stacked")
        acts = ins.decoder_activations(model, image)
        assert len(acts) == 5 and all(a["kind"] == kind for a in acts)
        scores[kind] = np.mean([a["checkerboard"] for a in acts])
    assert scores["transposed3"] > scores["bilinear"]


# ---------------------------------------------------------------- soft masks


def test_soft_mask_temperature_entropy_margin():
    logits = np.random.default_rng(0).normal(size=(5, 6, 7)) * 3
    p = ins.soft_mask(logits)
    assert np.allclose(p.sum(0), 1.0, atol=1e-6)
    hot, cold = ins.soft_mask(logits, 10.0), ins.soft_mask(logits, 0.1)
    assert ins.entropy_map(hot).mean() > ins.entropy_map(p).mean() > ins.entropy_map(cold).mean()
    assert np.array_equal(ins.hard_mask(hot), ins.hard_mask(p))  # temperature keeps the argmax
    uniform = np.full((4, 3, 3), 0.25)
    assert np.allclose(ins.entropy_map(uniform), math.log(4))
    assert np.allclose(ins.margin_map(uniform), 0.0)
    assert ins.threshold_mask(p, 0, 0.0).all()
    with pytest.raises(ValueError):
        ins.soft_mask(logits, 0)


def test_calibration_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(0)
    n, h, w = 50, 20, 20
    confidence = rng.uniform(0.5, 1.0, (n, h, w))
    correct = rng.random((n, h, w)) < confidence  # correct exactly as often as confident
    target = np.where(correct, 0, 1)
    probs = np.stack([confidence, 1 - confidence], axis=1)
    calibrated = ins.calibration(probs, target, bins=10)
    assert calibrated.ece < 0.02 and calibrated.counts.sum() == n * h * w
    wrong_half = np.where(rng.random((n, h, w)) < 0.5, 0, 1)
    overconfident = ins.calibration(np.stack([np.full((n, h, w), 0.99), np.full((n, h, w), 0.01)], 1), wrong_half)
    assert overconfident.ece == pytest.approx(0.49, abs=0.02)


def test_roi_soft_mask_the_mask_rcnn_route():
    probs = np.zeros((2, 40, 40))
    probs[1, 10:20, 10:30] = 1.0
    probs[0] = 1 - probs[1]
    out = ins.roi_soft_mask(probs, (8, 8, 32, 22), class_index=1)
    assert out["small"].shape == (28, 28) and out["soft"].shape == (14, 24)
    assert out["mask"][12:18, 12:28].all() and not out["mask"][:8].any() and not out["mask"][:, 33:].any()


# ---------------------------------------------------------------- IoU reports


def test_iou_by_object_size_on_a_constructed_case():
    target = np.zeros((100, 100), np.int64)
    target[10:50, 10:50] = 1  # a large object (1600 px), found exactly
    target[80:84, 80:84] = 1  # a small object (16 px), missed
    pred = np.zeros_like(target)
    pred[10:50, 10:50] = 1
    bins = ins.iou_by_object_size(pred, target, classes=[1], bins=(0, 100, 10_000))
    assert bins[0]["objects"] == 1 and bins[0]["mean_iou"] == 0.0
    assert bins[1]["objects"] == 1 and bins[1]["mean_iou"] == 1.0


def test_normalized_confusion_and_table():
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    n = ins.normalized_confusion(cm)
    assert np.allclose(n[0], [0.8, 0.2, 0]) and np.allclose(n[2], 0)
    rows = ins.per_class_table(cm, ["a", "b", "c"])
    assert rows[0]["iou"] == pytest.approx(8 / 11) and rows[2]["iou"] is None and rows[1]["predicted"] == 11


def test_boundary_iou():
    target = np.zeros((40, 40), np.int64)
    target[10:30, 10:30] = 1
    assert ins.boundary_iou(target, target, 2)[1] == 1.0
    shifted = np.roll(target, 3, axis=1)
    b = ins.boundary_iou(shifted, target, 2)[1]
    overall = ((shifted == 1) & (target == 1)).sum() / ((shifted == 1) | (target == 1)).sum()
    assert b < overall  # boundary IoU is stricter than mask IoU


# ---------------------------------------------------------------- classical


def test_kmeans_recovers_a_two_colour_image_exactly():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 12:] = (200, 40, 40)
    target = (np.arange(30) >= 12).astype(np.int64)[None].repeat(20, 0)
    segments = segment(image, "kmeans", k=2)
    assert np.array_equal(label_segments(segments, target, 2), target)
    assert score_segments(segments, target, 2).miou == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_every_classical_method_segments_and_scores(method):
    data = load_shapes(n=4, size=48, seed=0)
    image, target = data["train"][0]
    segments = segment(image, method)
    assert segments.shape == target.shape and segments.min() == 0
    scores = score_segments(segments, target, data.num_classes)
    assert 0.0 < scores.pixel_accuracy <= 1.0


def test_unknown_method_and_parameter():
    with pytest.raises(ValueError, match="Unknown method"):
        segment(np.zeros((8, 8, 3)), "snakes")
    with pytest.raises(TypeError, match="does not take"):
        segment(np.zeros((8, 8, 3)), "kmeans", n_segments=3)


def test_mrf_smoothing_removes_isolated_noise():
    probs = np.zeros((2, 20, 20))
    probs[0] = 0.8
    probs[1] = 0.2
    probs[:, 10, 10] = (0.4, 0.6)  # one noisy pixel
    assert ins.hard_mask(probs)[10, 10] == 1
    assert mrf_smooth(probs, beta=1.0)[10, 10] == 0
    assert mrf_smooth(probs, beta=0.0)[10, 10] == 1


# ---------------------------------------------------------------- viz


def test_colorize_overlay_grid_and_figures():
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    mask = np.array([[0, 1], [255, 1]])
    colours = viz.colorize(mask, palette)
    assert colours[0, 1].tolist() == [255, 0, 0] and colours[1, 0].tolist() == list(viz.VOID_COLOUR)
    image = np.full((2, 2, 3), 100, np.uint8)
    assert np.array_equal(viz.overlay(image, mask, palette, alpha=0.0), image)
    full = viz.overlay(image, mask, palette, alpha=1.0)
    assert full[0, 1].tolist() == [255, 0, 0] and full[1, 0].tolist() == [100, 100, 100]  # void untouched
    only0 = viz.overlay(image, mask, palette, alpha=1.0, visible=[0])
    assert only0[0, 1].tolist() == [100, 100, 100]
    assert viz.grid([image] * 5, columns=2, gap=1).shape == (3 * 2 + 2, 2 * 2 + 1, 3)
    assert viz.heatmap_rgb(np.arange(4.0).reshape(2, 2)).dtype == np.uint8
    bars = viz.iou_bar_figure(["a", "b", "c"], [0.9, None, 0.2], sort=True)
    assert list(bars.data[0].y) == ["b", "c", "a"]
    assert viz.confusion_figure([[1, 1], [0, 2]], ["a", "b"]).data[0].z[0][0] == 0.5
    assert len(viz.curves_figure([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "miou": 0.3}]).data) == 3
    assert viz.legend(["a", "b"], palette) == [("a", "#000000"), ("b", "#ff0000")]
    epochs = [{"epoch": 1, "iou": [0.1, None]}, {"epoch": 2, "iou": [0.4, 0.5]}]
    lines = viz.class_curves_figure(epochs, ["a", "b"], palette)
    assert [t.name for t in lines.data] == ["a", "b"] and list(lines.data[0].y) == [0.1, 0.4]
    assert lines.data[1].line.color == "#ff0000"
    sizes = viz.size_iou_figure([{"min_area": 0, "max_area": 64, "mean_iou": 0.5, "objects": 3},
                                 {"min_area": 64, "max_area": float("inf"), "mean_iou": None, "objects": 0}])
    assert list(sizes.data[0].x) == ["< 64", ">= 64"] and list(sizes.data[0].y) == [0.5, 0]


def test_classical_and_model_in_one_table():
    from segnb.classical import compare

    data = load_shapes(n=6, size=48, seed=0)
    model = build_model("fcn32s", "vgg-tiny", class_names=data.class_names)
    rows = compare(data, methods=("kmeans", "slic"), images=2, model=model)
    assert [r["method"] for r in rows] == ["kmeans", "slic", "fcn32s (vgg-tiny)"]
    assert all(0 <= r["miou"] <= 1 and len(r["iou"]) == 7 for r in rows)
