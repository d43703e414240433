"""Reading photos and turning them into encoder input.

:func:`load_image` turns anything a visitor can hand us (a path, bytes, a PIL
image, an array) into an upright 8-bit RGB PIL image, or raises
:class:`ImageError` with a message fit to show to that visitor.
:func:`preprocess` is the one function that turns such an image into the
encoder's input; feature extraction, training and serving all call it.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ModelConfig

# Pillow's own decompression-bomb threshold (about 89 megapixels): larger photos are refused.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_TOO_MANY = (f"This photo has too many pixels to read safely (the limit is {MAX_PIXELS // 1_000_000} megapixels). "
             "Please send a smaller copy.")
MAX_FILE_BYTES = 50 * 1024 * 1024
MIN_SIDE = 16  # pixels: a smaller photo holds nothing to describe
# What Pillow's readers may raise on damaged files. tests/test_image_fuzz.py found ValueError ("P1" alone,
# a PPM header cut short); the rest are what its plugins raise in their own code, caught before they are met.
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError)

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class ImageError(ValueError):
    """A photo we cannot read. The message is written for the person who sent it."""


def load_image(source, *, target_size: int | None = None) -> Image.Image:
    """Open ``source`` as an upright RGB image.

    ``source`` may be a path, raw bytes, a file object, a PIL image or a numpy
    array (H x W, H x W x 3 or H x W x 4, any integer or float dtype).
    ``target_size`` lets large JPEGs be decoded at a reduced scale (never
    smaller than that size), which makes 100-megapixel photos cheap.
    """
    if source is None:
        raise ImageError("No photo was given. Upload, paste or take a photo first.")
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    _check_size(image)
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)  # animated GIF / WebP / APNG: caption the first frame
        if image.format == "JPEG" and target_size:
            image.draft("RGB", (target_size, target_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC oddities are not the visitor's problem
            image.load()
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, *DECODER_ERRORS) as exc:
        raise ImageError(f"This photo is damaged or incomplete and could not be read ({exc}).") from exc


def _open(source) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"There is no file at {path}.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"This file is larger than {MAX_FILE_BYTES // 2**20} MB.")
        if path.stat().st_size == 0:
            raise ImageError("This file is empty.")
        fileobj = path.open("rb")
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("This file is empty.")
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(f"This file is larger than {MAX_FILE_BYTES // 2**20} MB.")
        fileobj = io.BytesIO(source)
    else:
        fileobj = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fileobj)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_TOO_MANY) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("This file is not a photo in a format I can read (JPEG, PNG, GIF, WebP, BMP, TIFF).") from exc
    except DECODER_ERRORS as exc:  # a damaged header: each of Pillow's readers fails in its own way
        raise ImageError(f"This file could not be read ({exc}).") from exc


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"This photo is only {width} x {height} pixels, too small to describe. "
                         f"Please send one at least {MIN_SIDE} pixels on each side.")
    if width * height > MAX_PIXELS:
        raise ImageError(_TOO_MANY)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, transparent parts on white, high bit depths rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _from_array(np.asarray(image))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("RGBA", "LA", "La", "PA", "RGBa") or image.mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _from_array(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"An image array must be H x W, H x W x 3 or H x W x 4, not {array.shape}.")
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageError(f"This photo is only {array.shape[1]} x {array.shape[0]} pixels, too small to describe. "
                         f"Please send one at least {MIN_SIDE} pixels on each side.")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise ImageError(_TOO_MANY)
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if np.issubdtype(array.dtype, np.floating):
            top = 1.0 if np.nanmax(values) <= 1.0 else 255.0
        else:
            top = 255.0 if values.max() <= 255 else 65535.0  # 16-bit stored in a wider int
        array = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[-1] == 4:
        return _to_rgb(Image.fromarray(array, "RGBA"))
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def resize(image: Image.Image, config: ModelConfig) -> Image.Image:
    """The whole photo squashed to image_size x image_size: no crop, so nothing is cut off."""
    size = (config.image_size, config.image_size)
    if image.size == size:
        return image
    return image.resize(size, _RESAMPLE[config.resample])


def preprocess(image: Image.Image, config: ModelConfig) -> np.ndarray:
    """RGB image -> float32 (image_size, image_size, 3), scaled as the encoder weights expect.

    The encoder weights are torchvision's, so pixels go to [0, 1] and are then
    standardised with ImageNet's mean and standard deviation (not Keras's
    caffe-style ``vgg16.preprocess_input``).
    """
    pixels = np.asarray(resize(image, config), dtype=np.float32) / 255.0  # (S, S, 3)
    mean = np.asarray(config.pixel_mean, dtype=np.float32)
    std = np.asarray(config.pixel_std, dtype=np.float32)
    return (pixels - mean) / std


def load_and_preprocess(source, config: ModelConfig) -> np.ndarray:
    return preprocess(load_image(source, target_size=config.image_size), config)
