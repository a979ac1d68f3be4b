import json
import os
import subprocess
import sys
import time
import warnings

import pytest
import torch
from conftest import closed_port as _closed_port

import segnb
from segnb.errors import CheckpointError, HubUnavailableError, ModelConfigError
from segnb.models import (
    UPSAMPLE_KINDS,
    build_model,
    describe_model,
    list_encoders,
    load_model,
    save_model,
)
from segnb.models.build import SMP_ARCHITECTURES
from segnb.models.upsample import bed_of_nails, make_upsample

warnings.filterwarnings("ignore", category=UserWarning, module="segmentation_models_pytorch")


def _forward_backward(model, size=(37, 45), batch=2):
    model.train()
    x = torch.randn(batch, 3, *size)
    y = model(x)
    assert y.shape == (batch, model.num_classes, *size)
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    return y


# ---------------------------------------------------------------- every smp architecture

SMP_CASES = [(arch, enc) for arch in SMP_ARCHITECTURES if arch != "dpt"
             for enc in ("test_resnet", "test_convnext", "test_efficientnet")] + [("dpt", "test_vit")]


@pytest.mark.parametrize("arch,encoder", SMP_CASES)
def test_smp_architecture_on_timm_encoder_any_input_size(arch, encoder):
    model = build_model(arch, encoder, num_classes=4)
    assert model.spec["arch"] == arch
    _forward_backward(model, size=(37, 45))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 100)).shape == (1, 4, 64, 100)


def test_smp_options_pass_through():
    model = build_model("unet", "test_resnet", num_classes=2, decoder_channels=[32, 16, 8, 8, 8])
    assert model.net.segmentation_head[0].in_channels == 8
    assert model.spec["options"] == {"decoder_channels": [32, 16, 8, 8, 8]}


def test_swin_encoder_in_unet_with_its_input_size():
    model = build_model("fpn", "swin_tiny_patch4_window7_224", num_classes=3, image_size=64)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 3, 50, 70)


# ---------------------------------------------------------------- teaching models x operators

