"""Instance and panoptic segmentation: targets from instance maps, Mask R-CNN training and its
mask head's view, mask AP, panoptic merging and Panoptic Quality. Never imports ipywidgets."""

from segnb.instances.metrics import InstanceScores, mask_ap, panoptic_quality
from segnb.instances.targets import collate_instances, instance_targets

__all__ = ["InstanceScores", "collate_instances", "instance_targets", "mask_ap", "panoptic_quality"]
