"""A tiny Flickr8k-shaped data set of coloured shapes, and a tiny model config for tests."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from captioner.config import ModelConfig

COLOURS = {"red": (220, 30, 30), "yellow": (240, 220, 20), "white": (250, 250, 250)}
BACKGROUNDS = {"blue": (20, 40, 200), "green": (20, 160, 40)}
SHAPES = ("square", "circle")

TINY = ModelConfig(image_size=64, embed_dim=32, lstm_units=64, attention_dim=32, dropout=0.0, max_length=8,
                   beam_size=3, length_penalty=0.0)


def shape_photo(colour: str, shape: str, background: str, size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    if shape == "square":
        draw.rectangle(box, fill=COLOURS[colour])
    else:
        draw.ellipse(box, fill=COLOURS[colour])
    return image


def make_dataset(root: Path, fmt: str = "kaggle") -> dict[str, str]:
    """Write Images/, the captions (``kaggle`` or ``token`` format) and split lists; return file -> caption."""
    images = root / "Images"
    images.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (colour, shape, background) in enumerate(itertools.product(COLOURS, SHAPES, BACKGROUNDS)):
        name = f"{1000 + i}_{colour}{shape}.jpg"
        shape_photo(colour, shape, background).save(images / name, quality=95)
        truth[name] = f"a {colour} {shape} on a {background} background"
    files = sorted(truth)
    if fmt == "kaggle":
        lines = ["image,caption"] + [f"{f},{truth[f].capitalize()} ." for f in files for _ in range(5)]
        lines.append("9999_missing.jpg,A photo that is not there .")
        (root / "captions.txt").write_text("\n".join(lines) + "\n")
    else:
        lines = [f"{f}#{k}\t{truth[f].capitalize()} ." for f in files for k in range(5)]
        lines.append("2258277193_586949ec62.jpg.1#0\tThe bogus entry of the real data set .")
        (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    # A photo with captions that no split lists (Flickr8k has 91 of them).
    shape_photo("red", "square", "green").save(images / "5000_nosplit.jpg")
    with open(root / ("captions.txt" if fmt == "kaggle" else "Flickr8k.token.txt"), "a") as f:
        f.write("5000_nosplit.jpg,A photo in no split .\n" if fmt == "kaggle" else "5000_nosplit.jpg#0\tIn no split .\n")
    # Every photo in train; dev and test reuse them (this data is for overfitting).
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(files) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text("\n".join(files) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("\n".join(files[::2]) + "\n")
    return truth


def random_encoder_weights(path: Path, config: ModelConfig = TINY, seed: int = 0) -> Path:
    """VGG16 with seeded random weights (no ImageNet weights are needed for tests)."""
    import keras

    from captioner.encoder import build_encoder

    keras.utils.set_random_seed(seed)
    encoder = build_encoder(config)
    rng = np.random.default_rng(seed)
    for layer in encoder.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:-1])
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32),
                               np.zeros_like(bias)])
    encoder.save_weights(path)
    return path
