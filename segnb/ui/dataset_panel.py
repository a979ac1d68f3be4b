"""DatasetPicker: the built-in dataset, a hub id or a local folder, with a preview (stock ipywidgets)."""

from __future__ import annotations

import html
import warnings

import ipywidgets as W

from segnb.data import KNOWN_HUB_DATASETS, load_dataset
from segnb.ui.common import (
    ErrorBox,
    PlotView,
    SharedState,
    guarded,
    image_widget,
    legend_html,
    png,
    user_error,
)
from segnb.viz import frequency_figure, grid, outline, overlay

# Models, losses and training (PyTorch) are imported where the Model and Train panels use them: the
# Dataset panel, the Studio's first tab, works without PyTorch (docs/CLASSROOM.md).


__all__ = ["DatasetPicker"]


class DatasetPicker(W.VBox):
    """Choose the built-in dataset, a hub id or a local folder; preview samples and class frequencies."""

    def __init__(self, state: SharedState | None = None, preview: int = 6):
        self.state = state or SharedState()
        self.preview_count = preview
        self.errors = ErrorBox()
        self.kind = W.ToggleButtons(options=["built-in", "hub", "folder"], value="built-in", description="source")
        self.hub_id = W.Combobox(options=list(KNOWN_HUB_DATASETS), placeholder="owner/name", description="hub id",
                                 ensure_option=False)
        self.folder = W.Text(placeholder="/path/to/folder", description="folder")
        self.image_column = W.Text(placeholder="auto", description="image col")
        self.mask_column = W.Text(placeholder="auto", description="mask col")
        self.reduce_labels = W.Checkbox(False, description="reduce_labels (0 = void)")
        self.size = W.IntSlider(400, min=20, max=2000, step=20, description="images")
        self.load_button = W.Button(description="Load", button_style="primary", icon="database")
        self.load_button.add_class("segnb-load")
        self.size.add_class("segnb-size")
        self.summary = W.HTML("Pick a source and press Load: a few samples and the share of each class appear.")
        self.summary.add_class("segnb-dataset-summary")
        self.notes = W.HTML()
        self.notes.add_class("segnb-dataset-notes")
        self.legend = W.HTML()
        self.colours = W.Dropdown(options=[("contrast (colour-blind safe)", "contrast"),
                                           ("the dataset's own", "dataset")], value=self.state.palette_source,
                                  description="overlay colours", style={"description_width": "initial"})
        self.colours.add_class("segnb-overlay-colours")
        self.outline = W.Checkbox(False, description="outlines only")
        self.outline.add_class("segnb-outline")
        self.names = W.Text(description="class names", placeholder="comma-separated, in class order",
                            style={"description_width": "initial"}, layout=W.Layout(width="60%"))
        self.names.add_class("segnb-class-names")
        self.rename_button = W.Button(description="Rename", icon="pencil")
        self.rename_button.add_class("segnb-rename")
        self.preview = image_widget(css_class="segnb-preview")
        self.frequencies = PlotView("pixel share per class", height=260, width=640, css_class="segnb-frequencies",
                                    empty="The share of pixels of each class appears here after Load.")
        self.columns = W.HBox([self.image_column, self.mask_column, self.reduce_labels])
        self.shown = W.VBox([self.summary, self.notes, W.HBox([self.names, self.rename_button]),
                             W.HBox([self.colours, self.outline]), self.legend, self.preview, self.frequencies])
        self.load_button.on_click(lambda _: self.load())
        self.rename_button.on_click(lambda _: self.rename())
        self.kind.observe(lambda _: self._show_fields(), names=["value"])
        self.colours.observe(self._on_colours, names=["value"])
        self.outline.observe(lambda _: self._redraw(), names=["value"])
        self._show_fields()
        super().__init__([self.kind, self.size, self.hub_id, self.folder, self.columns, self.load_button,
                          self.errors, self.shown])
        self.add_class("segnb-dataset-picker")
        self._show_loaded(False)

    def _show_loaded(self, loaded: bool) -> None:
        for widget in self.shown.children[2:4]:
            widget.layout.display = "" if loaded else "none"

    def _on_colours(self, change) -> None:
        self.state.palette_source = change["new"]
        self._redraw()

    def _redraw(self) -> None:
        if self.state.data is not None:
            self._render(self.state.data)

    @guarded
    def rename(self, names: list[str] | str | None = None) -> list[str]:
        """Give the classes the names you use (the Studio shows them everywhere); the data is unchanged."""
        data = self.state.data
        if data is None:
            raise ValueError("Load a dataset first, then rename its classes.")
        if names is None:
            names = self.names.value
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        names = [str(n).strip() for n in names]
        if len(names) != data.num_classes or not all(names):
            raise ValueError(f"Give {data.num_classes} names separated by commas, one per class in order "
                             f"({', '.join(data.class_names)}); got {len([n for n in names if n])}.")
        if len(set(names)) != len(names):
            raise ValueError("Two classes have the same name: give each class its own.")
        self.state.class_names = names
        self.names.value = ", ".join(names)
        self._render(data)
        return names

    def _show_fields(self):
        kind = self.kind.value
        self.size.layout.display = "" if kind == "built-in" else "none"
        self.hub_id.layout.display = "" if kind == "hub" else "none"
        self.folder.layout.display = "" if kind == "folder" else "none"
        self.columns.layout.display = "" if kind == "hub" else "none"

    def spec(self) -> dict:
        """What :meth:`load` loads, as JSON-ready data (the Studio saves it with the lesson)."""
        if self.kind.value == "built-in":
            return {"source": "shapes", "options": {"n": self.size.value, "seed": self.state.seed}}
        if self.kind.value == "hub":
            options = {k: v for k, v in (("image_column", self.image_column.value.strip()),
                                         ("mask_column", self.mask_column.value.strip())) if v}
            if self.reduce_labels.value:
                options["reduce_labels"] = True
            return {"source": self.hub_id.value.strip(), "options": options}
        return {"source": self.folder.value.strip(), "options": {}}

    @guarded
    def load(self, spec: dict | None = None):
        spec = spec or self.spec()
        if not spec["source"]:
            raise ValueError("Type a hub id (owner/name) or a folder path first.")
        # Whatever happens next, the old dataset's summary and pictures must not stay on screen.
        self.summary.value = f"loading {html.escape(spec['source'])} ..."
        self.notes.value = self.legend.value = ""
        self.preview.value = b""
        self.frequencies.clear()
        self._show_loaded(False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = load_dataset(spec["source"], **spec.get("options", {}))
        except Exception as error:
            self.summary.value = f"Could not load {html.escape(spec['source'])} (the reason is below)."
            if self.state.data is not None:
                self.summary.value += (" The Studio still uses the previous dataset, "
                                       f"{html.escape(self.state.dataset_name())}.")
            raise user_error(error) from None
        self.state.data_spec = spec
        self.state.data = data
        self.warnings = [str(w.message) for w in caught]
        self.names.value = ", ".join(data.class_names)
        self._render(data)
        self._show_loaded(True)
        return data

    def _render(self, data) -> None:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in data.splits.items())
        names = self.state.names()
        self.summary.value = (f"<b>{html.escape(data.source)}</b>: {sizes}; {data.num_classes} classes "
                              f"(void = {data.ignore_index})")
        notes = [*getattr(self, "warnings", []), *getattr(data, "notes", [])]
        if tuple(data.class_names) in (("background", "foreground"),) or any("class_" in n for n in data.class_names):
            notes.append(f"The class names ({', '.join(data.class_names)}) were guessed: rename them below "
                         "(for membranes, the 'background' is the membrane).")
        self.notes.value = "".join(f'<div class="segnb-note">&#9432; {html.escape(n)}</div>' for n in notes)
        palette = self.state.palette()
        self.legend.value = legend_html(names, palette)
        split = data[data.train_split]
        tiles = []
        for i in range(min(self.preview_count, len(split))):
            image, mask = split[i]
            if image.shape[:2] != split[0][0].shape[:2]:
                continue
            if self.outline.value:
                tiles.append(outline(image, mask, palette, width=max(1, image.shape[0] // 64),
                                     ignore_index=data.ignore_index))
            else:
                tiles.append(overlay(image, mask, palette, alpha=0.6, ignore_index=data.ignore_index))
        self.preview.value = png(grid(tiles, columns=3)) if tiles else b""
        self.frequencies.draw(frequency_figure(names, data.frequencies().tolist(), palette,
                                               title="pixel share per class"))
