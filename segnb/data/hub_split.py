"""One split of a Hugging Face dataset: rows decoded on demand, unreadable rows named or skipped."""

from __future__ import annotations

import warnings

import numpy as np

from segnb.data.base import Split
from segnb.data.columns import no_decode
from segnb.data.decode import apply_lut, decode_mask, read_image, remap_labels
from segnb.errors import DatasetError

__all__ = ["HubSplit"]


class HubSplit(Split):
    def __init__(self, name, table, image_column, mask_column, reduce_labels, binary,
                 color_map, ignore_index, on_bad_image):
        # Decode lazily: we read raw cells and decode them ourselves, so a corrupt row is named.
        self.table = table.cast_column(image_column, no_decode(table.features[image_column]))
        self.table = self.table.cast_column(mask_column, no_decode(table.features[mask_column]))
        self.image_column, self.mask_column = image_column, mask_column
        self.reduce_labels, self.binary = reduce_labels, binary
        self.color_map, self.on_bad_image = color_map, on_bad_image
        self.lut = None  # snaps lossy (JPEG) mask values to the class values
        self.rows = list(range(len(table)))  # the table rows this split serves
        self.skipped: list[int] = []  # unreadable rows, found once at load time
        super().__init__(name, len(table))
        self.ignore_index = ignore_index
        if on_bad_image == "skip":
            self._drop_bad_rows()

    def _drop_bad_rows(self) -> None:
        """Read every row once; leave out the unreadable ones, named in one warning."""
        errors = {}
        for row in self.rows:
            try:
                self._decode(row)
            except DatasetError as err:
                errors[row] = err
        if not errors:
            return
        self.skipped = sorted(errors)
        self.rows = [r for r in self.rows if r not in errors]
        self._length = len(self.rows)
        first = next(iter(errors.values()))
        if not self.rows:
            raise DatasetError(
                f"{self.name}: every one of its {len(errors)} rows is unreadable ({first}). "
                "on_bad_image='skip' needs at least one good row; check the image and mask columns."
            )
        warnings.warn(
            f"skipping {len(errors)} unreadable row(s) of {self.name}: {self.skipped[:20]} ({first}). "
            f"The split has {len(self.rows)} rows.", stacklevel=4,
        )

    def label(self, index: int) -> str:
        return f"{self.name} row {self.rows[index] if index < len(self.rows) else index}"

    def map_values(self, values):
        values = remap_labels(apply_lut(values, self.lut), self.reduce_labels, self.binary, self.ignore_index)
        return super().map_values(values)

    def _decode(self, row: int):
        cells = self.table[row]
        where = f"{self.name} row {row}"
        image = read_image(cells[self.image_column], f"{where} ({self.image_column})")
        mask = decode_mask(cells[self.mask_column], f"{where} ({self.mask_column})", self.color_map)
        return image, mask

    def raw_mask(self, index: int) -> np.ndarray:
        row = self.rows[index]
        return decode_mask(self.table[row][self.mask_column], f"{self.name} row {row} ({self.mask_column})",
                           self.color_map)

    def _load(self, index: int):
        try:
            image, mask = self._decode(self.rows[index])
        except DatasetError as err:
            raise DatasetError(f"{err} To skip unreadable rows, pass on_bad_image='skip'.") from None
        return image, remap_labels(apply_lut(mask, self.lut), self.reduce_labels, self.binary, self.ignore_index)
