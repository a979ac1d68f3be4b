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
    panel.min_score.value = 0.0  # an epoch-old model: show all its detections
    panel.show(0)
    assert panel.errors.value == "" and panel.truth.value and panel.predicted.value
    assert panel.detection.options and panel.head_row.layout.display == ""
    assert panel.soft.value and panel.crop.value and panel.pasted.value
    before = panel.pasted.value
    panel.threshold.value = 0.05
    assert "threshold 0.05" in panel.readout.value and "cell covers" in panel.readout.value
    assert int(panel._view.pasted(0.05).sum()) >= int(panel._view.pasted(0.5).sum())
    assert panel.pasted.value != before or panel._view.pasted(0.05).sum() == panel._view.pasted(0.5).sum()
    panel.min_score.value = 0.95
    panel.show(0)
    assert "No detection above score 0.95" in panel.readout.value and panel.head_row.layout.display == "none"

def test_studio_has_the_instances_tab():
    from segnb.ui.studio import TABS, Studio

    studio = Studio()
    assert "Instances" in TABS and list(studio.tab_names) == list(TABS)
    assert len(studio.tabs.children) == len(TABS)
    assert isinstance(studio.panel("Instances"), InstancePanel)  # built when the tab is first opened
    assert studio.tabs.children[TABS.index("Instances")].children[0] is studio.panel("Instances")
