"""Mask R-CNN (He et al., ICCV 2017) on torchvision's implementation, with a timm backbone + FPN.

torchvision provides the whole detector: the region proposal network (RPN),
RoIAlign, the box head and the mask head, whose 28x28 soft mask per detection
is resized into the detection's box and thresholded at 0.5. segnb adds:

- any timm backbone with ``features_only`` (``resnet18``, ``mobilenetv3_small_100``, ...) under a
  feature pyramid (``torchvision.ops.FeaturePyramidNetwork``, strides 4 to 64), with the same
  offline ``pretrained=`` behaviour as every other encoder;
- anchors, sampling counts and head sizes for small images on a CPU (:data:`CPU_SETTINGS`:
  square anchors 8 to 128 px, fewer proposals and RoIs per image than torchvision's COCO
  defaults, a 64-channel FPN; ``image_size``, torchvision's ``min_size``, is 128 px, not its 800);
- class indices in the *dataset's* class space: ``labels`` are semantic class ids (circle = 3 in
  the built-in dataset), mapped to torchvision's 1..T (0 = background) inside, so predictions
  merge directly with a semantic model's stuff into a panoptic map.

``model(images, targets)`` in training mode returns torchvision's loss dict (``loss_objectness``,
``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``, ``loss_mask``); ``fit()`` logs each
term. In eval mode it returns one dict per image: ``boxes``, ``labels``, ``scores`` and ``masks``
(N, 1, H, W) soft masks already pasted into the image.

The model lives in the instances layer, above training, evaluation and prediction: it brings its
training task, its scores and its predictions itself (:class:`segnb.infer.InstanceModel`), so those
layers run it without importing this package. It registers ``"maskrcnn"`` with the architecture
registry, which imports this module by name (``segnb.models.registry.PROVIDERS``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError
from segnb.instances.metrics import InstanceScores
from segnb.instances.train import Instances, InstanceTask, evaluate_instances, predict_instances
from segnb.models.encoders import encoder_family
from segnb.models.registry import BuildRequest, register_architecture

__all__ = ["CPU_SETTINGS", "FIT_DEFAULTS", "MaskRCNNModel", "TimmFPNBackbone"]

# torchvision MaskRCNN settings for small images on a CPU (its defaults are for COCO at 800 px on
# a GPU); ``build_model("maskrcnn", ..., detector_options={...})`` overrides any of them. On the
# built-in dataset (128 px, objects 5 to 64 px across, all about as wide as tall) with FIT_DEFAULTS,
# mobilenetv3_small_100 reaches mask AP50 0.74 in 3 minutes on one CPU core (424 steps;
# benchmarks/bench_instances.py, benchmarks/RESULTS.md).
CPU_SETTINGS = {
    "anchor_sizes": (8, 16, 32, 64, 128),  # one size per pyramid level, strides 4..64
    "aspect_ratios": (1.0,),  # squares, circles, triangles, rings: one anchor shape per position
    "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 150,  # proposals kept per image
    "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100,
    "rpn_batch_size_per_image": 128,  # anchors sampled for the RPN loss (torchvision: 256)
    "box_batch_size_per_image": 32,  # RoIs sampled for the box and mask heads (torchvision: 512)
}
# What fit() should be given with these settings (the CLI, the Studio panel and the benchmark use it).
FIT_DEFAULTS = {"lr": 2e-3, "batch_size": 8}


class TimmFPNBackbone(nn.Module):
    """A timm backbone's stride-4..32 stages under an FPN (plus a max-pooled stride-64 level)."""

    def __init__(self, name: str, pretrained: bool = False, fpn_channels: int = 64, **timm_options):
        super().__init__()
        import timm
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        probe = timm.create_model(name, pretrained=False, features_only=True, **timm_options)
        reductions = probe.feature_info.reduction()
        indices = tuple(i for i, r in enumerate(reductions) if r >= 4)
        if len(indices) < 3:
            raise ModelConfigError(f"Mask R-CNN needs backbone stages at strides 4 to 32; {name} has {reductions}.")
        del probe
        self.encoder = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=indices,
                                         **timm_options)
        self.channels = list(self.encoder.feature_info.channels())
        self.reductions = list(self.encoder.feature_info.reduction())
        self.fpn = FeaturePyramidNetwork(self.channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels  # torchvision's detectors read this

    def forward(self, x: torch.Tensor) -> OrderedDict:
        features = self.encoder(x)  # strides 4, 8, 16, 32
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


class MaskRCNNModel(nn.Module):
    """torchvision's ``MaskRCNN`` with labels in the dataset's class space.

    ``task = "instance"``: :class:`segnb.infer.Inference` returns detections instead of logits,
    and ``fit``, ``evaluate`` and ``predict`` call this model's ``training_task``,
    :meth:`evaluate_split` and :meth:`predict_images` (:class:`segnb.infer.InstanceModel`).

    Args:
        backbone: a :class:`TimmFPNBackbone`.
        class_names: the dataset's classes (stuff included), as for every segnb model.
        things: the classes the detector finds (default: all); ``data.things`` for the built-in one.
        image_size: torchvision resizes each image so its shorter side is this (``min_size``).
        detections: at most this many detections per image (``box_detections_per_img``).
        detector_options: torchvision ``MaskRCNN`` arguments over :data:`CPU_SETTINGS`, e.g.
            ``{"box_batch_size_per_image": 64}``, and ``anchor_sizes`` (one per pyramid level),
            ``aspect_ratios``.
    """

    task = "instance"

    def __init__(self, backbone: TimmFPNBackbone, class_names: list[str], things: list[str] | None = None,
                 image_size: int = 128, detections: int = 30, detector_options: dict | None = None):
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
        from torchvision.ops import MultiScaleRoIAlign

        things = list(class_names) if things is None else [things] if isinstance(things, str) else list(things)
        unknown = [t for t in things if t not in class_names]
        if unknown or not things:
            raise ModelConfigError(f"things={things} must be a non-empty subset of the classes {class_names}.")
        self.class_names, self.things = list(class_names), things
        self.thing_ids = [class_names.index(t) for t in things]  # detector label k+1 -> semantic id
        to_detector = torch.zeros(len(class_names), dtype=torch.long)
        to_detector[self.thing_ids] = torch.arange(1, len(things) + 1)
        self.register_buffer("_to_detector", to_detector, persistent=False)
        self.register_buffer("_to_semantic", torch.tensor([0, *self.thing_ids]), persistent=False)
        c = backbone.out_channels
        settings = {**CPU_SETTINGS, **(detector_options or {})}
        sizes, ratios = settings.pop("anchor_sizes"), settings.pop("aspect_ratios")
        levels = [str(i) for i in range(len(backbone.channels))]  # RoIAlign reads strides 4..32
        self.detector = MaskRCNN(
            backbone, num_classes=None, min_size=image_size, max_size=image_size * 2,
            image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],  # segnb's loaders normalise already
            rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in sizes), (tuple(ratios),) * len(sizes)),
            # One bilinear sample per RoIAlign bin (torchvision's default is 2x2): still no rounding,
            # and a quarter of the CPU cost of RoIAlign's backward pass, the slowest step on a CPU.
            box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling_ratio=1),
            mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling_ratio=1),
            box_head=TwoMLPHead(c * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, len(things) + 1),
            box_detections_per_img=detections,
            mask_head=MaskRCNNHeads(c, (c, c), 1), mask_predictor=MaskRCNNPredictor(c, c, len(things) + 1),
            **settings,
        )
        self.pad_multiple = None

    @property
    def encoder(self) -> nn.Module:
        """The timm backbone (for describe_model); a property, so its weights are stored once."""
        return self.detector.backbone.encoder

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def detector_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The dataset's class ids as the detector's labels (1..T for the things in order; 0 otherwise)."""
        return self._to_detector.to(labels.device)[labels]

    # What fit() trains this model with (a segnb.train.Task): its loss dict, its loaders, mask AP.
    training_task = InstanceTask

    def evaluate_split(self, data, split: str | None = None, batch_size: int = 8, image_size=None,
                       device="auto", precision: str | None = None) -> InstanceScores:
        """Mask AP, AP50 and AP75 on one split: what ``segnb.evaluate`` returns for this model."""
        return evaluate_instances(self, data, split, batch_size, image_size, device, precision)

    def predict_images(self, images, batch_size: int = 8, device="auto",
                       precision: str | None = None) -> list[Instances]:
        """One :class:`segnb.instances.train.Instances` per image: what ``segnb.predict`` returns."""
        return predict_instances(self, images, batch_size, device, precision)

    def forward(self, images, targets: list[dict] | None = None):
        """Normalised images ``(B, 3, H, W)`` (or a list of ``(3, H, W)``); targets while training."""
        images = list(images)
        if targets is not None:
            targets = [{**t, "labels": self.detector_labels(t["labels"])} for t in targets]
        if self.training and targets is None:
            raise ModelConfigError(
                "Mask R-CNN in training mode needs targets (boxes, labels, masks) per image; call "
                "model.eval() to predict, or train it with segnb.train.fit(model, data)."
            )
        out = self.detector(images, targets)
        if self.training:
            return out  # {loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg, loss_mask}
        for detections in out:
            detections["labels"] = self._to_semantic[detections["labels"]]
        return out

    def extra_repr(self) -> str:
        return f"arch='maskrcnn', encoder={self.spec['encoder']!r}, things={self.things}" if hasattr(
            self, "spec") else ""


def _accepts(encoder: str, upsample: str | None) -> str | None:
    if upsample is not None:
        return "Mask R-CNN has no swappable upsampling operator (its masks are 28x28, pasted into boxes)."
    if encoder_family(encoder) != "cnn":
        return (f"Mask R-CNN here takes a CNN backbone with stages at strides 4 to 32 under an FPN; "
                f"{encoder} is a {encoder_family(encoder)}. Try resnet18 or mobilenetv3_small_100.")
    return None


def _build(request: BuildRequest) -> MaskRCNNModel:
    options = dict(request.options)
    backbone = TimmFPNBackbone(request.encoder, request.use_pretrained,
                               fpn_channels=options.pop("fpn_channels", 64), **request.timm_options)
    try:
        return MaskRCNNModel(backbone, request.class_names, **options)
    except TypeError as err:
        raise ModelConfigError(f"maskrcnn options: {err}. It takes things=, image_size=, detections=, "
                               "fpn_channels=, detector_options=.") from None


register_architecture(
    "maskrcnn", "instance segmentation: torchvision Mask R-CNN, timm backbone + FPN, 28x28 mask head",
    group="instance", accepts=_accepts, build=_build, wrap=False, aliases=("mask-rcnn", "mask_rcnn"),
    default_encoder="mobilenetv3_small_100",
)
