"""Widgets in plain Python: instantiate, set values, click, assert on state and on the core call."""

import json
import time

import numpy as np
import pytest

from segnb.ui import (
    AttentionViewer,
    ClassicalLab,
    DatasetPicker,
    IoUReport,
    ModelBuilder,
    SharedState,
    SoftMaskViewer,
    Studio,
    TrainPanel,
    UpsamplingLab,
)


def is_png(value) -> bool:
    return bytes(value[:8]) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def state():
    s = SharedState()
    picker = DatasetPicker(s)
    picker.size.value = 40
    picker.load_button.click()
    return s


def _build(state, arch="unet-classic", encoder="vgg-tiny"):
    builder = ModelBuilder(state)
    builder.arch.value, builder.encoder.value = arch, encoder
    builder.build_button.click()
    assert builder.errors.value == "", builder.errors.value
    return builder


def test_dataset_picker_loads_and_previews(state):
    assert state.data is not None and state.data.num_classes == 7
    assert state.data_spec == {"source": "shapes", "options": {"n": 40, "seed": 0}}


def test_dataset_picker_preview_and_frequencies():
    picker = DatasetPicker()
    picker.size.value = 40
    picker.load_button.click()
    assert is_png(picker.preview.value)
    assert list(picker.frequencies.data[0].x) == picker.state.data.class_names
    assert "ring" in picker.legend.value


