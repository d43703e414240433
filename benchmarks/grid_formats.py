"""The heatmap grid of a /describe request: time to draw it, and to save it as PNG or as JPEG.

For each bundled example photo, captions it once with the shipped model, draws the grid
(caption, photo, one labelled heatmap per word, colour key) and saves it, in turn, as the app
saves it (JPEG, quality 90, no chroma subsampling) and as PNG at its fastest level
(compress_level=1), repeating both alternately. Prints the median time and the mean file size of
each, and their ratio.

    python benchmarks/grid_formats.py [--model assets/model] [--repeat 5]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from common import timed

from captioner import heatmap
from captioner.app_logic import DISPLAY_SIDE, GRID_JPEG
from captioner.pipeline import DEFAULT_EXAMPLES, DEFAULT_MODEL, Captioner

FORMATS = {"JPEG q90 4:4:4 (the app)": GRID_JPEG,
           "PNG compress_level=1": dict(format="PNG", compress_level=1)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    captioner = Captioner.load(args.model)
    grids = []
    draw = []
    for f in sorted(Path(DEFAULT_EXAMPLES).glob("*.jpg")):
        d = captioner.describe(f)
        photo = heatmap.fit(d.photo, DISPLAY_SIDE)
        make = lambda: heatmap.grid_image(photo, d.caption.words, d.caption.attention, title=d.hedged)  # noqa: E731
        draw += timed(make, args.repeat)
        grids.append(make())
    times = {name: [] for name in FORMATS}
    sizes = {name: [] for name in FORMATS}
    for _ in range(args.repeat):
        for grid in grids:
            for name, options in FORMATS.items():  # alternately, so that both see the same machine
                buffer = io.BytesIO()
                times[name] += timed(lambda: grid.save(buffer, **options), 1)  # noqa: B023
                sizes[name].append(buffer.tell())
    print(f"{len(grids)} grids ({grids[0].size[0]} x {grids[0].size[1]} pixels and up), {args.repeat} times each")
    print(f"  drawing the grid: {1000 * np.median(draw):.1f} ms")
    for name in FORMATS:
        print(f"  saving as {name}: {1000 * np.median(times[name]):.1f} ms, {np.mean(sizes[name]) / 1e6:.2f} MB")
    jpeg, png = (np.median(times[n]) for n in FORMATS)
    print(f"  PNG / JPEG save time: {png / jpeg:.1f}x")


if __name__ == "__main__":
    main()
