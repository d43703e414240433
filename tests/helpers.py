"""Helpers shared by the app tests (``from helpers import ...``): photos good and bad, and the app served
in a child process (:mod:`captioner.serve`, which the latency benchmark uses too)."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from captioner.serve import AppDidNotStart, free_port, start_app, stop  # noqa: F401  (re-exported)
from synthetic import shape_photo

TRUTH = "a red circle on a blue background"  # what the tiny model says of red_circle()
BANDS = ("Probably ", "Possibly ", "I'm not sure")  # the openings of captioner.hedging.hedge


def red_circle() -> Image.Image:
    return shape_photo("red", "circle", "blue")


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A PNG header claiming 30,000 x 30,000 pixels (a decompression bomb), with almost no data."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


NOT_A_PHOTO = b"These are my holiday notes, not a photo.\n" * 20
