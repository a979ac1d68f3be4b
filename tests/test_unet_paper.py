"""U-Net as the paper has it: unpadded convolutions with cropped skips, and the border weight map."""

import numpy as np
import pytest
import torch

from segnb.errors import ModelConfigError
from segnb.exercises import check
from segnb.losses import unet_weight_map
from segnb.models.unet import ValidUNet, center_crop, valid_unet_sizes


def test_the_papers_tile_sizes():
    sizes = valid_unet_sizes(572)
    assert sizes["encoder"] == [568, 280, 136, 64, 28]
    assert sizes["decoder"] == [56, 104, 200, 392]
    assert sizes["output"] == [388]
    with pytest.raises(ModelConfigError, match="odd side"):
        valid_unet_sizes(570)


def test_valid_unet_crops_its_skips_and_shrinks_the_output():
    model = ValidUNet(in_channels=1, num_classes=2, width=2, depth=2)
    size = 92
    expected = valid_unet_sizes(size, depth=2)["output"][0]
    with torch.no_grad():
        assert model(torch.zeros(1, 1, size, size)).shape == (1, 2, expected, expected)
    assert expected < size


def test_center_crop_is_the_exercise_solution_and_refuses_to_grow():
    assert check("center_crop", lambda skip, size: center_crop(torch.tensor(skip), size), quiet=True).passed
    x = torch.arange(25.0).reshape(5, 5)
    assert center_crop(x, (3, 3)).tolist() == x[1:4, 1:4].tolist()
    with pytest.raises(ModelConfigError):
        center_crop(x, (6, 5))


def test_weight_map_is_highest_in_the_gap_between_two_objects():
    labels = np.zeros((20, 30), int)
    labels[5:15, 2:13] = 1
    labels[5:15, 15:28] = 2  # a two-pixel gap at columns 13 and 14
    w = unet_weight_map(labels, w0=10, sigma=5)
    gap, open_background, inside = w[10, 13], w[0, 0], w[10, 5]
    assert inside == 1.0  # objects keep their class weight
    assert gap > 9 and gap == w[labels == 0].max()
    assert 1.0 <= open_background < gap
    # d1 + d2 = 1 + 2 pixels in the gap: 1 + 10 * exp(-9 / 50)
    assert gap == pytest.approx(1 + 10 * np.exp(-9 / 50))


def test_weight_map_with_one_object_and_class_weights():
    labels = np.zeros((8, 8), int)
    labels[2:5, 2:5] = 3
    w = unet_weight_map(labels, class_weight=[0.5, 2.0])
    assert set(np.unique(w)) == {0.5, 2.0}
    with pytest.raises(ValueError, match="one"):
        unet_weight_map(np.zeros((2, 3, 3), int))
