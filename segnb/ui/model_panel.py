"""ModelBuilder: architecture, encoder, pretrained weights and upsampling, with a live description."""

from __future__ import annotations

import html

import ipywidgets as W

from segnb.ui.common import ErrorBox, SharedState, guarded, user_message

__all__ = ["ModelBuilder", "encoder_choices", "encoder_name"]


# What people reach for first, smallest first within a family, with the encoder's parameter count in
# millions (timm backbone without its head). Measured with:
#   with torch.device("meta"): m = timm.create_model(name, pretrained=False, num_classes=0)
#   sum(p.numel() for p in m.parameters())
POPULAR_ENCODERS = {
    "vgg-tiny": 0.15, "vgg-small": 1.18, "resnet18": 11.18, "resnet34": 21.28, "resnet50": 23.51,
    "mobilenetv3_small_100": 1.52, "mobilenetv2_100": 2.22, "mobilenetv3_large_100": 4.2,
    "efficientnet_b0": 4.01, "efficientnet_b1": 6.51, "efficientnet_b2": 7.7, "efficientnet_b3": 10.7,
    "convnext_tiny": 27.82, "regnety_008": 5.49, "regnety_016": 10.31, "resnext50_32x4d": 22.98,
    "densenet121": 6.95, "resnet101": 42.5, "convnext_small": 49.45, "swin_tiny_patch4_window7_224": 27.52,
    "deit_tiny_patch16_224": 5.52, "vit_tiny_patch16_224": 5.52, "deit_small_patch16_224": 21.67,
    "vit_small_patch16_224": 21.67, "vit_base_patch16_224": 85.8, "vgg16_bn": 134.27,
    "test_resnet": 0.37, "test_vit": 0.31,
}


def encoder_choices(names: list[str]) -> list[str]:
    """Encoders in the order people use them (popular first, with parameter counts), then the rest A-Z."""
    available = set(names)
    first = [f"{n} ({m:g} M parameters)" for n, m in POPULAR_ENCODERS.items() if n in available]
    return first + sorted(n for n in names if n not in POPULAR_ENCODERS)


def encoder_name(choice: str) -> str:
    """The timm name in a choice of :func:`encoder_choices` (or typed by hand)."""
    return choice.split(" (", 1)[0].strip()


class ModelBuilder(W.VBox):
    """Architecture, compatible encoders, pretrained weights, upsampling operator; a live description."""

    def __init__(self, state: SharedState | None = None):
        from segnb.models import list_architectures
        from segnb.models.upsample import UPSAMPLE_KINDS

        self.state = state or SharedState()
        self.errors = ErrorBox()
        semantic = [*list_architectures("smp"), *list_architectures("teaching")]  # Mask R-CNN: the Instances tab
        self.arch = W.Dropdown(options=semantic, value="unet-classic", description="arch")
        self.filter = W.Text(value="*", description="filter", placeholder="resnet*")
        self.encoder = W.Combobox(value="vgg-tiny", description="encoder", ensure_option=False)
        self.pretrained = W.Dropdown(options=[("no (random init)", False), ("auto (fall back to random)", "auto"),
                                              ("yes (hub weights)", True)], value=False, description="pretrained")
        self.upsample = W.Dropdown(options=["default", *UPSAMPLE_KINDS], value="default", description="upsample")
        self.build_button = W.Button(description="Build", button_style="primary", icon="cubes")
        self.build_button.add_class("segnb-build")
        self.arch.add_class("segnb-arch")
        self.encoder.add_class("segnb-encoder")
        self.check = W.HTML()
        self.description = W.HTML()
        for widget in (self.arch, self.encoder, self.upsample):
            widget.observe(lambda _: self.explain(), names=["value"])
        self.arch.observe(lambda _: self.refresh_encoders(), names=["value"])
        self.filter.observe(lambda _: self.refresh_encoders(), names=["value"])
        self.build_button.on_click(lambda _: self.build())
        self.refresh_encoders()
        self.explain()
        super().__init__([self.arch, W.HBox([self.filter, self.encoder]), self.pretrained, self.upsample,
                          self.build_button, self.check, self.errors, self.description])
        self.add_class("segnb-model-builder")

    @guarded
    def refresh_encoders(self, limit: int = 300):
        from segnb.models import list_encoders
        from segnb.models.registry import get_architecture

        names = list_encoders(self.arch.value, self.filter.value or "*")
        self.encoder.options = encoder_choices(names)[:limit]
        self.upsample.disabled = get_architecture(self.arch.value).upsample is None

    def spec(self) -> dict:
        upsample = None if self.upsample.value == "default" or self.upsample.disabled else self.upsample.value
        return {"arch": self.arch.value, "encoder": encoder_name(self.encoder.value), "pretrained": self.pretrained.value,
                "upsample": upsample}

    def explain(self) -> bool:
        """Say at once whether the combination can work (no model is built)."""
        from segnb.models.build import check_combination, resolve_arch, resolve_encoder

        spec = self.spec()
        try:
            check_combination(resolve_arch(spec["arch"]), resolve_encoder(spec["encoder"]), spec["upsample"])
        except Exception as error:
            self.check.value = ('<span class="segnb-incompatible" style="color:#d32f2f">&#10007; '
                                f"{html.escape(user_message(error))}</span>")
            return False
        self.check.value = '<span class="segnb-compatible" style="color:#2e7d32">&#10003; this combination works</span>'
        return True

    @guarded
    def build(self, spec: dict | None = None):
        from segnb.models import build_model

        spec = dict(spec or self.spec())
        data = self.state.data
        class_names = data.class_names if data is not None else None
        model = build_model(spec["arch"], spec["encoder"], num_classes=None if class_names else 2,
                            class_names=class_names, pretrained=spec.get("pretrained", False),
                            upsample=spec.get("upsample"))
        self.state.model_spec = spec
        self.state.model = model
        self.description.value = self.describe_html(model)
        return model

    def rebuilt_note(self, text: str) -> None:
        """A line above the description saying why the model was rebuilt without a click."""
        self.description.value = f'<div class="segnb-stale-note">{html.escape(text)}</div>' + self.description.value

    @staticmethod
    def describe_html(model) -> str:
        from segnb.models import describe_model

        info = describe_model(model)
        rows = "".join(f"<tr><td>{s['stage']}</td><td>{s['channels']}</td><td>{s['stride']}</td></tr>"
                       for s in info["stages"])
        return (f"<b>{info['arch']}</b> on <b>{info['encoder']}</b> ({info['family']}), "
                f"{info['parameters']:,} parameters ({info['encoder_parameters']:,} in the encoder), "
                f"output stride {info['output_stride']}, inputs padded to multiples of {info['input_multiple']}"
                f"<table class='segnb-stages'><tr><th>stage</th><th>channels</th><th>stride</th></tr>{rows}</table>")