def test_plot_view_sends_each_figure_whole_as_plotly_mime():
    import plotly.graph_objects as go

    from segnb.ui.common import PLOTLY_MIME, PlotView

    view = PlotView("curves", height=200, width=300)
    assert len(view.outputs) == 1 and not view.data
    view.draw(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    (output,) = view.outputs  # replaced, not appended
    figure = output["data"][PLOTLY_MIME]
    assert figure["data"][0]["x"] == ["a", "b"] and list(view.data[0].y) == [1, 2]
    assert figure["layout"]["width"] == 300 and figure["layout"]["height"] == 200  # fixed size
    assert view.layout.width == "300px"
    json.dumps(output)  # plain JSON: it travels to the browser as is


def test_dataset_picker_errors_show_in_the_widget():
    picker = DatasetPicker()
    picker.kind.value = "folder"
    picker.folder.value = "/no/such/folder"
    picker.load_button.click()
    assert "No folder at" in picker.errors.value and picker.state.data is None
    picker.kind.value = "hub"
    picker.hub_id.value = ""
    picker.load_button.click()
    assert "Type a hub id" in picker.errors.value


def test_model_builder_explains_incompatible_choices_at_once(state):
    builder = ModelBuilder(state)
    builder.arch.value = "unet"
    builder.encoder.value = "test_vit"
    assert "plain ViT" in builder.check.value and "segnb-incompatible" in builder.check.value
    assert builder.upsample.disabled  # smp decoders have their own operator
    builder.arch.value = "setr-pup"
    assert "segnb-compatible" in builder.check.value
    assert builder.encoder.options and all(n.startswith(("vit", "deit", "test_vit", "eva", "beit", "flexivit"))
                                           for n in builder.encoder.options)
    assert not builder.upsample.disabled


def test_model_builder_builds_for_the_dataset_and_describes(state):
    builder = _build(state, "fcn8s", "vgg-tiny")
    assert state.model.num_classes == state.data.num_classes
    assert "parameters" in builder.description.value and "stride" in builder.description.value
    builder.encoder.value = "no_such_net"
    builder.build_button.click()
    assert "Unknown encoder" in builder.errors.value
    assert state.model.spec["arch"] == "fcn8s"  # the failed build lost nothing


def test_train_panel_needs_data_and_model():
    panel = TrainPanel(SharedState())
    assert not panel.curves.data and "appear here" in panel.curves.outputs[0]["data"]["text/html"]
    panel.start_button.click()
    assert "Load a dataset and build a model first" in panel.errors.value


def test_train_panel_trains_in_the_background_and_shows_progress(state):
    _build(state)
    panel = TrainPanel(state)
    panel.epochs.value = 2
    panel.start_button.click()
    assert panel.stop_button.disabled is False
    panel.handle.wait(120)
    assert panel.history.stopped == "completed" and len(panel.history.epochs) == 2
    assert panel.progress.value == panel.progress.max > 0
    traces = {t.name: t for t in panel.curves.data}
    assert list(traces["validation mIoU"].x) == [1, 2] and len(panel.class_curves.data) == 7
    # losses and scores on separate axes, loss on a log scale; per-step loss drawn during the epoch
    assert traces["validation loss"].yaxis == "y" and traces["validation mIoU"].yaxis == "y2"
    assert panel.curves.figure.layout.yaxis.type == "log" and panel.curves.figure.layout.xaxis.dtick == 1
    assert len(traces["training loss (smoothed)"].x) >= 2
    assert all("markers" in t.mode for t in panel.class_curves.data)
    panel.log_loss.value = False
    assert panel.curves.figure.layout.yaxis.type == "linear"
    assert is_png(panel.sample.value)
    assert "completed" in panel.status.value and panel.start_button.disabled is False
    assert state.history is panel.history


def test_train_panel_stop_ends_training_within_one_step():
    s = SharedState()
    picker = DatasetPicker(s)
    picker.size.value = 400
    picker.load_button.click()
    _build(s)
    panel = TrainPanel(s)
    panel.epochs.value = 50
    panel.batch_size.value = 4
    panel.start_button.click()
    deadline = time.monotonic() + 60
    while panel.handle.trainer.step < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    at_stop = panel.handle.trainer.step
    panel.stop_button.click()
    panel.handle.wait(60)
    assert panel.history.steps <= at_stop + 1
    assert "stopped by the user" in panel.status.value


def test_softmask_viewer_state_and_read_out():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(12, 16)).transpose(2, 0, 1)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    viewer = SoftMaskViewer(image, probs, ["a", "b", "c"], palette)
    assert viewer.shape == [12, 16, 3] and len(viewer.probs) == 3 * 12 * 16
    assert viewer.dataset_palette == ["#ff0000", "#00ff00", "#0000ff"] and viewer.visible == [True] * 3
    read = viewer.probabilities_at(5, 7)
    assert read["a"] == pytest.approx(probs[0, 5, 7], abs=0.01)
    viewer.temperature = 100.0
    assert max(viewer.probabilities_at(5, 7).values()) < 0.4  # a high temperature flattens
    viewer.opacity = 3.0
    assert viewer.opacity == 1.0
    with pytest.raises(Exception, match="temperature"):
        viewer.temperature = 0
    with pytest.raises(ValueError, match="matching the image"):
        viewer.set_prediction(image, probs[:, :5])
    assert "export default" in viewer._esm and "segnb-view" in viewer._css


def test_attention_viewer_sends_one_layer_and_answers_clicks():
    from segnb.models import build_model

    model = build_model("setr-pup", "test_vit", num_classes=3)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    viewer = AttentionViewer(model, image, input_size=None)
    heads, tokens = viewer.heads, viewer.prefix + 16
    assert len(viewer.attn) == heads * tokens * tokens * 4  # float32, one layer only
    assert is_png(viewer.thumbs)
    viewer.layer = 2
    assert viewer.layers_sent[-1] == 2
    cls_map = viewer.current_map()
    viewer.query = [3, 3]
    assert not np.allclose(cls_map, viewer.current_map())
    viewer.rollout = True
    assert viewer.current_map().shape == (4, 4)
    assert "export default" in viewer._esm


