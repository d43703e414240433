"""Pictures that are not photos of scenes, generated at random: what :mod:`captioner.photo_check` learns to spot.

The captioner was trained on Flickr8k's photos of people, animals and places;
shown a page of text or a screenshot, it still says "a man is standing in
front of a building". No collection of such pictures is reachable offline, so
these are drawn here with Pillow, from a seed (the same seed, the same
pictures): pages of text, screenshots, drawings and diagrams, nearly blank
photos (a flat colour, a lens cap) and noise. Each generator varies what a real
one varies (paper colour, fonts, layout, rotation, blur, a photo's grain), so
that the classifier learns the kind, not one picture.
"""
from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 448  # drawn at twice the encoder's 224, then resized by the one preprocessing function


def _font(rng: np.random.Generator, low: int, high: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=int(rng.integers(low, high)))  # Pillow's own scalable font: no files


def _word(rng: np.random.Generator) -> str:
    letters = string.ascii_lowercase if rng.random() < 0.85 else string.ascii_letters + string.digits
    return "".join(rng.choice(list(letters), size=int(rng.integers(1, 10))))


def _line(rng: np.random.Generator, words: int) -> str:
    return " ".join(_word(rng) for _ in range(words))


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _finish(image: Image.Image, rng: np.random.Generator, tilt: float = 0.0, blur: float = 0.0,
            grain: float = 0.0) -> Image.Image:
    """As a camera or a scanner leaves it: slightly turned, soft, grainy."""
    if tilt:
        image = image.rotate(float(rng.uniform(-tilt, tilt)), resample=Image.BILINEAR, expand=False,
                             fillcolor=_colour(rng, 60, 200))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, blur))))
    if grain:
        pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, grain), (SIZE, SIZE, 1))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def text_page(rng: np.random.Generator) -> Image.Image:
    """A page of text: paper, margins, a heading, lines in one or two columns."""
    paper = _colour(rng, 215, 256) if rng.random() < 0.8 else _colour(rng, 170, 230)
    ink = _colour(rng, 0, 70)
    image = Image.new("RGB", (SIZE, SIZE), paper)
    draw = ImageDraw.Draw(image)
    font = _font(rng, 9, 26)
    height = font.size + int(rng.integers(2, 9))
    columns = 2 if rng.random() < 0.3 else 1
    margin = int(rng.integers(5, 50))
    width = (SIZE - 2 * margin) // columns
    y = margin
    if rng.random() < 0.6:  # a heading
        draw.text((margin, y), _line(rng, int(rng.integers(1, 5))).title(), fill=ink, font=_font(rng, 20, 40))
        y += 50
    for column in range(columns):
        x, row = margin + column * width, y
        while row < SIZE - margin:
            words = max(1, int(width / (font.size * 3.2)))
            draw.text((x, row), _line(rng, int(rng.integers(max(1, words // 2), words + 2))), fill=ink, font=font)
            row += height * (2 if rng.random() < 0.08 else 1)  # now and then a paragraph
    return _finish(image, rng, tilt=4, blur=1.2, grain=8)


def screenshot(rng: np.random.Generator) -> Image.Image:
    """A screen: a title bar, a menu or sidebar, panels of text, buttons, now and then a picture in it."""
    dark = rng.random() < 0.3
    background = _colour(rng, 20, 60) if dark else _colour(rng, 225, 256)
    text = _colour(rng, 190, 256) if dark else _colour(rng, 0, 90)
    accent = _colour(rng)
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    bar = int(rng.integers(20, 60))
    draw.rectangle((0, 0, SIZE, bar), fill=accent)
    draw.text((10, bar // 4), _line(rng, 3), fill=(255, 255, 255), font=_font(rng, 10, 20))
    left = 0
    if rng.random() < 0.6:  # a sidebar of menu items
        left = int(rng.integers(80, 160))
        draw.rectangle((0, bar, left, SIZE), fill=_colour(rng, 30, 80) if dark else _colour(rng, 200, 240))
        for y in range(bar + 15, SIZE, int(rng.integers(22, 36))):
            draw.text((10, y), _line(rng, 2), fill=text, font=_font(rng, 10, 16))
    y = bar + 10
    while y < SIZE - 30:
        h = int(rng.integers(30, 120))
        panel = (left + 10, y, SIZE - 10, min(SIZE - 5, y + h))
        draw.rectangle(panel, fill=_colour(rng, 40, 70) if dark else _colour(rng, 240, 256),
                       outline=_colour(rng, 120, 200))
        if rng.random() < 0.2:  # a picture inside the screen, as smooth colour
            ramp = np.linspace(0, 1, panel[2] - panel[0])[None, :, None]
            patch = (np.array(_colour(rng)) * ramp + np.array(_colour(rng)) * (1 - ramp))
            patch = np.repeat(patch, panel[3] - panel[1], axis=0).astype(np.uint8)
            image.paste(Image.fromarray(patch), panel[:2])
        else:
            font = _font(rng, 9, 18)
            for row in range(panel[1] + 6, panel[3] - font.size, font.size + 5):
                draw.text((panel[0] + 8, row), _line(rng, int(rng.integers(2, 9))), fill=text, font=font)
        if rng.random() < 0.4:  # a button
            bx = int(rng.integers(panel[0] + 10, max(panel[0] + 11, panel[2] - 90)))
            draw.rounded_rectangle((bx, panel[3] - 28, bx + 80, panel[3] - 6), radius=6, fill=accent)
        y += h + int(rng.integers(8, 20))
    return _finish(image, rng, grain=3 if rng.random() < 0.3 else 0)


def drawing(rng: np.random.Generator) -> Image.Image:
    """A diagram, a chart or a line drawing on a plain background."""
    image = Image.new("RGB", (SIZE, SIZE), _colour(rng, 225, 256))
    draw = ImageDraw.Draw(image)
    ink = _colour(rng, 0, 120)
    kind = rng.integers(4)
    if kind == 0:  # boxes and arrows
        boxes = [(int(rng.integers(10, SIZE - 120)), int(rng.integers(10, SIZE - 60))) for _ in range(rng.integers(3, 8))]
        for (x, y), (u, v) in zip(boxes, boxes[1:]):
            draw.line((x + 50, y + 20, u + 50, v + 20), fill=ink, width=int(rng.integers(1, 4)))
        for x, y in boxes:
            draw.rectangle((x, y, x + 100, y + 40), outline=ink, fill=_colour(rng, 150, 256), width=2)
            draw.text((x + 8, y + 12), _word(rng), fill=ink, font=_font(rng, 10, 16))
    elif kind == 1:  # a bar chart with axes
        draw.line((40, 20, 40, SIZE - 40, SIZE - 20, SIZE - 40), fill=ink, width=2)
        bars = int(rng.integers(3, 12))
        step = (SIZE - 80) // bars
        for i in range(bars):
            top = int(rng.integers(40, SIZE - 60))
            draw.rectangle((50 + i * step, top, 50 + i * step + step * 2 // 3, SIZE - 41), fill=_colour(rng))
    elif kind == 2:  # a line plot on a grid
        for g in range(40, SIZE, int(rng.integers(30, 70))):
            draw.line((g, 0, g, SIZE), fill=_colour(rng, 200, 240))
            draw.line((0, g, SIZE, g), fill=_colour(rng, 200, 240))
        for _ in range(rng.integers(1, 4)):
            ys = np.cumsum(rng.normal(0, 20, 30)) + SIZE / 2
            draw.line([(int(x), int(y)) for x, y in zip(np.linspace(20, SIZE - 20, 30), ys)], fill=_colour(rng),
                      width=int(rng.integers(1, 4)))
    else:  # shapes and strokes, as a child or a clip-art drawing has them
        for _ in range(rng.integers(3, 15)):
            x, y = (int(v) for v in rng.integers(0, SIZE, 2))
            r = int(rng.integers(10, 120))
            shape = rng.integers(3)
            fill = _colour(rng) if rng.random() < 0.6 else None
            if shape == 0:
                draw.ellipse((x - r, y - r, x + r, y + r), outline=ink, fill=fill, width=3)
            elif shape == 1:
                draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), outline=ink, fill=fill, width=3)
            else:
                points = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(rng.integers(2, 6))]
                draw.line(points, fill=ink, width=int(rng.integers(2, 6)))
    return _finish(image, rng, tilt=2, blur=0.8)


def blank(rng: np.random.Generator) -> Image.Image:
    """Nearly nothing: one colour, perhaps a soft gradient, a vignette and the grain of a dark photo."""
    base = np.array(_colour(rng) if rng.random() < 0.7 else (_colour(rng, 0, 40) if rng.random() < 0.5
                                                               else _colour(rng, 220, 256)), np.float32)
    ramp = np.linspace(-1, 1, SIZE)
    gradient = rng.uniform(-25, 25) * ramp[None, :, None] + rng.uniform(-25, 25) * ramp[:, None, None]
    r2 = ramp[None, :] ** 2 + ramp[:, None] ** 2
    vignette = -rng.uniform(0, 40) * r2[..., None]
    pixels = base + gradient + vignette + rng.normal(0, rng.uniform(0, 6), (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def noise(rng: np.random.Generator) -> Image.Image:
    """Random pixels: fine or in blocks, grey or coloured."""
    block = int(rng.choice([1, 2, 4, 8, 16]))
    channels = 1 if rng.random() < 0.3 else 3
    pixels = rng.integers(0, 256, (SIZE // block, SIZE // block, channels), dtype=np.uint8)
    image = Image.fromarray(np.repeat(pixels, 3 // channels, axis=2)).resize((SIZE, SIZE), Image.NEAREST)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))


GENERATORS = {"text": text_page, "screen": screenshot, "drawing": drawing, "blank": blank, "noise": noise}


def generate(kind: str, count: int, seed: int) -> list[Image.Image]:
    """``count`` pictures of one kind (a key of :data:`GENERATORS`), the same ones for the same seed."""
    make = GENERATORS[kind]
    return [make(np.random.default_rng([seed, list(GENERATORS).index(kind), i])) for i in range(count)]
