import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from captioner.config import ModelConfig
from captioner.image import ImageError, load_and_preprocess, load_image, preprocess


def _png_header_only(width, height):
    """A PNG that claims width x height pixels: a decompression bomb's header, a few bytes long."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _save(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_jpeg_path(tmp_path):
    path = tmp_path / "x.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_rgba_goes_on_white():
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert load_image(_save(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_and_greyscale_and_palette():
    assert load_image(_save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")).mode == "RGB"
    assert load_image(_save(Image.new("L", (16, 16), 128), "PNG")).getpixel((1, 1)) == (128, 128, 128)
    palette = Image.new("P", (16, 16), 0)
    palette.info["transparency"] = 0
    assert load_image(_save(palette, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_is_rescaled_not_clipped():
    array = np.full((16, 16), 32768, np.uint16)
    data = _save(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    value = load_image(data).getpixel((0, 0))
    assert value[0] == value[1] == value[2] and 125 <= value[0] <= 130  # half of full scale


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(buf.getvalue()).getpixel((0, 0))
    assert r > 200 and b < 50


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert load_image(_save(image, "JPEG", exif=exif)).size == (20, 40)


def test_tiny_photos_are_refused_small_ones_upscaled():
    with pytest.raises(ImageError, match="1 x 1 pixels, too small"):
        load_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((4, 400, 3), np.uint8))
    pixels = load_and_preprocess(_save(Image.new("RGB", (16, 16), (10, 20, 30)), "PNG"), ModelConfig())
    assert pixels.shape == (224, 224, 3) and np.isfinite(pixels).all()


@pytest.mark.parametrize("data, message", [
    (b"this is a text file, not a photo\n", "not a photo"),
    (b"", "empty"),
    (_png_header_only(30_000, 30_000), "megapixels"),
])
def test_bad_input_is_a_clear_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("hello")
    with pytest.raises(ImageError, match="not a photo"):
        load_image(path)


def test_truncated_jpeg_is_a_clear_error():
    data = _save(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="damaged"):
        load_image(data[: len(data) // 2])


def test_none_and_missing_file(tmp_path):
    with pytest.raises(ImageError, match="No photo"):
        load_image(None)
    with pytest.raises(ImageError, match="no file"):
        load_image(tmp_path / "nope.jpg")


def test_arrays_of_any_dtype():
    assert load_image(np.zeros((20, 30, 3), np.uint8)).size == (30, 20)
    assert load_image(np.ones((20, 30), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((20, 30, 3), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageError):
        load_image(np.zeros((20, 30, 7)))


def test_preprocess_resizes_whole_photo_and_standardises():
    config = ModelConfig(image_size=32)
    image = Image.new("RGB", (100, 20), (int(0.485 * 255), int(0.456 * 255), int(0.406 * 255)))
    pixels = preprocess(image, config)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.float32
    assert np.abs(pixels).max() < 0.02  # the ImageNet mean maps to ~0
    white = preprocess(Image.new("RGB", (16, 16), (255, 255, 255)), config)
    np.testing.assert_allclose(white[0, 0], (1 - np.array(config.pixel_mean)) / np.array(config.pixel_std), rtol=1e-5)