def test_upsampling_lab():
    lab = UpsamplingLab()
    lab.operator.value, lab.source.value = "nearest", "2x2 ramp"
    assert lab.output.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    lab.operator.value, lab.kernel.value, lab.stride.value = "transposed", 3, 2
    assert lab.overlap is not None and lab.overlap_view.data[0].texttemplate and "expect a checkerboard" in lab.score.value
    assert list(lab.output_view.data[0].z[0]) == list(lab.output[0]) and lab.compare_images.layout.display == "none"
    lab.kernel.value, lab.padding.value = 4, 1
    assert "even overlap" in lab.score.value
    lab.operator.value = "max_unpool"
    assert lab.errors.value == "" and lab.output.shape == (4, 4)
    from segnb.models import build_model

    a = build_model("fcn32s", "vgg-tiny", num_classes=3, upsample="transposed3")
    b = build_model("fcn32s", "vgg-tiny", num_classes=3, upsample="resize_conv")
    results = lab.compare(a, b, np.full((64, 64, 3), 128, np.uint8))
    assert len(results) == 2 and "transposed3" in lab.compare_view.value


def test_iou_report_and_opening_a_worst_image(state):
    _build(state)
    viewer = SoftMaskViewer()
    report = IoUReport(state, viewer=viewer)
    report.run_button.click()
    assert report.errors.value == "", report.errors.value
    assert len(report.bars.data[0].y) == 7 and len(report.confusion.data[0].z) == 7
    assert len(report.gallery.children) == 6 and len(report.sizes.data[0].x) == 4
    report.sort.value = True
    values = list(report.bars.data[0].x)
    assert values == sorted(values)
    worst = report.report.per_image[0]["index"]
    report.gallery.children[0].children[1].click()
    assert state.image_index == worst and viewer.shape[2] == 7


def test_classical_lab_scores_beside_the_model(state):
    lab = ClassicalLab(state)
    lab.method.value = "kmeans"
    assert [w.description for w in lab.param_box.children] == ["k"]
    lab.run_button.click()
    assert lab.errors.value == "" and len(lab.result["rows"]) == 1
    _build(state)
    lab.method.value = "felzenszwalb"
    lab.run_button.click()
    assert [r[0].split()[0] for r in lab.result["rows"]] == ["felzenszwalb", "model"]
    assert is_png(lab.pictures.value)
    lab.method.value = "slic"
    lab.run_button.click()
    captions = lab.captions.value
    import re

    assert re.search(r"slic: \d+ superpixels merged into \d+ regions, mIoU", captions)
    assert re.search(r"slic \(segments 200, compactness 10\): \d+ superpixels merged", lab.scores.value)
    assert "ground truth" in captions
    assert captions.count('class="segnb-strip-label"') == 4 and "mIoU" in captions


def test_studio_tabs_presentation_and_lessons(tmp_path):
    studio = Studio()
    assert studio.tabs.titles == ("Dataset", "Model", "Train", "Inspect", "Upsampling", "IoU", "Classical",
                                  "Instances", "Interactive")
    studio.presentation.value = True
    assert "segnb-presentation" in studio._dom_classes and studio.inspect.softmask.display_scale > 1
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    studio.builder.arch.value = "fcn16s"
    studio.builder.build_button.click()
    studio.tabs.selected_index = 3
    studio.inspect.show_button.click()
    assert studio.inspect.errors.value == "" and studio.inspect.attention.layout.display == "none"
    path = tmp_path / "lesson.json"
    studio.save_lesson(path)
    lesson = json.loads(path.read_text())
    assert lesson["model"]["arch"] == "fcn16s" and lesson["tab"] == "Inspect" and lesson["presentation"]
    again = Studio()
    again.load_lesson(path)
    assert again.errors.value == ""
    assert again.state.model.spec["arch"] == "fcn16s" and again.tabs.selected_index == 3
    assert again.state.data.describe(frequencies=False)["splits"] == studio.state.data.describe(frequencies=False)["splits"]
    path.write_text("{not json")
    again.load_lesson(path)
    assert "cannot read this lesson" in again.errors.value
    assert again.state.model.spec["arch"] == "fcn16s"  # nothing lost


