"""segnb.export: every semantic architecture to ONNX (parity with eager PyTorch through onnxruntime
on the CPU) and to torch.export; what cannot be exported is refused with the reason."""

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import segnb
from segnb.errors import SegnbError
from segnb.exporting import NOT_EXPORTABLE, TOLERANCE, check_export
from segnb.models import build_model, list_architectures
from segnb.models.io import TrainingInput

warnings.filterwarnings("ignore", category=UserWarning, module="segmentation_models_pytorch")

ENCODER = {"dpt": "test_vit", "setr-naive": "test_vit", "setr-pup": "test_vit", "tiramisu": "fc-densenet56",
           "fcn32s": "vgg-tiny", "segnet": "vgg-tiny", "unet-classic": "vgg-tiny"}
SEMANTIC = [a for a in list_architectures() if a not in list_architectures("instance")]


@pytest.mark.parametrize("arch", SEMANTIC)
def test_every_semantic_architecture_exports_to_onnx_with_parity(tmp_path, arch):
    assert arch not in NOT_EXPORTABLE
    model = build_model(arch, ENCODER.get(arch, "test_resnet"), class_names=["a", "b", "c"])
    path = segnb.export(model, tmp_path / "model.onnx", image_size=(64, 64))  # checks parity itself
    images = torch.rand(3, 3, 64, 64)  # another batch size than at export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy()})[0]
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.eval()((images - mean) / std).numpy()  # normalisation is inside the graph
    assert got.shape == (3, 3, 64, 64)
    assert np.allclose(got, expected, **TOLERANCE)


def test_torch_export_and_the_description_beside_the_file(tmp_path):
    model = build_model("unet", "test_resnet", class_names=["a", "b"])
    model.training_input = TrainingInput(size=(32, 48), source_size=(64, 96), mean=model.mean, std=model.std)
    path = segnb.export(model, tmp_path / "model.pt2")
    info = json.loads((tmp_path / "model.pt2.json").read_text())
    assert info["input"]["shape"] == ["batch", 3, 32, 48]  # the training size by default
    assert info["class_names"] == ["a", "b"] and info["normalisation"]["applied"] == "inside the graph"
    assert info["training_input"]["scale"] == [0.5, 0.5]
    assert check_export(path, model) <= TOLERANCE["atol"] + TOLERANCE["rtol"] * 50
    program = torch.export.load(str(path))
    assert program.module()(torch.rand(5, 3, 32, 48)).shape == (5, 2, 32, 48)


def test_what_cannot_be_exported_says_why(tmp_path):
    model = build_model("maskrcnn", "test_resnet", class_names=["bg", "thing"], things=["thing"])
    with pytest.raises(SegnbError, match="semantic models"):
        segnb.export(model, tmp_path / "model.onnx")
    with pytest.raises(SegnbError, match=r"\.onnx .* or \.pt2"):
        segnb.export(build_model("fcn32s", "vgg-tiny", num_classes=2), tmp_path / "model.tflite")
    assert list(tmp_path.iterdir()) == []


def test_an_export_first_in_a_fresh_process_leaves_eager_normalisation_real(tmp_path):
    """Tracing normalises with traced tensors: none may stay in the statistics cache for eager code."""
    from segnb.data import preprocess

    preprocess._statistics.cache_clear()  # as in a fresh process: the export is the first normalisation
    model = build_model("unet", "test_resnet", class_names=["a", "b"])
    model.training_input = TrainingInput(size=(32, 32), source_size=(32, 32), mean=model.mean, std=model.std)
    path = segnb.export(model, tmp_path / "model.pt2")  # checks parity against eager PyTorch itself
    out = preprocess.normalize(torch.zeros(3, 4, 4, dtype=torch.uint8), model.mean, model.std)
    assert type(out) is torch.Tensor and float(out[0, 0, 0]) == pytest.approx(-model.mean[0] / model.std[0], abs=1e-5)
    assert path.exists()
