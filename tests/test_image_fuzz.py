"""Hostile input, property-based (hypothesis): whatever bytes a visitor sends, ``load_image`` gives an
upright RGB image or an :class:`ImageError`, never another exception, within a bound of time and memory.

The inputs are random bytes and valid files in each format the app accepts (JPEG, PNG, GIF, WebP, TIFF,
BMP) with bytes flipped, cut, repeated or inserted: where decoders break, near a valid header.
The bounds: at most ``SECONDS`` per input, and the process's peak resident memory grows by at most
what the largest photo allowed (``MAX_PIXELS``, 4 bytes a pixel) and a margin need.
"""
from __future__ import annotations

import io
import os
import resource
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from captioner.image import MAX_PIXELS, ImageError, load_image

FORMATS = {"JPEG": {"quality": 90}, "PNG": {}, "GIF": {}, "WEBP": {"quality": 80}, "TIFF": {}, "BMP": {}}
SECONDS = 5.0
MEMORY_BYTES = 4 * MAX_PIXELS + 200 * 2**20
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def _photo() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(128, 40, (40, 56, 3)), 0, 255).astype(np.uint8)
    pixels[10:30, 20:40] = (220, 30, 30)
    return Image.fromarray(pixels)


VALID = {}
for name, options in FORMATS.items():
    buffer = io.BytesIO()
    _photo().save(buffer, name, **options)
    VALID[name] = buffer.getvalue()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _read(data: bytes) -> None:
    """load_image on ``data``: an RGB image or an ImageError, in bounded time and memory."""
    before, start = _peak_rss(), time.perf_counter()
    try:
        image = load_image(data, target_size=224)
    except ImageError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:
        assert image.mode == "RGB" and min(image.size) >= 16
        np.asarray(image)  # really decoded
    assert time.perf_counter() - start < SECONDS
    assert _peak_rss() - before < MEMORY_BYTES


@st.composite
def mutated(draw, fmt: str) -> bytes:
    data = bytearray(VALID[fmt])
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at + draw(st.integers(1, 32))] = b"\0" * len(data[at:at + 32])
        if not data:
            break
    return bytes(data)


def test_every_valid_file_reads():
    for name, data in VALID.items():
        image = load_image(data)
        assert image.mode == "RGB" and image.size == (56, 40), name


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    _read(data)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mutated_files(fmt):
    @FUZZ
    @given(mutated(fmt))
    def check(data):
        _read(data)

    check()


@FUZZ
@given(st.integers(1, 2**16), st.integers(1, 2**16))
def test_a_png_header_that_claims_any_size_is_read_or_refused_within_bounds(width, height):
    """A PNG whose header says width x height (up to 4 gigapixels): over MAX_PIXELS it is refused, never
    allocated; under it, its missing pixels make it a damaged file."""
    image = Image.new("RGB", (min(width, 64), min(height, 64)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR's size (its CRC now wrong)
    _read(bytes(data))
