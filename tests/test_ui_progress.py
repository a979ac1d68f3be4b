from unittest import mock

from segnb.data import load_shapes
from segnb.models import build_model
from segnb.train import fit
from segnb.ui import NotebookProgress


def test_notebook_progress_draws_once_then_updates_in_place():
    data = load_shapes(n=24, size=32, seed=1)
    model = build_model("fcn32s", "vgg-tiny", class_names=data.class_names)
    handle = mock.MagicMock()
    with mock.patch("segnb.ui.progress.display", return_value=handle) as display:
        history = fit(model, data, epochs=2, batch_size=8, progress=NotebookProgress(interval=0))
    assert history.stopped == "completed"
    assert display.call_count == 2  # the bar, updated in place, and one line on the data's path
    note = display.call_args_list[1].args[0].data
    assert "segnb-progress-note" in note and "data: the decoded split" in note
    assert handle.update.call_count >= 6
    last_html = handle.update.call_args.args[0].data
    assert "epoch 2/2" in last_html and "img/s" in last_html and "<progress" in last_html
