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
    assert list(panel.curves.data[0].x) == [1, 2] and len(panel.class_curves.data) == 7
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
    assert viewer.palette == ["#ff0000", "#00ff00", "#0000ff"] and viewer.visible == [True] * 3
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
    assert "segnb-toy-overlap" in lab.overlap_view.value and "expect a checkerboard" in lab.score.value
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


def test_studio_tabs_presentation_and_lessons(tmp_path):
    studio = Studio()
    assert studio.tabs.titles == ("Dataset", "Model", "Train", "Inspect", "Upsampling", "IoU", "Classical",
                                  "Interactive")
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