def test_studio_rebuilds_the_model_when_the_classes_change(tmp_path):
    studio = Studio()
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    studio.builder.build_button.click()
    assert studio.state.model.num_classes == 7
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(4):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray((rng.random((16, 16)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i}.png")
    studio.dataset.kind.value = "folder"
    studio.dataset.folder.value = str(tmp_path)
    studio.dataset.load_button.click()
    assert studio.state.data.num_classes == 2 and studio.state.model.num_classes == 2


def test_softmask_views_are_soft_and_follow_the_temperature():
    from scipy.stats import entropy

    from segnb.viz import soft_view

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(4), size=(10, 12)).transpose(2, 0, 1)
    viewer = SoftMaskViewer(image, probs, ["a", "b", "c", "d"], np.eye(4, 3) * 255)
    assert viewer.view == "soft" and viewer.opacity >= 0.6  # the mask shows by default
    assert len(viewer.palette) == 4 and len(set(viewer.palette)) == 4 and viewer.dataset_palette[0] == "#ff0000"
    viewer.temperature = 0.25
    cold = viewer.render_array(image)
    viewer.temperature = 4.0
    hot = viewer.render_array(image)
    assert np.abs(cold.astype(int) - hot).mean() > 5  # a soft mask changes with the temperature
    viewer.view = "classes"
    hard = viewer.render_array(image)
    viewer.temperature = 0.25
    assert np.array_equal(hard, viewer.render_array(image))  # the argmax does not
    # the entropy view is scipy's entropy divided by log C; confidence is the max probability
    p = viewer.planes()
    ours = soft_view(p, "entropy", temperature=1.0)
    theirs = entropy(np.maximum(p, 0.5 / 255) / np.maximum(p, 0.5 / 255).sum(0), axis=0) / np.log(4)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert soft_view(p, "confidence").min() >= 0.25 - 1e-6
    np.testing.assert_allclose(soft_view(p, "class", class_index=2), p[2] / p.sum(0), atol=0.01)
    # at a low temperature the soft mix tends to the argmax colours
    from segnb.viz import colorize, soft_mix

    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]])
    peaked = np.full((4, 5, 5), 0.02)
    peaked[1] = 0.94
    mixed = soft_mix(np.zeros((5, 5, 3), np.uint8), peaked, palette, temperature=0.25, alpha=1.0)
    np.testing.assert_allclose(mixed, colorize(np.ones((5, 5), int), palette), atol=2)
    viewer.clear()
    assert viewer.probs == b"" and viewer.shape == [0, 0, 0]


def test_contrast_palette_avoids_each_class_own_colour():
    from segnb.viz import OKABE_ITO, contrast_palette

    avoid = OKABE_ITO[:7].astype(float)  # classes that look exactly like the first seven colours
    colours = contrast_palette(7, avoid)
    assert len({tuple(c) for c in colours}) == 7
    assert all(np.linalg.norm(c.astype(float) - a) > 60 for c, a in zip(colours, avoid, strict=True))
    assert contrast_palette(12).shape == (12, 3)


def test_studio_marks_every_old_result_when_the_model_or_dataset_changes():
    studio = Studio()
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    studio.builder.build_button.click()
    first = dict(studio.state.key)
    assert first["run"] == "untrained" and "unet-classic on vgg-tiny" in first["model"]
    studio.train.epochs.value = 1
    studio.train.start_button.click()
    studio.train.handle.wait(120)
    assert studio.state.key["run"] == "run 1" and "validation mIoU" in studio.train.status.value
    studio.inspect.show_button.click()
    studio.iou.run_button.click()
    studio.classical.run_button.click()
    panels = (studio.train, studio.inspect, studio.iou, studio.classical)
    assert all(p.stamp.key == studio.state.key and not p.stamp.stale for p in panels)
    assert all("segnb-stale" not in p.results._dom_classes for p in panels)
    studio.builder.build_button.click()  # the same spec: new, untrained weights
    assert studio.state.key["model"] != first["model"] and studio.state.history is None
    for panel in panels:
        assert panel.stamp.stale and "segnb-stale" in panel.results._dom_classes, type(panel).__name__
        assert "belong to the previous model" in panel.stamp.value
    studio.iou.run_button.click()  # new results for the new model: no longer marked
    assert not studio.iou.stamp.stale and "segnb-stale" not in studio.iou.results._dom_classes
    studio.dataset.size.value = 60
    studio.dataset.load_button.click()
    assert studio.iou.stamp.stale and "previous dataset" in studio.iou.stamp.value


