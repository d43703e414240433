"""Heatmaps and their descriptions: pure functions, no model and no browser."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioner import heatmap
from synthetic import shape_photo


def peak(size: int, row: int, column: int) -> np.ndarray:
    grid = np.zeros((size, size), np.float32)
    grid[row, column] = 1.0
    return grid


@pytest.mark.parametrize("row, column, expected", [
    (12, 1, "lower left"), (1, 12, "upper right"), (7, 7, "centre"), (6, 6, "centre"),
    (0, 7, "upper centre"), (7, 0, "middle left"), (13, 6, "lower centre"),
])
def test_a_single_peak_is_named_by_its_zone_and_is_tightly_focused(row, column, expected):
    assert heatmap.describe_attention(peak(14, row, column)) == (
        f"looked hardest at the {expected}; half its attention on 1% of the photo")


def test_uniform_attention_is_spread():
    assert heatmap.describe_attention(np.full((14, 14), 1 / 196)) == (
        "spread across the photo; half its attention on 50% of the photo")


def test_how_concentrated_a_map_is_tells_two_maps_of_one_zone_apart():
    spot = np.full((14, 14), 0.2 / 196)
    spot[6:8, 6:8] += 0.8 / 4  # 80% on 4 cells in the centre
    band = np.zeros((14, 14))
    band[5:9, :] = 1.0  # a band across the middle, 4 rows of 14
    assert heatmap.half_area(spot) == pytest.approx(3 / 196)  # 2 cells hold 40%, 3 hold 60%
    assert heatmap.half_area(band) == pytest.approx(28 / 196)
    assert heatmap.describe_attention(spot) == "looked hardest at the centre; half its attention on 2% of the photo"
    assert heatmap.describe_attention(band).endswith("half its attention on 14% of the photo")
    assert heatmap.describe_attention(spot) != heatmap.describe_attention(band)


def test_describe_works_on_any_grid_size_and_an_empty_map():
    assert heatmap.describe_attention(peak(4, 3, 0)) == (
        "looked hardest at the lower left; half its attention on 6% of the photo")
    assert heatmap.describe_attention(np.zeros((4, 4))) == "nowhere in particular"
    with pytest.raises(ValueError):
        heatmap.describe_attention(np.zeros(16))


def test_alt_text_names_the_word_and_the_place():
    assert heatmap.alt_text("dog", peak(14, 12, 1)) == (
        "dog: looked hardest at the lower left; half its attention on 1% of the photo")


def test_upsample_is_smooth_scaled_and_peaks_where_the_grid_does():
    heat = heatmap.upsample(peak(14, 3, 10), (280, 140))  # (width, height)
    assert heat.shape == (140, 280)
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 3 * 10 <= y < 4 * 10 and 10 * 20 <= x < 11 * 20  # inside cell (3, 10)
    assert 0 < heat[y, x - 15] < 1  # smoothed, not blocky: neighbours fade


def test_overlay_blends_the_colormap_over_the_photo_at_the_chosen_opacity():
    photo = shape_photo("red", "square", "blue", size=64)
    grid = peak(4, 0, 0)
    assert np.array_equal(np.asarray(heatmap.overlay(photo, grid, 0.0)), np.asarray(photo))
    full = np.asarray(heatmap.overlay(photo, grid, 1.0)).astype(int)
    expected = np.round(heatmap.colorize(heatmap.upsample(grid, photo.size)) * 255)
    assert np.abs(full - expected).max() <= 1
    half = np.asarray(heatmap.overlay(photo, grid, 0.5)).astype(int)
    assert np.abs(half - (np.asarray(photo).astype(int) + full) / 2).max() <= 1
    with pytest.raises(ValueError):
        heatmap.overlay(photo, grid, 1.5)


def test_only_colour_blind_safe_colormaps_are_allowed():
    bright = heatmap.colorize(np.array([1.0]), "cividis")[0]
    dark = heatmap.colorize(np.array([0.0]), "cividis")[0]
    assert bright.sum() > 2 * dark.sum()  # light yellow over dark blue: readable without hue
    with pytest.raises(ValueError, match="colour-blind"):
        heatmap.colorize(np.array([0.5]), "jet")


def test_fit_keeps_the_aspect_ratio():
    small = heatmap.fit(Image.new("RGB", (1000, 500)), 200)
    assert small.size == (200, 100)
    assert heatmap.fit(Image.new("RGB", (10, 10)), 200).size == (40, 40)  # never enlarged past 4x


def test_grid_image_has_the_photo_and_one_labelled_panel_per_word():
    photo = shape_photo("white", "circle", "green", size=120)
    attention = np.stack([peak(4, 0, 0), peak(4, 3, 3), np.full((4, 4), 1 / 16)])
    one = heatmap.grid_image(photo, ["a", "white", "circle"], attention, title="Probably a white circle.",
                             panel=100, columns=4)
    # 4 panels of 100 px in one row, plus padding; title, label and key strips below and above.
    assert one.width == 12 + 4 * 112 and one.height > 100 + 30 + 56
    two_rows = heatmap.grid_image(photo, ["a", "white", "circle"], attention, panel=100, columns=2)
    assert two_rows.height > one.height - 40 + 100  # a second row of panels
    panel_1 = np.asarray(one.crop((12 + 112, 12 + 42, 12 + 112 + 100, 12 + 42 + 100)))
    panel_2 = np.asarray(one.crop((12 + 224, 12 + 42, 12 + 224 + 100, 12 + 42 + 100)))
    assert panel_1[:20, :20].mean() > panel_1[-20:, -20:].mean()  # word 1 looked at the upper left
    assert panel_2[-20:, -20:].mean() > panel_2[:20, :20].mean()  # word 2 at the lower right
    with pytest.raises(ValueError):
        heatmap.grid_image(photo, ["a"], attention)
