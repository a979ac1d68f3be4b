"""InspectPanel: the SoftMaskViewer on a chosen validation image, and the AttentionViewer for ViT models."""

from __future__ import annotations

import ipywidgets as W

from segnb.ui.common import ErrorBox, ResultStamp, SharedState, guarded

__all__ = ["InspectPanel"]


class InspectPanel(W.VBox):
    """The SoftMaskViewer on a chosen validation image, and the AttentionViewer for ViT models."""

    def __init__(self, state: SharedState):
        from segnb.ui.attention_viewer import AttentionViewer
        from segnb.ui.softmask_viewer import SoftMaskViewer

        self.state = state
        self.errors = ErrorBox()
        self.index = W.BoundedIntText(0, min=0, max=100_000, description="image #")
        self.show_button = W.Button(description="Show", button_style="primary", icon="eye")
        self.show_button.add_class("segnb-inspect-show")
        self.softmask = SoftMaskViewer()
        self.attention = AttentionViewer()
        self.attention.layout.display = "none"
        self.attention_note = W.HTML()
        self.caption = W.HTML("Press Show: the model's class probabilities for one validation image appear here.")
        self.caption.add_class("segnb-inspect-caption")
        self.show_button.on_click(lambda _: self.show())
        self.results = W.VBox([self.caption, self.softmask, self.attention_note, self.attention])
        self.results.add_class("segnb-results")
        self.stamp = ResultStamp(state, self.results, again="Press Show")
        super().__init__([W.HBox([self.index, self.show_button]), self.errors, self.stamp, self.results])
        self.add_class("segnb-inspect-panel")

    @guarded
    def show(self, index: int | None = None):
        from segnb.inspect.attention import find_vit
        from segnb.prediction import predict

        data, model = self.state.data, self.state.model
        if data is None or model is None:
            raise ValueError("Load a dataset and build (and train) a model first.")
        split = data[data.eval_split]
        index = min(self.index.value if index is None else index, len(split) - 1)
        image, _ = split[index]
        self.softmask.set_prediction(image, predict(model, image).probs[0].numpy(), self.state.names(),
                                     data.palette, self.state.overlay_palette)
        self.caption.value = (f"<b>validation image #{index}</b>: the model's class probabilities. Raise the "
                              "temperature to see where it is unsure, or show its confidence or entropy.")
        try:
            find_vit(model)
        except ValueError:
            self.attention.layout.display = "none"
            self.attention_note.value = ("<i>Attention maps need a ViT backbone (setr-pup, setr-naive or dpt on "
                                         "vit_* / deit_*); this model is a CNN.</i>")
        else:
            self.attention.layout.display = ""
            self.attention_note.value = ""
            self.attention.show(model, image, input_size=None)
        self.state.image_index = index
        self.stamp.stamp()
        return index
