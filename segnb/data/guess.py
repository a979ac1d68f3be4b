"""What a loader guesses about masks (lossy files, binary, void, number of classes), said aloud.

A folder or hub dataset often does not say how its masks are coded. The loaders then read the
stored values of every training mask once (a histogram, kept for the pixel frequencies) and
decide from all of them, never from the first few. Every guess becomes a plain sentence in
``data.notes`` that names the option overriding it.
"""

from __future__ import annotations

import warnings

import numpy as np

from segnb.errors import DatasetError

__all__ = [
    "LOSSY_SUFFIXES", "check_label_options", "is_lossy_cell", "plan_snap", "settle_labels", "value_histogram",
]

LOSSY_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}
MAX_SCANNED_VALUE = 1 << 20  # larger stored values are refused by the class checks anyway
PEAK_SHARE = 0.01  # a value holding >= 1% of the pixels may be a class in a lossy mask
PEAK_WINDOW = 16  # ... if it is the most frequent value within +-16
MIN_GAP = 32  # classes closer than this cannot be told apart after JPEG
MAX_STRAY_SHARE = 0.05  # pixels further than PEAK_WINDOW from every class value
MAX_OTHER_SHARE = 0.02  # one value that is not a class value: more looks like a class, not noise


def is_lossy_cell(cell) -> bool:
    """True when a stored mask (a path, or a datasets Image cell) is a JPEG file."""
    from pathlib import Path

    if isinstance(cell, dict):
        data = cell.get("bytes")
        if data:
            return bytes(data[:3]) == b"\xff\xd8\xff"
        cell = cell.get("path")
    if isinstance(cell, (str, Path)):
        return Path(cell).suffix.lower() in LOSSY_SUFFIXES
    return False


def value_histogram(split) -> np.ndarray:
    """Pixels per stored value over every mask of ``split`` (read once, stored on the split)."""
    if split.raw_histogram is not None:
        return split.raw_histogram
    hist = np.zeros(256, np.int64)
    for index in range(len(split)):
        raw = np.asarray(split.raw_mask(index))
        if raw.size == 0:
            continue
        low, high = int(raw.min()), int(raw.max())
        if low < 0 or high >= MAX_SCANNED_VALUE:
            raise DatasetError(
                f"{split.label(index)}: mask values range from {low} to {high}; class indices must "
                f"be whole numbers from 0 (pass color_map= for colour-coded masks)."
            )
        counts = np.bincount(raw.ravel(), minlength=len(hist))
        if len(counts) > len(hist):
            hist = np.concatenate([hist, np.zeros(len(counts) - len(hist), np.int64)])
        hist[: len(counts)] += counts
    split.raw_histogram = hist
    return hist


def plan_snap(hist: np.ndarray) -> tuple[np.ndarray, list[int], int] | None:
    """For lossy masks: ``(lookup table, class values, pixels changed)``, or None when unsafe.

    The class values are the values holding at least 1% of the pixels that are the most
    frequent within +-16. Snapping each value to the nearest class value is only right when
    the class values lie far apart (>= 32), few pixels (< 5%) lie far from all of them and no
    other value holds 2% of the pixels, as for a 0/255 mask; classes 0, 1, 2, ... cannot be
    recovered from a JPEG. Measured on 48 px JPEG masks (quality 75) of random discs.
    """
    total = max(int(hist.sum()), 1)
    present = np.flatnonzero(hist)
    peaks = []
    for value in present:
        if hist[value] < PEAK_SHARE * total:
            continue
        window = hist[max(0, value - PEAK_WINDOW) : value + PEAK_WINDOW + 1]
        if hist[value] == window.max():
            peaks.append(int(value))
    if len(peaks) < 2 or min(np.diff(peaks)) < MIN_GAP:
        return None
    values = np.arange(len(hist))
    nearest = np.asarray(peaks)[np.abs(values[:, None] - np.asarray(peaks)[None, :]).argmin(axis=1)]
    stray = hist[np.abs(values - nearest) > PEAK_WINDOW].sum()
    others = np.delete(hist, peaks)
    if stray > MAX_STRAY_SHARE * total or (others.size and others.max() > MAX_OTHER_SHARE * total):
        return None
    changed = int(hist[nearest != values].sum())
    return nearest.astype(np.int64), peaks, changed


