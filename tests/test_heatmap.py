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
    (12, 1, "the lower left"), (1, 12, "the upper right"), (7, 7, "the centre"), (6, 6, "the centre"),
    (0, 7, "the upper centre"), (7, 0, "the middle left"), (13, 6, "the lower centre"),
])
def test_a_single_peak_is_named_by_its_zone(row, column, expected):
    assert heatmap.describe_attention(peak(14, row, column)) == expected


def test_uniform_attention_is_spread():
    assert heatmap.describe_attention(np.full((14, 14), 1 / 196)) == "spread across the photo"


def test_two_equal_corners_are_spread_not_one_of_them():
    grid = peak(14, 0, 0) + peak(14, 13, 13)
    assert heatmap.describe_attention(grid) == "spread across the photo"


def test_a_dominant_zone_with_some_spill_is_mostly_that_zone():
    grid = np.full((14, 14), 0.4 / 196)  # 40% spread evenly
    grid[10:14, 10:14] += 0.6 / 16  # 60% in the lower right
    assert heatmap.describe_attention(grid) == "mostly the lower right"


@pytest.mark.parametrize("rows, columns, expected", [
    (slice(12, 14), slice(None), "mostly the bottom"),
    (slice(0, 2), slice(None), "mostly the top"),
    (slice(None), slice(0, 3), "mostly the left side"),
    (slice(None), slice(5, 9), "mostly a strip down the middle"),
])
def test_a_band_is_named_when_no_single_zone_dominates(rows, columns, expected):
    grid = np.zeros((14, 14))
    grid[rows, columns] = 1.0
    assert heatmap.describe_attention(grid) == expected


def test_describe_works_on_any_grid_size_and_an_empty_map():
    assert heatmap.describe_attention(peak(4, 3, 0)) == "the lower left"
    assert heatmap.describe_attention(np.zeros((4, 4))) == "nowhere in particular"
    with pytest.raises(ValueError):
        heatmap.describe_attention(np.zeros(16))


def test_zone_shares_sum_to_one_and_split_border_cells():
    shares = heatmap.zone_shares(peak(4, 1, 1))  # cell 1 of 4 straddles the first third
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0, 0] == pytest.approx(1 / 9)
    assert shares[1, 1] == pytest.approx(4 / 9)


def test_alt_text_names_the_word_and_the_place():
    assert heatmap.alt_text("dog", peak(14, 12, 1)) == "dog: the lower left"


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