def test_dataset_picker_renames_classes_colours_and_clears_on_a_failed_load(tmp_path):
    picker = DatasetPicker()
    picker.size.value = 40
    picker.load_button.click()
    before = picker.preview.value
    picker.rename(["heaven", "lawn", "bricks", "disc", "box", "tri", "loop"])
    assert "heaven" in picker.legend.value and picker.state.names()[0] == "heaven"
    assert list(picker.frequencies.data[0].x)[:2] == ["heaven", "lawn"]
    picker.names.value = "a, b"
    picker.rename_button.click()
    assert "Give 7 names" in picker.errors.value and picker.state.names()[0] == "heaven"  # nothing lost
    # the overlay colours stand out from the scene (not sky blue on the sky), the dataset's own stay available
    data = picker.state.data
    assert not np.array_equal(picker.state.palette(), data.palette)
    picker.colours.value = "dataset"
    assert np.array_equal(picker.state.palette(), data.palette) and picker.preview.value != before
    picker.outline.value = True
    assert is_png(picker.preview.value)
    picker.kind.value = "folder"
    picker.folder.value = str(tmp_path / "missing")
    picker.load_button.click()
    assert picker.preview.value == b"" and not picker.frequencies.data  # the old preview is gone
    assert "loading" not in picker.summary.value and "previous dataset" in picker.summary.value
    assert "Error" not in picker.errors.value and picker.errors.value  # in words, no exception names


def test_errors_use_the_controls_words():
    from segnb.ui.common import user_message

    assert user_message(ValueError("no weights; use pretrained='auto' or pretrained=False")) == \
        "no weights; use Pretrained: auto or Pretrained: no"
    assert "Python" not in user_message(KeyError("x")) and user_message(RuntimeError()).startswith("Something")


def test_model_builder_lists_popular_encoders_first_with_sizes(state):
    builder = ModelBuilder(state)
    builder.arch.value = "unet"
    options = list(builder.encoder.options)
    assert options[0].startswith("resnet18 (") and "M parameters" in options[0]
    assert [o.split(" (")[0] for o in options[:3]] == ["resnet18", "resnet34", "resnet50"]
    builder.encoder.value = options[0]
    assert builder.spec()["encoder"] == "resnet18"


def test_train_panel_image_size_estimate_and_first_step(state):
    from segnb.progress import ProgressState
    from segnb.ui.train_panel import live_image_size

    _build(state)
    panel = TrainPanel(state)
    assert panel.image_size.value == 0 and panel.image_size.label == "as stored"  # 128-px scenes as stored
    big = type("Big", (), {"train_split": "train", "__getitem__": lambda self, k: [(np.zeros((512, 512, 3)), None)]})()
    assert live_image_size(big) == 128
    panel.image_size.value = 64
    per_step = panel.estimate()
    assert per_step > 0 and "s per step of 16 images at 64x64 px" in panel.estimate_line.value
    panel._progress(ProgressState(done=0, total=10, epoch=1, epochs=2, device="cpu", precision="fp32"))
    assert "first step running" in panel.status.value and "0.0 images/s" not in panel.status.value


