"""Pictures and words for where the model looked: attention heatmaps and their descriptions.

Everything here is a pure function of a photo and the G x G attention grids of
a :class:`~captioner.decoding.Caption`, so it is tested without a browser.
Colours come from a perceptually uniform, colour-blind-safe matplotlib
colormap (cividis by default); pyplot is never imported.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_COLORMAP = "cividis"
SAFE_COLORMAPS = ("cividis", "viridis")
DEFAULT_OPACITY = 0.6

ROWS = ("upper", "middle", "lower")
COLUMNS = ("left", "centre", "right")
SPREAD = 0.35  # half the attention needs more than this share of the photo: "spread across the photo"
KEY_WIDTH = 256  # the colour key under the download grid


def zone_name(row: int, column: int) -> str:
    """"upper left", "centre", "lower centre", ... for a cell of the 3 x 3 zones."""
    if (row, column) == (1, 1):
        return "centre"
    return f"{ROWS[row]} {COLUMNS[column]}"


def half_area(grid: np.ndarray) -> float:
    """The smallest share of the photo's area that holds half the attention (0.5 / G^2 .. 0.5).

    How concentrated a map is: 0.01 is one small spot, 0.5 is perfectly even.
    """
    grid = _clean(grid)
    weights = np.sort(grid, axis=None)[::-1] / grid.sum()
    cells = int(np.searchsorted(np.cumsum(weights), 0.5 - 1e-9)) + 1  # cells needed to reach half
    return cells / grid.size


def describe_attention(grid: np.ndarray) -> str:
    """Where the model looked, in words specific to this map: the zone of its strongest cell and how
    concentrated it is, "looked hardest at the lower left; half its attention on 4% of the photo"."""
    grid = _clean(grid)
    if grid.sum() <= 0:
        return "nowhere in particular"
    area = half_area(grid)
    percent = f"{max(1, round(100 * area))}% of the photo"
    if area > SPREAD:
        return f"spread across the photo; half its attention on {percent}"
    h, w = grid.shape
    row, column = np.unravel_index(np.argmax(grid), grid.shape)
    zone = zone_name(min(2, int(3 * (row + 0.5) / h)), min(2, int(3 * (column + 0.5) / w)))
    return f"looked hardest at the {zone}; half its attention on {percent}"


def alt_text(word: str, grid: np.ndarray) -> str:
    """The text alternative of one word's heatmap: "dog: looked hardest at the lower left; half its
    attention on 4% of the photo"."""
    return f"{word}: {describe_attention(grid)}"


def _clean(grid: np.ndarray) -> np.ndarray:
    grid = np.clip(np.nan_to_num(np.asarray(grid, np.float64)), 0, None)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"an attention map must be a 2-D grid, not shape {grid.shape}")
    return grid


def upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A G x G attention grid smoothed (bicubic) to ``size`` = (width, height), scaled to [0, 1]."""
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"an attention map must be a 2-D grid, not shape {grid.shape}")
    smooth = np.asarray(Image.fromarray(grid, mode="F").resize(size, Image.Resampling.BICUBIC))
    smooth = np.clip(np.nan_to_num(smooth), 0, None)  # bicubic overshoots below zero near edges
    peak = smooth.max()
    return smooth / peak if peak > 0 else smooth


def colorize(heat: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Values in [0, 1] -> RGB floats in [0, 1] through a named matplotlib colormap."""
    import matplotlib

    if colormap not in SAFE_COLORMAPS:
        raise ValueError(f"colormap must be one of {SAFE_COLORMAPS} (colour-blind safe), not {colormap!r}")
    return matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3]


@functools.lru_cache(maxsize=None)
def palette(colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The colormap's own colour table as (N, 3) uint8; value v in [0, 1] has colour N * v (floor, clipped)."""
    import matplotlib

    colorize(np.zeros(1), colormap)  # checks the name
    table = matplotlib.colormaps[colormap]
    return np.round(table(np.arange(table.N))[:, :3] * 255).astype(np.uint8)


def overlay(photo: Image.Image, grid: np.ndarray, opacity: float = DEFAULT_OPACITY,
            colormap: str = DEFAULT_COLORMAP) -> Image.Image:
    """The photo with one word's attention laid over it; ``opacity`` 0 shows the photo, 1 only the map."""
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be between 0 and 1, not {opacity}")
    photo = photo.convert("RGB")
    table = palette(colormap)
    index = np.minimum((upsample(grid, photo.size) * len(table)).astype(np.intp), len(table) - 1)
    colours = Image.fromarray(table[index], "RGB")  # the look-up colorize does, ~10x faster
    return Image.blend(photo, colours, opacity)  # (1 - opacity) * photo + opacity * colours


def fit(photo: Image.Image, side: int) -> Image.Image:
    """The photo scaled so that its longer side is ``side`` pixels (never enlarged past 4x)."""
    width, height = photo.size
    scale = min(side / max(width, height), 4.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return photo.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def grid_image(photo: Image.Image, words: list[str], attention: np.ndarray, title: str = "",
               opacity: float = DEFAULT_OPACITY, colormap: str = DEFAULT_COLORMAP, panel: int = 256,
               columns: int = 4) -> Image.Image:
    """One image for download: the caption, the photo, one labelled heatmap per word, and a colour key."""
    if len(words) != len(attention):
        raise ValueError(f"{len(words)} words but {len(attention)} attention maps")
    small = fit(photo, panel)
    panels = [("photo", small)] + [(f"{i}. {word}", overlay(small, grid, opacity, colormap))
                                   for i, (word, grid) in enumerate(zip(words, attention), start=1)]
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    pad, label_font, title_font = 12, _font(18), _font(22)
    label_h = 30
    cell_w, cell_h = small.width + pad, small.height + label_h + pad
    width = max(pad + columns * cell_w, 2 * pad + KEY_WIDTH)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrap(measure, title, title_font, width - 2 * pad)
    title_h = len(title_lines) * 30 + (pad if title_lines else 0)
    key_h = 56
    canvas = Image.new("RGB", (width, pad + title_h + rows * cell_h + key_h), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for line in title_lines:
        draw.text((pad, y), line, fill="black", font=title_font)
        y += 30
    top = pad + title_h
    for index, (label, image) in enumerate(panels):
        x = pad + (index % columns) * cell_w
        y = top + (index // columns) * cell_h
        canvas.paste(image, (x, y))
        draw.text((x, y + image.height + 4), label, fill="black", font=label_font)
    _draw_key(canvas, draw, top + rows * cell_h, colormap, label_font)
    return canvas


def _draw_key(canvas: Image.Image, draw: ImageDraw.ImageDraw, y: int, colormap: str, font) -> None:
    """A colour bar from 'less attention' to 'more attention' along the bottom."""
    pad, bar_w, bar_h = 12, KEY_WIDTH, 16
    ramp = colorize(np.linspace(0, 1, bar_w)[None, :].repeat(bar_h, 0), colormap)
    canvas.paste(Image.fromarray(np.round(ramp * 255).astype(np.uint8), "RGB"), (pad, y))
    draw.text((pad, y + bar_h + 4), "less attention", fill="black", font=font)
    more = "more attention"
    draw.text((pad + bar_w - draw.textlength(more, font=font), y + bar_h + 4), more, fill="black", font=font)
