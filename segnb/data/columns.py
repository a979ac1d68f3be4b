"""Which columns of a Hugging Face dataset hold the images and the masks, and reading their cells raw."""

from __future__ import annotations

from segnb.errors import DatasetError

__all__ = ["IMAGE_COLUMNS", "MASK_COLUMNS", "detect_columns", "is_image_feature", "no_decode"]

IMAGE_COLUMNS = ["image", "pixel_values", "img", "images", "input", "rgb", "photo"]
MASK_COLUMNS = [
    "annotation", "label", "mask", "segmentation", "semantic_segmentation", "labels", "masks",
    "seg", "gt", "ground_truth", "label_image", "semantic", "target",
]
def is_image_feature(feature) -> bool:
    return type(feature).__name__ == "Image"


def detect_columns(features, image_column: str | None = None, mask_column: str | None = None):
    """Pick the image and mask columns from a ``datasets.Features``; say which exist if unsure."""
    columns = list(features)
    for given, kind in ((image_column, "image_column"), (mask_column, "mask_column")):
        if given is not None and given not in columns:
            raise DatasetError(f"{kind}={given!r} is not a column; the columns are {columns}.")
    lower = {c.lower(): c for c in columns}
    if image_column is None:
        named = [lower[n] for n in IMAGE_COLUMNS if n in lower and lower[n] != mask_column]
        typed = [c for c in columns if is_image_feature(features[c]) and c != mask_column]
        candidates = named or [c for c in typed if c.lower() not in MASK_COLUMNS]
        mask_named = mask_column is not None or any(n in lower for n in MASK_COLUMNS)
        if not named and len(typed) > 1 and not mask_named:
            raise DatasetError(
                f"Several image columns {typed} and none is named like an image or a mask: pass "
                "image_column='<name>' and mask_column='<name>'."
            )
        if not candidates:
            raise DatasetError(
                f"No image column found among {columns}. Pass image_column='<name>'."
            )
        image_column = candidates[0]
    if mask_column is None:
        named = [lower[n] for n in MASK_COLUMNS if n in lower and lower[n] != image_column]
        typed = [c for c in columns if is_image_feature(features[c]) and c != image_column]
        # Prefer a mask-like name that holds images; then any other image column.
        candidates = [c for c in named if is_image_feature(features[c])] or named or typed
        if not candidates:
            raise DatasetError(
                f"No mask-like column found among {columns} (looked for an image-typed column or one "
                f"named like {MASK_COLUMNS[:6]}...). Pass mask_column='<name>'."
            )
        if len(candidates) > 1 and not named:
            raise DatasetError(
                f"Several columns could be the mask: {candidates}. Pass mask_column='<name>' "
                f"(and image_column='{image_column}' if that is wrong)."
            )
        mask_column = candidates[0]
    return image_column, mask_column


def no_decode(feature):
    if is_image_feature(feature):
        import datasets

        return datasets.Image(decode=False)
    return feature
