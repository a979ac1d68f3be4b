"""Local copies of hub datasets, laid out as on the Hugging Face Hub (parquet shards, card, id2label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _images(rng, n, size, num_values, offset=0):
    h, w = size
    images, masks = [], []
    for _ in range(n):
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        masks.append(Image.fromarray(rng.integers(offset, offset + num_values, (h, w)).astype(np.uint8)))
    return images, masks


def _write(root: Path, splits: dict[str, dict], features: dict, card_extra: str = ""):
    import datasets

    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    for split, columns in splits.items():
        table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in splits)
        + card_extra
        + "---\n# A local copy for tests\n"
    )
    return root


def sidewalk_semantic(root: Path, n: int = 6, seed: int = 0) -> Path:
    """segments/sidewalk-semantic: one train split, pixel_values + label, id2label.json (35 classes)."""
    import datasets

    rng = np.random.default_rng(seed)
    images, masks = _images(rng, n, (24, 32), 35)
    _write(root, {"train": {"pixel_values": images, "label": masks}},
           {"pixel_values": datasets.Image(), "label": datasets.Image()})
    names = ["unlabeled", "flat-road", "flat-sidewalk"] + [f"sidewalk-class-{i}" for i in range(3, 35)]
    (root / "id2label.json").write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    return root


def scene_parse_150(root: Path, n: int = 6, seed: int = 1) -> Path:
    """scene_parse_150: train + validation, image + annotation (0 = other) + scene_category."""
    import datasets

    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "validation"):
        images, masks = _images(rng, n, (20, 28), 151)
        splits[split] = {"image": images, "annotation": masks, "scene_category": [1] * n}
    features = {"image": datasets.Image(), "annotation": datasets.Image(),
                "scene_category": datasets.ClassLabel(names=["airport", "bathroom"])}
    return _write(root, splits, features)


def foodseg103(root: Path, n: int = 6, seed: int = 2) -> Path:
    """EduardoPacheco/FoodSeg103: train + validation, image + label + classes_on_image + id, id2label.json."""
    import datasets

    rng = np.random.default_rng(seed)
    splits = {}
    for split in ("train", "validation"):
        images, masks = _images(rng, n, (30, 22), 104)
        classes = [sorted(np.unique(np.asarray(m)).tolist()) for m in masks]
        splits[split] = {"image": images, "label": masks, "classes_on_image": classes, "id": list(range(n))}
    features = {"image": datasets.Image(), "label": datasets.Image(),
                "classes_on_image": datasets.Sequence(datasets.Value("int64")), "id": datasets.Value("int64")}
    _write(root, splits, features)
    names = ["background", "candy"] + [f"food-{i}" for i in range(2, 104)]
    (root / "id2label.json").write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    return root
