"""The Studio's Instances panel: train, colour each instance, the mask head's view and its threshold."""

import pytest

pytest.importorskip("ipywidgets")

import segnb  # noqa: E402
from segnb.ui.common import SharedState  # noqa: E402
from segnb.ui.instances import InstancePanel  # noqa: E402


def test_instance_panel_trains_shows_and_thresholds():
    state = SharedState()
    panel = InstancePanel(state)
    panel.train()
    assert "Load a dataset" in panel.errors.value
    state.data = segnb.load_dataset("shapes", n=10, size=64)
    panel.encoder.value = "test_resnet"
    panel.epochs.value = 1
    handle = panel.train(wait=True)
    assert handle.history.epochs and "mask_ap50" in handle.history.epochs[-1]
    assert "done (completed)" in panel.status.value and not panel.train_button.disabled
    panel.model.detector.roi_heads.score_thresh = 0.0  # an untrained model: keep its detections
    panel.show(0)
    assert panel.errors.value == "" and panel.truth.value and panel.predicted.value
    if panel.detection.options:  # the untrained model may still find nothing above 0.3
        assert panel.soft.value and panel.crop.value and panel.pasted.value
        panel.threshold.value = 0.05
        assert "threshold 0.05" in panel.readout.value and "cell covers" in panel.readout.value
        assert int(panel._view.pasted(0.05).sum()) >= int(panel._view.pasted(0.5).sum())
    else:
        assert "No detection" in panel.readout.value


def test_studio_has_the_instances_tab():
    from segnb.ui.studio import TABS, Studio

    studio = Studio()
    assert TABS[-1] == "Instances" and isinstance(studio.tabs.children[-1], InstancePanel)
    assert len(studio.tabs.children) == len(TABS)
