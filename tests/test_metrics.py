"""Our confusion-matrix metrics against torchmetrics and against HF evaluate's mean_iou algorithm."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from segnb.metrics import ConfusionMeter, confusion_matrix, scores_from_confusion


def evaluate_mean_iou(preds, labels, num_labels, ignore_index):
    """The algorithm of Hugging Face evaluate's mean_iou (numpy histograms), without the hub download."""
    area_i = np.zeros(num_labels)
    area_u = np.zeros(num_labels)
    area_p = np.zeros(num_labels)
    area_l = np.zeros(num_labels)
    for pred, label in zip(preds, labels, strict=True):
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        inter = pred[pred == label]
        ai = np.histogram(inter, bins=num_labels, range=(0, num_labels - 1))[0]
        ap = np.histogram(pred, bins=num_labels, range=(0, num_labels - 1))[0]
        al = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
        area_i += ai
        area_u += ap + al - ai
        area_p += ap
        area_l += al
    iou = area_i / area_u
    acc = area_i / area_l
    return {"mean_iou": np.nanmean(iou), "per_category_iou": iou, "overall_accuracy": area_i.sum() / area_l.sum(),
            "mean_accuracy": np.nanmean(acc)}


def _case(seed, n=4, h=24, w=30, c=5, void=0.1):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n, h, w), generator=g)
    pred = torch.where(torch.rand(n, h, w, generator=g) < 0.6, target, torch.randint(0, c, (n, h, w), generator=g))
    target[torch.rand(n, h, w, generator=g) < void] = 255
    return pred, target


@pytest.mark.parametrize("seed", range(5))
def test_confusion_equals_torchmetrics(seed):
    pred, target = _case(seed)
    ours = confusion_matrix(pred, target, 5)
    theirs = MulticlassConfusionMatrix(5, ignore_index=255)(pred, target)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("seed", range(5))
def test_miou_equals_torchmetrics_and_evaluate(seed):
    pred, target = _case(seed)
    scores = scores_from_confusion(confusion_matrix(pred, target, 5))
    tm = MulticlassJaccardIndex(5, ignore_index=255, average="none")(pred, target)
    assert np.allclose(scores.iou, tm.numpy())
    ev = evaluate_mean_iou(pred.numpy(), target.numpy(), 5, 255)
    assert scores.miou == pytest.approx(ev["mean_iou"])
    assert np.allclose(scores.iou, ev["per_category_iou"])
    assert scores.pixel_accuracy == pytest.approx(ev["overall_accuracy"])
    assert scores.mean_accuracy == pytest.approx(ev["mean_accuracy"])


def test_absent_class_is_left_out_of_miou_as_in_evaluate():
    pred, target = _case(7, c=4)  # class 4 of 5 never occurs anywhere
    scores = scores_from_confusion(confusion_matrix(pred, target, 5))
    assert scores.iou[4] is None
    ev = evaluate_mean_iou(pred.numpy(), target.numpy(), 5, 255)
    assert np.isnan(ev["per_category_iou"][4])
    assert scores.miou == pytest.approx(ev["mean_iou"])
    present = MulticlassJaccardIndex(4, ignore_index=255, average="macro")(pred, target)
    assert scores.miou == pytest.approx(float(present))


def test_fully_ignored_images_count_nothing():
    pred, target = _case(3)
    target[1] = 255
    meter = ConfusionMeter(5)
    meter.update(pred[:1], target[:1])
    before = meter.compute()
    meter.update(pred[1:2], target[1:2])
    assert meter.compute().confusion == before.confusion
    everything = torch.full_like(target, 255)
    scores = scores_from_confusion(confusion_matrix(pred, everything, 5))
    assert all(v is None for v in scores.iou) and np.isnan(scores.miou)


def test_single_class_perfect_prediction():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    scores = scores_from_confusion(confusion_matrix(target.clone(), target, 3))
    assert scores.iou == [1.0, None, None] and scores.miou == 1.0
    assert scores.pixel_accuracy == 1.0 and scores.dice[0] == 1.0 and scores.fw_iou == 1.0


def test_meter_takes_logits_and_accumulates_over_batches():
    pred, target = _case(11)
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()
    meter = ConfusionMeter(5)
    for i in range(4):
        meter.update(logits[i : i + 1], target[i : i + 1])
    assert meter.compute().confusion == confusion_matrix(pred, target, 5).tolist()


def test_dice_and_fw_iou_definitions():
    cm = torch.tensor([[8, 2], [1, 9]])
    s = scores_from_confusion(cm)
    assert s.dice[0] == pytest.approx(2 * 8 / (2 * 8 + 1 + 2))
    assert s.fw_iou == pytest.approx(10 / 20 * 8 / 11 + 10 / 20 * 9 / 12)


def test_values_outside_the_classes_are_not_counted():
    target = torch.tensor([0, 1, 2, 7, -1, 255, 1])
    pred = torch.tensor([0, 1, 5, 1, 1, 0, -3])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    # An ignore index inside the class range is honoured too.
    assert confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 3, ignore_index=1).tolist() == [
        [1, 0, 0], [0, 0, 0], [0, 0, 0]]