def test_a_lesson_saved_after_training_comes_back_whole(tmp_path):
    studio = Studio()
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    studio.builder.build_button.click()
    studio.train.epochs.value = 1
    studio.train.start_button.click()
    studio.train.handle.wait(120)
    studio.inspect.show_button.click()
    studio.iou.run_button.click()
    studio.inspect.softmask.temperature = 2.5
    path = tmp_path / "class.json"
    studio.save_lesson(path)
    assert "Saved class.json and class.safetensors" in studio.lesson_status.value
    assert (tmp_path / "class.safetensors").stat().st_size > 10_000
    miou, sample = studio.iou.report.miou, studio.train.sample_pred
    status = studio.train.status.value
    again = Studio()
    again.load_lesson(path)
    assert again.errors.value == "", again.errors.value
    assert again.state.history is not None and again.state.run == 1
    assert again.iou.report.miou == pytest.approx(miou, abs=1e-6)  # the trained weights, not a new model
    assert np.array_equal(again.train.sample_pred, sample)
    assert status.split(" (")[0] in again.train.status.value and "restored" in again.train.status.value
    assert len(again.train.curves.data) >= 3 and again.inspect.softmask.temperature == 2.5
    assert not again.iou.stamp.stale and not again.train.stamp.stale and "Restored" in again.lesson_status.value
    (tmp_path / "class.safetensors").unlink()
    again.load_lesson(path)
    assert "class.safetensors" in again.errors.value and "missing" in again.errors.value


def test_presentation_mode_enlarges_charts_and_text():
    studio = Studio()
    studio.presentation.value = True
    assert studio.train.curves.layout.width == "598px"
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    assert studio.dataset.frequencies.figure.layout.font.size == 22
    studio.presentation.value = False
    assert studio.dataset.frequencies.figure.layout.font.size is None


def test_studio_builds_nothing_before_it_is_asked_for():
    import subprocess
    import sys

    code = ("import sys; from segnb.ui import Studio; s = Studio(); "
            "print(sorted(s._built), 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["['Dataset']", "False"], out.stdout + out.stderr  # no encoder list loaded


def test_studio_page_and_first_tab_do_not_import_torch():
    """A class opening the page at once waits for no PyTorch import (docs/CLASSROOM.md): the Studio
    and a Load of the built-in dataset import none of the heavy libraries; the Model tab then does."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "heavy = ('torch', 'timm', 'segmentation_models_pytorch', 'datasets', 'accelerate', 'scipy')\n"
        "loaded = lambda: [m for m in heavy if m in sys.modules]\n"
        "from segnb.ui import Studio\n"
        "s = Studio()\n"
        "print('page', loaded())\n"
        "s.dataset.size.value = 20\n"
        "s.dataset.load_button.click()\n"
        "print('loaded', s.state.data is not None and not s.dataset.errors.value, [m for m in loaded() if m != 'scipy'])\n"
        "s.show_tab('Model')\n"
        "print('model-tab', 'torch' in sys.modules, s.builder.build() is not None)\n"
        "import segnb\n"
        "print('api', callable(segnb.build_model) and callable(segnb.load_dataset))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "page []", out.stdout + out.stderr
    assert lines[1] == "loaded True []", out.stdout + out.stderr  # scipy.optimize assigns overlay colours
    assert lines[2:] == ["model-tab True True", "api True"], out.stdout + out.stderr


def test_segnb_studio_prepares_the_dataset_the_picker_loads_by_default():
    from segnb.cli import STUDIO_SHAPES

    assert DatasetPicker(SharedState()).spec() == {"source": "shapes", "options": STUDIO_SHAPES}


def test_dataset_picker_shows_the_loaders_warnings_and_notes(monkeypatch):
    import warnings

    from segnb.data import load_shapes
    from segnb.ui import dataset_panel

    def offline_copy(source, **options):
        warnings.warn(f"Hub unreachable (offline); using the cached copy of '{source}'.", stacklevel=2)
        data = load_shapes(n=20)
        data.notes = ["the masks' value 255 was taken as void: pass ignore_index=... to change it"]
        return data

    monkeypatch.setattr(dataset_panel, "load_dataset", offline_copy)
    picker = DatasetPicker()
    picker.kind.value = "hub"
    picker.hub_id.value = "someone/scenes"
    picker.load_button.click()
    assert picker.errors.value == "", picker.errors.value
    assert "using the cached copy of" in picker.notes.value and "taken as void" in picker.notes.value
