"""The localisation ratio of a KL map (Fig. 2): maps whose answer is known by construction."""

import math

import pytest
import torch

from infodrop.paper import analysis
from infodrop.paper.models import build_model


def test_a_uniform_map_does_not_localise():
    maps = torch.full((3, 6, 6), 2.5)
    boxes = torch.tensor([[0, 0, 96, 96], [10, 20, 30, 70], [95, 0, 96, 1]])
    torch.testing.assert_close(analysis.localisation_ratio(maps, boxes, (96, 96)),
                               torch.ones(3, dtype=torch.float64))


def test_all_the_kl_inside_the_box_gives_the_area_ratio():
    # a 6x6 map of a 96x96 input: cell (i, j) stands for pixels [16 i, 16 i + 16) x [16 j, ...)
    maps = torch.zeros(1, 6, 6)
    maps[0, 1:3, 2:4] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ratio = analysis.localisation_ratio(maps, [[16, 32, 48, 64]], (96, 96))
    assert ratio.item() == pytest.approx(96 * 96 / (32 * 32))  # = 9: the KL is 9x denser inside


def test_no_kl_inside_the_box_gives_zero():
    maps = torch.ones(1, 4, 4)
    maps[0, :2, :2] = 0
    assert analysis.localisation_ratio(maps, [[0, 0, 8, 8]], (16, 16)).item() == 0


def test_each_cell_counts_with_the_pixels_it_covers():
    # the box (1, 1, 3, 3) of a 4x4 image covers one pixel of each 2x2 cell of a 2x2 map: with
    # all the KL in one cell, 1/4 of the KL is inside a box of 4/16 of the area, ratio 1
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert analysis.localisation_ratio(maps, [[1, 1, 3, 3]], (4, 4)).item() == pytest.approx(1.0)
    # a box on one pixel of that cell: 1/4 of the KL (the cell's 4 pixels share it) in 1/16
    # of the area
    assert analysis.localisation_ratio(maps, [[0, 0, 1, 1]], (4, 4)).item() == pytest.approx(4.0)


def test_a_half_and_half_map():
    # 3/4 of the KL in the left half of the image, the box is the left half: (3/4) / (1/2)
    maps = torch.tensor([[[3.0, 1.0]]]).expand(1, 2, 2)
    assert analysis.localisation_ratio(maps, [[0, 0, 10, 5]], (10, 10)).item() == pytest.approx(1.5)


def test_a_map_without_kl_has_no_ratio():
    ratio = analysis.localisation_ratio(torch.zeros(2, 3, 3), [[0, 0, 2, 2]] * 2, (9, 9))
    assert all(math.isnan(r) for r in ratio.tolist())


@pytest.mark.parametrize("boxes, match", [
    ([[0, 0, 4, 4]], r"boxes must be \(2, 4\)"),
    ([[0, 0, 4, 4], [2, 2, 2, 4]], "non-empty"),
    ([[0, 0, 4, 4], [0, 0, 4, 9]], "inside the 8x8 image"),
])
def test_bad_boxes_are_named(boxes, match):
    with pytest.raises(ValueError, match=match):
        analysis.localisation_ratio(torch.ones(2, 4, 4), boxes, (8, 8))


def test_map_must_be_three_dimensional():
    with pytest.raises(ValueError, match="kl_map must be"):
        analysis.localisation_ratio(torch.ones(4, 4), [[0, 0, 1, 1]], (4, 4))


def test_per_layer_scores_each_convolutional_layer_of_a_model():
    torch.manual_seed(0)
    model = build_model("allcnn32", image_shape=(1, 32, 32), width=0.05).eval()
    images = torch.rand(3, 1, 32, 32)
    boxes = torch.tensor([[0, 0, 16, 32], [4, 4, 20, 20], [0, 0, 32, 32]])
    ratios = analysis.localisation_per_layer(model, images, boxes)
    maps = analysis.kl_maps(model, images)
    assert list(ratios) == list(maps)
    for name, kl_map in maps.items():
        torch.testing.assert_close(ratios[name], analysis.localisation_ratio(kl_map, boxes, (32, 32)))
        assert ratios[name][2].item() == pytest.approx(1.0)  # the whole image as the box


def test_maps_png_with_boxes_is_written(tmp_path):
    torch.manual_seed(0)
    model = build_model("allcnn32", image_shape=(1, 32, 32), width=0.05).eval()
    images = torch.rand(2, 1, 32, 32)
    path = analysis.save_kl_maps(images, analysis.kl_maps(model, images), tmp_path / "m.png",
                                 boxes=torch.tensor([[0, 0, 16, 32], [4, 4, 20, 20]]))
    assert path.read_bytes()[:4] == b"\x89PNG"
