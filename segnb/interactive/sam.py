"""Segment Anything (SAM) prompted by clicks or a box, through transformers' ``SamModel``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from segnb.infer import Inference

__all__ = ["SAM_FILES", "SamSegmenter"]

SAM_FILES = ("config.json", "model.safetensors (or pytorch_model.bin)",
             "preprocessor_config.json (or processor_config.json)")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "facebook/sam-vit-base"


def _sam_folder(checkpoint, cache_dir=None) -> Path:
    """The local folder of a SAM checkpoint: a folder, a file in it, or a hub id already in the local cache.

    Never touches the network: a hub id is looked up with ``local_files_only=True``, so an absent
    checkpoint is said at once instead of after the hub client's retries.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        raise FileNotFoundError(SamSegmenter._missing("no checkpoint folder was given"))
    text = str(checkpoint).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return path.parent  # a file inside the checkpoint folder (e.g. model.safetensors) names the folder
    if path.is_dir():
        return path
    if not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(SamSegmenter._missing(f"there is no folder at {path}"))
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(text, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and any other sign that it is not in the cache
        cache = cache_dir or constants.HF_HUB_CACHE
        raise FileNotFoundError(
            f"SAM checkpoint {text!r} is neither a local folder nor in the Hugging Face cache ({cache}), and "
            f"segnb never downloads: download it once where there is internet (hf download {text}), or give "
            f"the path of a folder holding {', '.join(SAM_FILES)}.") from None


class SamSegmenter:
    """Segment Anything from clicks and boxes, through transformers' ``SamModel`` and a local checkpoint.

    ``SamSegmenter("path/to/sam-vit-base")`` takes a folder laid out as the hub repository
    ``facebook/sam-vit-base`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json``);
    ``SamSegmenter("facebook/sam-vit-base")`` takes that repository from the local Hugging Face
    cache (``cache_dir``, default the hub's), where ``hf download facebook/sam-vit-base`` put it.
    segnb never downloads: without the checkpoint it raises a FileNotFoundError at once that says
    what to give. transformers is optional: ``pip install "segnb[sam]"`` (or ``transformers``).
    The image embedding (the expensive part) is computed once per image and reused for each prompt.
    """

    def __init__(self, checkpoint, device: str = "cpu", cache_dir=None):
        path = _sam_folder(checkpoint, cache_dir)
        weights = [p for p in ("model.safetensors", "pytorch_model.bin") if (path / p).is_file()]
        missing = [] if (path / "config.json").is_file() else ["config.json"]
        if not weights:
            missing.append("model.safetensors (or pytorch_model.bin)")
        if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            missing.append("preprocessor_config.json")
        if missing:
            raise FileNotFoundError(self._missing(f"{path} lacks {', '.join(missing)}"))
        try:
            from transformers import SamModel, SamProcessor
        except ImportError as error:
            raise ImportError("SAM needs the transformers package, which is not installed: "
                              f'pip install transformers, or pip install "segnb[sam]" ({error}).') from None
        self.checkpoint, self.path, self.device = str(checkpoint), path, torch.device(device)
        self.model = SamModel.from_pretrained(path, local_files_only=True).to(self.device)
        self.processor = SamProcessor.from_pretrained(path, local_files_only=True)
        self._cache_key, self._cache = None, None

    @staticmethod
    def _missing(why: str) -> str:
        return (f"SAM needs a local checkpoint folder and {why}. Give the folder of a copy of a hub "
                f"SAM repository such as facebook/sam-vit-base, holding {', '.join(SAM_FILES)}, or the id "
                "of one already in the Hugging Face cache (segnb runs offline and downloads nothing). "
                "Without SAM, use ClickModel or random_walker_segment.")

    def predict(self, image: np.ndarray, clicks=(), box=None) -> np.ndarray:
        """Object probability (H, W) for one RGB uint8 image from ``(x, y, positive)`` clicks and/or a box.

        ``box`` is ``(x0, y0, x1, y1)`` in image pixels (SAM's box prompt). With neither clicks
        nor a box the answer is all zeros.
        """
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        clicks = list(clicks or [])
        if not clicks and box is None:
            return np.zeros(image.shape[:2], np.float32)
        prompts = {}
        if clicks:
            prompts["input_points"] = [[[[float(x), float(y)] for x, y, _ in clicks]]]
            prompts["input_labels"] = [[[int(bool(p)) for _, _, p in clicks]]]
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"A box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}.")
            prompts["input_boxes"] = [[[x0, y0, x1, y1]]]
        inputs = self.processor(images=image, return_tensors="pt", **prompts)
        key = (image.shape, hash(image.tobytes()))
        with Inference(self.model, precision="fp32") as run:  # eval mode, no autograd, modes restored after
            if key != self._cache_key:
                self._cache = run.module.get_image_embeddings(inputs["pixel_values"].to(run.device))
                self._cache_key = key
            given = {k: inputs[k].to(run.device) for k in ("input_points", "input_labels", "input_boxes")
                     if k in inputs}
            outputs = run.module(image_embeddings=self._cache, multimask_output=False, **given)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu(),
            binarize=False)
        return torch.sigmoid(masks[0][0, 0]).numpy().astype(np.float32)

    def predict_batch(self, images, clicks_per_image) -> np.ndarray:
        return np.stack([self.predict(i, c) for i, c in zip(images, clicks_per_image, strict=True)])