TEACHING = {
    "fcn32s": ("vgg-tiny", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
    "fcn16s": ("test_resnet", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
    "fcn8s": ("test_resnet", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
    "segnet": ("vgg-tiny", list(UPSAMPLE_KINDS)),
    "unet-classic": ("vgg-tiny", list(UPSAMPLE_KINDS)),
    "setr-naive": ("test_vit", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
    "setr-pup": ("test_vit", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
    "tiramisu": ("fc-densenet56", [k for k in UPSAMPLE_KINDS if k != "max_unpool"]),
}
TEACHING_CASES = [(a, e, k) for a, (e, kinds) in TEACHING.items() for k in kinds]


@pytest.mark.parametrize("arch,encoder,kind", TEACHING_CASES)
def test_teaching_model_forward_backward_with_every_operator(arch, encoder, kind):
    # FCN's last step is a bilinear transposed convolution unless final="stacked" asks for x2 steps
    options = {"final": "stacked"} if arch.startswith("fcn") else {}
    model = build_model(arch, encoder, num_classes=3, upsample=kind, **options)
    ops = [m for m in model.modules() if type(m).__name__ == "Upsample2x"]
    assert ops and all(op.kind == kind for op in ops), "upsample= must swap the operator in every stage"
    _forward_backward(model, size=(33, 47))


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_bilinear_upsample_starts_equal_to_bilinear_interpolation(factor):
    from segnb.models.fcn import BilinearUpsample

    x = torch.randn(2, 3, 5, 7)
    up = BilinearUpsample(3, factor)
    expected = torch.nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert torch.allclose(up(x), expected, atol=1e-5)  # everywhere, borders included
    assert not up.op.weight.requires_grad
    learned = BilinearUpsample(3, factor, learnable=True)
    assert learned.op.weight.requires_grad and learned.op.weight.shape[:2] == (3, 3)  # classes may mix
    assert torch.allclose(learned(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch,steps", [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_fcn_upsamples_as_the_paper(arch, steps):
    from segnb.models.fcn import BilinearUpsample

    model = build_model(arch, "test_resnet", num_classes=3)
    net = model.net
    final = [m for m in net.final_up]
    assert len(final) == 1 and isinstance(final[0], BilinearUpsample)
    assert final[0].factor == {0: 32, 1: 16, 2: 8}[steps] and not final[0].op.weight.requires_grad
    assert len(net.fuse_up) == steps
    x = torch.randn(1, 3, 4, 5)
    for up in net.fuse_up:  # k4s2 transposed convolutions that start as bilinear x2 (inside the border)
        expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.allclose(up(x)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5)
        assert up.op.weight.requires_grad
    learned = build_model(arch, "test_resnet", num_classes=3, final="learned").net.final_up[0]
    assert learned.op.weight.requires_grad
    _forward_backward(model, size=(33, 47))
    with pytest.raises(ModelConfigError, match="final="):
        build_model(arch, "test_resnet", num_classes=3, final="nearest")


def test_unet_classic_on_a_timm_backbone():
    _forward_backward(build_model("unet-classic", "test_convnext", num_classes=2, upsample="resize_conv"))


def test_segnet_on_a_timm_vgg():
    model = build_model("segnet", "vgg11", num_classes=2)
    assert model.net.encoder.has_indices and len(model.net.encoder.blocks) == 5
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40)).shape == (1, 2, 40, 40)


def test_fcn_variants_differ_in_skips():
    f32, f16, f8 = (build_model(a, "test_resnet", num_classes=3) for a in ("fcn32s", "fcn16s", "fcn8s"))
    assert f32.net.score16 is None and f32.net.score8 is None
    assert f16.net.score16 is not None and f16.net.score8 is None
    assert f8.net.score16 is not None and f8.net.score8 is not None


# ---------------------------------------------------------------- operators


def test_bed_of_nails_and_max_unpool_positions():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = bed_of_nails(x)
    assert out[0, 0].tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    source = torch.tensor([[[[0, 5, 0, 0], [0, 0, 0, 7], [6, 0, 0, 0], [0, 0, 8, 0.0]]]])
    pooled, where = torch.nn.functional.max_pool2d(source, 2, return_indices=True)
    unpooled = make_upsample("max_unpool", 1)(pooled, where)
    assert torch.equal(unpooled, source)


def test_pixel_shuffle_starts_as_nearest_upsampling():
    op = make_upsample("pixel_shuffle", 4)
    y = op(torch.randn(1, 4, 5, 6))
    blocks = y.unfold(2, 2, 2).unfold(3, 2, 2)  # (1, 4, 5, 6, 2, 2)
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))


@pytest.mark.parametrize("kind", [k for k in UPSAMPLE_KINDS if k != "max_unpool"])
def test_every_operator_doubles_the_size(kind):
    assert make_upsample(kind, 3)(torch.randn(2, 3, 5, 7)).shape == (2, 3, 10, 14)


# ---------------------------------------------------------------- compatibility errors


@pytest.mark.parametrize("arch,encoder,upsample,message", [
    ("unet", "test_vit", None, "plain ViT.*dpt.*setr"),
    ("deeplabv3", "vgg11", None, "dilation"),
    ("deeplabv3plus", "swin_tiny_patch4_window7_224", None, "dilation"),
    ("segnet", "test_resnet", None, "max-pooling.*vgg-small"),
    ("unet-classic", "test_resnet", "max_unpool", "max_unpool needs max-pooling indices"),
    ("fcn8s", "test_vit", None, "plain ViT"),
    ("setr-pup", "test_resnet", None, "not a plain ViT"),
    ("unet", "test_resnet", "bilinear", "teaching models"),
    ("nonsense", "test_resnet", None, "Unknown architecture.*fcn8s"),
    ("unet", "resnet_18", None, "Did you mean"),
    ("unet-classic", "vgg-tiny", "cubic", "Unknown upsample"),
])
def test_incompatible_combinations_say_why_and_what_works(arch, encoder, upsample, message):
    with pytest.raises(ModelConfigError, match=message):
        build_model(arch, encoder, num_classes=3, upsample=upsample)


def test_num_classes_is_required():
    with pytest.raises(ModelConfigError, match="num_classes"):
        build_model("unet", "test_resnet")


# ---------------------------------------------------------------- discovery


def test_list_architectures_has_all_twelve_smp_and_the_teaching_models():
    names = segnb.list_architectures()
    assert set(SMP_ARCHITECTURES) <= set(names)
    assert {"fcn32s", "fcn16s", "fcn8s", "segnet", "unet-classic", "setr-naive", "setr-pup", "tiramisu"} <= set(names)


REPRESENTATIVE = ["resnet18", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_050",
                  "swin_tiny_patch4_window7_224", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "vgg11"]


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "dpt", "segnet", "setr-pup", "fcn8s"])
def test_list_encoders_matches_what_builds(arch):
    listed = set(list_encoders(arch))
    for encoder in REPRESENTATIVE:
        options = {"image_size": 64} if encoder.startswith("swin") else {}
        if encoder in listed:
            model = build_model(arch, encoder, num_classes=2, **options)
            model.eval()
            with torch.no_grad():
                assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
        else:
            with pytest.raises(ModelConfigError):
                build_model(arch, encoder, num_classes=2, **options)


def test_list_encoders_filter():
    found = list_encoders("unet", "resnet1*")
    assert "resnet18" in found and all(n.startswith("resnet1") for n in found)
    assert "vit_tiny_patch16_224" in list_encoders("dpt", "vit_tiny*")
    assert list_encoders("segnet", "vgg*")[:2] == ["vgg-small", "vgg-tiny"]


def test_describe_model_reports_stages_strides_and_receptive_fields():
    model = build_model("unet-classic", "test_resnet", num_classes=3)
    info = describe_model(model, receptive_fields=True)
    assert [s["stride"] for s in info["stages"]] == [2, 4, 8, 16, 32]
    assert info["output_stride"] == 32
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["encoder_parameters"] + info["decoder_parameters"] == info["parameters"]
    fields = [s["receptive_field"] for s in info["stages"]]
    assert all(f is not None for f in fields) and fields == sorted(fields) and fields[0] > 3
    smp_info = describe_model(build_model("fpn", "test_resnet", num_classes=3))
    assert smp_info["stages"][-1]["stride"] == 32 and smp_info["stages"][-1]["channels"] == 96


def test_vgg_receptive_field_matches_the_arithmetic():
    # vgg-tiny block 0: two 3x3 convs -> 5 px; block 1 (after a 2x2 pool): 5 + 2*2 + 2*2*... = 14
    info = describe_model(build_model("segnet", "vgg-tiny", num_classes=2), receptive_fields=True)
    assert info["stages"][0]["receptive_field"] == 5
    assert info["stages"][1]["receptive_field"] == 14


# ---------------------------------------------------------------- save and load


@pytest.mark.parametrize("arch,encoder,upsample", [
    ("fcn8s", "test_resnet", "transposed3"), ("unet", "test_efficientnet", None), ("setr-pup", "test_vit", None),
])
def test_save_load_reproduces_outputs_bit_for_bit(tmp_path, arch, encoder, upsample):
    torch.manual_seed(0)
    model = build_model(arch, encoder, class_names=["a", "b", "c"], upsample=upsample).eval()
    x = torch.randn(2, 3, 40, 52)
    with torch.no_grad():
        expected = model(x)
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["spec"]["arch"] == arch and meta["class_names"] == ["a", "b", "c"]
    loaded = load_model(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert loaded.class_names == ["a", "b", "c"] and loaded.mean == model.mean


def test_truncated_or_tampered_model_files_give_clear_errors(tmp_path):
    model = build_model("fcn32s", "vgg-tiny", num_classes=2)
    folder = save_model(model, tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(folder)
    save_model(model, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["spec"]["options"] = {"hidden": 64}  # weights no longer fit the spec
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(folder)
    with pytest.raises(CheckpointError, match="expected model.json"):
        load_model(tmp_path / "nothing")


# ---------------------------------------------------------------- pretrained weights



def test_offline_pretrained_answers_within_ten_seconds(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr("segnb.models.build._cached_weights", lambda hub_id: None)
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="pretrained='auto'"):
        build_model("unet", "test_resnet", num_classes=2, pretrained=True)
    assert time.monotonic() - start < 10
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        model = build_model("unet", "test_resnet", num_classes=2, pretrained="auto")
    assert model.num_classes == 2


def test_local_weights_file_is_loaded_into_the_encoder(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("test_resnet")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    for arch in ("unet", "fcn8s"):
        model = build_model(arch, "test_resnet", num_classes=2, pretrained=tmp_path / "w.safetensors")
        conv = next(m for m in model.net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        assert torch.equal(conv.weight, source.conv1[0].weight)
    with pytest.raises(ModelConfigError, match="no such weights file"):
        build_model("unet", "test_resnet", num_classes=2, pretrained=tmp_path / "missing.safetensors")


def test_normalisation_follows_the_encoder():
    assert build_model("unet", "test_resnet", num_classes=2).mean == (0.5, 0.5, 0.5)
    assert build_model("segnet", "vgg-tiny", num_classes=2).mean == pytest.approx((0.485, 0.456, 0.406))


def test_models_do_not_need_the_network(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert os.environ["HF_ENDPOINT"].startswith("http://127.0.0.1")
    build_model("fpn", "test_convnext", num_classes=2, pretrained=False)


# ---------------------------------------------------------------- registry and issue 14's model defects


def test_describe_model_leaves_a_live_models_modes_and_statistics_alone():
    """The Studio describes the model it may be training: no module's mode or BN statistics change."""
    model = build_model("unet", "test_resnet", num_classes=3).train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # a frozen BatchNorm inside a training model, as fine-tuning does
    modes = {name: m.training for name, m in model.named_modules()}
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    describe_model(model)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not frozen.training and model.net.encoder.training
    assert all(torch.equal(v, statistics[k]) for k, v in model.state_dict().items())


def test_describe_model_measures_the_output_stride_of_dilated_encoders():
    info = describe_model(build_model("deeplabv3", "resnet18", num_classes=3))
    assert info["output_stride"] == 8  # DeepLabV3 dilates the last two stages
    assert [s["stride"] for s in info["stages"]] == [1, 2, 4, 8, 8, 8]
    assert describe_model(build_model("unet", "resnet18", num_classes=3))["output_stride"] == 32


def test_a_misspelt_builtin_encoder_gets_close_names():
    with pytest.raises(ModelConfigError, match=r"Did you mean \['vgg-tiny'"):
        build_model("unet-classic", "vgg-tinyy", num_classes=3)
    with pytest.raises(ModelConfigError, match="Did you mean 'unet-classic'"):
        build_model("unet-clasic", "vgg-tiny", num_classes=3)


def test_a_pickle_weights_file_gets_a_clear_message_not_weights_only_false(tmp_path):
    import argparse

    import timm

    state = dict(timm.create_model("test_resnet").state_dict())
    state["args"] = argparse.Namespace(lr=0.1)  # a training script's pickled object
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ModelConfigError) as caught:
        build_model("unet", "test_resnet", num_classes=2, pretrained=tmp_path / "w.pth")
    message = str(caught.value)
    assert "weights_only=False" not in message
    assert "safetensors" in message and "w.pth" in message
    del state["args"]  # a plain state dict of tensors is read with weights_only=True and loaded
    torch.save(state, tmp_path / "plain.pth")
    model = build_model("unet", "test_resnet", num_classes=2, pretrained=tmp_path / "plain.pth")
    conv = next(m for m in model.net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(conv.weight, state["conv1.0.weight"])


def test_one_registration_is_read_by_build_list_and_describe(monkeypatch):
    from segnb.models import registry
    from segnb.models.encoders import encoder_family, make_encoder, max_reduction
    from segnb.models.fcn import FCN

    monkeypatch.setattr(registry, "ARCHITECTURES", dict(registry.architectures()))
    registry.register_architecture(
        "tiny-fcn", "a test architecture", group="teaching",
        accepts=lambda enc, up: None if encoder_family(enc) == "cnn" else "CNNs only, e.g. resnet18",
        build=lambda r: FCN(make_encoder(r.encoder), r.num_classes, variant=32, upsample=r.upsample),
        pad_multiple=max_reduction, upsample="nearest",
    )
    assert segnb.list_architectures()["tiny-fcn"] == "a test architecture"
    assert "resnet18" in list_encoders("tiny-fcn", "resnet1*")
    assert "vgg11" not in list_encoders("tiny-fcn", "vgg*")
    with pytest.raises(ModelConfigError, match="CNNs only"):
        build_model("tiny-fcn", "vgg11", num_classes=2)
    model = build_model("tiny-fcn", "test_resnet", num_classes=2)
    assert model.pad_multiple == 32 and describe_model(model)["arch"] == "tiny-fcn"
    assert model(torch.randn(1, 3, 40, 50)).shape == (1, 2, 40, 50)


def test_a_higher_layers_architecture_is_registered_on_the_first_lookup():
    """segnb.models does not import Mask R-CNN's module (it sits in a higher layer); the registry
    imports it by name on the first lookup, so listing and building find it all the same."""
    code = (
        "import sys, segnb.models as m\n"
        "assert 'segnb.instances.maskrcnn' not in sys.modules\n"
        "names = list(m.list_architectures())\n"
        "assert 'segnb.instances.maskrcnn' in sys.modules\n"
        "print(names[-1], list(m.list_architectures('instance')), 'maskrcnn' in m.ARCHITECTURES)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["maskrcnn", "['maskrcnn']", "True"]


def test_a_provider_that_fails_to_import_is_named(monkeypatch):
    from segnb.models import registry

    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS, "segnb.no_such_provider"))
    with pytest.raises(ImportError, match="segnb.no_such_provider") as caught:
        build_model("unet", "test_resnet", num_classes=2)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    with pytest.raises(ImportError, match="segnb.no_such_provider"):
        segnb.list_architectures()


# ---------------------------------------------------------------- Tiramisu


@pytest.mark.parametrize("variant,paper_millions", [("fc-densenet56", 1.5), ("fc-densenet67", 3.5),
                                                    ("fc-densenet103", 9.4)])
def test_tiramisu_variants_have_the_papers_parameter_counts(variant, paper_millions):
    model = build_model("tiramisu", variant, num_classes=11)  # CamVid's 11 classes, as in the paper
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - paper_millions) / paper_millions < 0.1
    assert len(model.net.encoder.blocks) == 5 and len(model.net.blocks) == 5


def test_tiramisu_dense_block_concatenates_every_layer():
    from segnb.models.tiramisu import DenseBlock

    block = DenseBlock(8, growth=4, layers=3, dropout=0.0).eval()
    x = torch.randn(1, 8, 6, 6)
    assert block(x).shape[1] == 8 + 12 and torch.equal(block(x)[:, :8], x)
    assert block(x, only_new=True).shape[1] == 12
    assert [layer[2].in_channels for layer in block.layers] == [8, 12, 16]


def test_tiramisu_refuses_other_encoders_and_max_unpool_saving_round_trip(tmp_path):
    with pytest.raises(ModelConfigError, match="fc-densenet56"):
        build_model("tiramisu", "resnet18", num_classes=2)
    with pytest.raises(ModelConfigError, match="max_unpool|max-pooling indices"):
        build_model("tiramisu", "fc-densenet56", num_classes=2, upsample="max_unpool")
    with pytest.raises(ModelConfigError, match="built into"):
        build_model("unet", "fc-densenet56", num_classes=2)
    model = build_model("tiramisu", num_classes=3, upsample="bilinear").eval()
    assert model.spec["encoder"] == "fc-densenet56"
    x = torch.randn(1, 3, 33, 47)
    save_model(model, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m").eval()(x), model(x))


def test_step_seconds_times_a_step_and_leaves_the_model_as_it_was():
    from segnb.models.timing import step_seconds

    model = build_model("unet-classic", "vgg-tiny", num_classes=3).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = step_seconds(model, 32, 32, batch_size=8)
    assert seconds > 0
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