def settle_labels(
    probe,
    splits: dict,
    *,
    class_names: list[str] | None,
    num_classes: int | None,
    ignore_index: int,
    binary: bool | None,
    reduce_labels: bool,
    lossy: bool,
    lossy_masks: str,
    palette_masks: bool,
    color_map: dict,
) -> tuple[list[str] | None, bool, int | None, list[str]]:
    """Decide lossy snapping, 65535 void, binary and the class count from all training masks.

    Sets ``lut``, ``void_values`` and ``binary`` on every split. Returns
    ``(class_names, binary, num_classes, notes)``; ``class_names`` stays None where the
    caller names the classes itself.
    """
    if lossy_masks not in ("auto", "keep"):
        raise DatasetError(f"lossy_masks must be 'auto' (snap or refuse) or 'keep', got {lossy_masks!r}.")
    notes: list[str] = []
    named = len(class_names) if class_names is not None else num_classes
    # Binary is guessed when nothing names the classes, and also when exactly two are named: masks of
    # only 0 and 255 then mean classes 0 and 1, never "class 0, and the other class all void".
    guess_binary = binary is None and not palette_masks and not color_map and not reduce_labels \
        and named in (None, 2)
    guess_count = class_names is None and num_classes is None and not color_map
    if not (lossy or guess_binary or guess_count):
        for split in splits.values():
            split.binary = bool(binary)
        return class_names, bool(binary), num_classes, notes
    hist = value_histogram(probe)
    n_masks = len(probe)
    total = max(int(hist.sum()), 1)
    lut = None
    if lossy and lossy_masks == "keep":
        notes.append("The masks are JPEG files (lossy); their values are used as stored "
                     "(lossy_masks='keep'), so pixels near edges may have wrong classes.")
    elif lossy:
        plan = plan_snap(hist)
        shown = [int(v) for v in np.flatnonzero(hist)]
        if plan is None:
            raise DatasetError(
                f"{probe.label(0)}: the masks are JPEG files, a lossy format that changes pixel values "
                f"near edges; they hold {len(shown)} values {shown[:12]}{'...' if len(shown) > 12 else ''}, "
                "too close together to tell which class a changed pixel had. Save the masks as PNG. "
                "(lossy_masks='keep' uses the stored values as they are.)"
            )
        lut, peaks, changed = plan
        hist = np.bincount(lut[: len(hist)], weights=hist, minlength=len(hist)).astype(np.int64)
        message = (
            f"The masks are JPEG files (lossy): every value was snapped to the nearest of {peaks}; "
            f"{changed:,} of {total:,} training pixels ({changed / total:.2%}) changed. Save the masks "
            "as PNG to avoid this; lossy_masks='keep' uses the stored values."
        )
        warnings.warn(message, stacklevel=4)
        notes.append(message)
    values = set(np.flatnonzero(hist).tolist())
    void_values: tuple[int, ...] = ()
    if 65535 in values and ignore_index != 65535:
        void_values = (65535,)
        notes.append(
            f"65535 (the top 16-bit value, {int(hist[65535]):,} training pixels) is read as void, like "
            f"ignore_index={ignore_index}: not trained or scored. If it is a class, pass "
            "num_classes= or class_names= with ignore_index= set to an unused value."
        )
    if guess_binary:
        binary = values == {0, 255}
        if binary and named == 2:
            names = class_names or ["class 0", "class 1"]
            notes.append(
                f"All {n_masks} training masks hold only 0 and 255, and two classes were named: 0 is read "
                f"as {names[0]!r} and 255 as {names[1]!r} (not as void). Pass binary=False if 255 means void."
            )
        elif binary:
            notes.append(
                f"All {n_masks} training masks hold only 0 and 255: read as two classes, background (0) "
                "and foreground (255). Pass binary=False if 255 means void."
            )
    binary = bool(binary)
    for split in splits.values():
        split.binary = binary
        split.lut = lut
        split.void_values = void_values
    if 255 in values and not binary and ignore_index == 255 and class_names is None:
        notes.append(
            f"255 is read as void (ignore_index=255): its {int(hist[255]):,} training pixels "
            f"({hist[255] / total:.2%}) are not trained or scored. If 255 is a class, pass "
            "ignore_index= an unused value and num_classes=256."
        )
    if guess_count:
        mapped = probe.map_values(np.asarray(sorted(values), np.int64))
        kept = sorted({int(v) for v in mapped if v != ignore_index and v >= 0})
        num_classes = (kept[-1] + 1) if kept else 1
        if not binary:
            missing = sorted(set(range(num_classes)) - set(kept))
            notes.append(
                f"{num_classes} classes guessed from the largest class value ({num_classes - 1}) in all "
                f"{n_masks} training masks"
                + (f"; values {missing[:10]} never occur there" if missing else "")
                + ". Pass num_classes= or class_names= to set them."
            )
    return class_names, binary, num_classes, notes


def check_label_options(num_classes, ignore_index, class_names) -> None:
    """Refuse label options of the wrong kind at once (``num_classes=2.5``), naming the fix."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1
    ):
        raise DatasetError(f"num_classes must be a whole number >= 1, got {num_classes!r}.")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise DatasetError(f"ignore_index must be a whole number (255 by default), got {ignore_index!r}.")
    if class_names is not None and (isinstance(class_names, (str, bytes)) or not len(class_names)):
        raise DatasetError(f"class_names must be a non-empty list of names, got {class_names!r}.")
