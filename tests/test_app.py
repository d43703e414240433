"""The web app: its handlers called directly (every bad input included) and, marked ``server``, its API
through gradio_client against the app served on 127.0.0.1, and a check that it never reaches the internet."""
from __future__ import annotations

import html
import importlib.util
import io
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from captioner import app_logic, speech
from captioner.image import MAX_FILE_BYTES
from synthetic import shape_photo

ROOT = Path(__file__).resolve().parent.parent
TRUTH = "a red circle on a blue background"
BANDS = ("Probably ", "Possibly ", "I'm not sure; it may be ")


# --- photos, good and bad ------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A PNG header claiming 30,000 x 30,000 pixels (a decompression bomb), with almost no data."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def red_circle() -> Image.Image:
    return shape_photo("red", "circle", "blue")


def variants() -> dict[str, bytes]:
    """Unusual but valid photos: each must be captioned."""
    photo = red_circle()
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 255))  # RGBA, opaque: the colours (and so the words) are unchanged
    grey16 = Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257), mode="I;16")
    frames = [photo, shape_photo("white", "square", "green")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "cmyk.jpg": encoded(photo.convert("CMYK"), "JPEG", quality=95),
        "rgba.png": encoded(rgba, "PNG"),
        "sixteen_bit.png": encoded(grey16, "PNG"),
        "animated.gif": gif.getvalue(),
        "photo.webp": encoded(photo, "WEBP"),
    }


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """Files that cannot be captioned, each with words its message must contain."""
    jpeg = encoded(red_circle(), "JPEG", quality=95)
    return {
        "notes.jpg": (b"These are my holiday notes, not a photo.\n" * 20, "not a photo"),
        "corrupt.jpg": (jpeg[: len(jpeg) // 2], "damaged or incomplete"),
        "tiny.png": (encoded(Image.new("RGB", (1, 1), "red"), "PNG"), "1 x 1 pixels, too small"),
        "bomb.png": (bomb_png(), "too many pixels"),
        "empty.jpg": (b"", "empty"),
    }


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def payload(path: Path) -> dict:
    """What Gradio hands the Caption handler for an upload (preprocess=False)."""
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def status_text(live: str) -> str:
    assert live.startswith('<div class="live-caption ') and 'role="status"' in live and 'aria-live="polite"' in live
    return html.unescape(live.split(">", 1)[1].rsplit("</div>", 1)[0])


# --- handlers, called directly ---------------------------------------------------------------

def test_caption_view_fills_the_live_region_tables_and_state(tiny_captioner, tmp_path):
    live, described, beams, steps = app_logic.caption_view(tiny_captioner, payload(
        write(tmp_path, "photo.jpg", encoded(red_circle(), "JPEG", quality=95))), 3)
    assert 'class="live-caption caption"' in live
    text = status_text(live)
    assert text.startswith(BANDS) and text.endswith(f"{TRUTH}.")
    assert described.caption.text == TRUTH and described.hedged == text
    assert max(described.photo.size) <= app_logic.DISPLAY_SIDE
    assert beams.count("<tr><td>") == 1 + len(described.caption.alternatives) == 3
    assert f"<td>{TRUTH}</td>" in beams
    assert steps.count("<tr><td>") == len(TRUTH.split()) + 1  # every word, then the end
    assert "<td>(end of caption)</td>" in steps


@pytest.mark.parametrize("beam", [1, 3, 10, 0, 99, None, "4"])
def test_any_beam_width_is_clamped_and_captions(tiny_captioner, beam):
    described = app_logic.describe(tiny_captioner, red_circle(), beam)
    assert described.caption.text == TRUTH
    expected = {None: tiny_captioner.config.beam_size, 0: 1, 99: 10, "4": 4}.get(beam, beam)
    assert 1 + len(described.caption.alternatives) == expected  # one finished caption per beam


@pytest.mark.parametrize("name", sorted(variants()))
def test_unusual_but_valid_photos_are_captioned(tiny_captioner, tmp_path, name):
    live, described, _, _ = app_logic.caption_view(tiny_captioner, payload(write(tmp_path, name, variants()[name])), 3)
    assert 'class="live-caption caption"' in live, status_text(live)
    assert described is not None and status_text(live).startswith(BANDS)
    if name != "sixteen_bit.png":  # grey: the colours are gone, so the words may differ
        assert described.caption.text == TRUTH


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_files_get_a_clear_message_in_the_live_region(tiny_captioner, tmp_path, name):
    data, words = bad_inputs()[name]
    live, described, beams, steps = app_logic.caption_view(tiny_captioner, payload(write(tmp_path, name, data)), 3)
    assert 'class="live-caption error"' in live
    assert words in status_text(live)
    assert "Traceback" not in live and described is None and beams == steps == ""


@pytest.mark.parametrize("empty", [None, {"path": None}])
def test_an_empty_submit_asks_for_a_photo(tiny_captioner, empty):
    live, described, _, _ = app_logic.caption_view(tiny_captioner, empty, 3)
    assert "No photo was given" in status_text(live) and described is None


def test_an_unexpected_failure_is_reported_without_a_traceback(tiny_captioner, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("TensorFlow fell over")

    monkeypatch.setattr(tiny_captioner, "caption_features", broken)
    live, described, _, _ = app_logic.caption_view(tiny_captioner, red_circle(), 3)
    assert status_text(live) == "Sorry, something went wrong while describing this photo. Please try again."
    assert described is None and "TensorFlow fell over" in caplog.text


def test_the_live_region_escapes_html():
    live = app_logic.live_html('<img src=x onerror="alert(1)"> & more')
    assert "<img" not in live and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; more" in live
    with pytest.raises(ValueError):
        app_logic.live_html("x", "shout")


def test_tables_escape_the_words(tiny_captioner):
    described = app_logic.describe(tiny_captioner, red_circle(), 3)
    described.caption.words[0] = "<b>"
    described.caption.steps[0][0] = ("<script>", 0.5)
    assert "<b>" not in app_logic.beams_table(described.caption)
    assert "<script>" not in app_logic.steps_table(described.caption)
    assert "&lt;script&gt; 50.0%" in app_logic.steps_table(described.caption)


def test_without_a_model_the_app_explains_what_to_do(tmp_path):
    captioner, error = app_logic.load_captioner(tmp_path / "no_model_here")
    assert captioner is None and "does not exist" in error and "CAPTIONER_MODEL" in error
    live, described, _, _ = app_logic.caption_view(None, red_circle(), 3, error)
    assert status_text(live) == error and described is None


def test_heatmaps_view_gives_one_figure_with_alt_text_per_word_and_a_grid_png(tiny_captioner, tmp_path):
    described = app_logic.describe(tiny_captioner, red_circle(), 3)
    scratch = app_logic.Scratch(tmp_path / "scratch")
    gallery, grid = app_logic.heatmaps_view(described, 0.6, scratch)
    texts = app_logic.alt_texts(described)
    assert len(texts) == len(TRUTH.split())
    assert [t.split(":")[0] for t in texts] == TRUTH.split()
    assert gallery.count("<figure") == len(texts)
    for index, (word, text) in enumerate(zip(TRUTH.split(), texts), start=1):
        assert f'alt="{text}"' in gallery and f"<figcaption>{index}. {word}</figcaption>" in gallery
        assert f"<li>{text}</li>" in gallery
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width > described.photo.width
    faint, _ = app_logic.heatmaps_view(described, 0.0, scratch)
    assert faint != gallery  # the opacity slider changes the pictures
    assert app_logic.heatmaps_view(None, 0.6, scratch) == ("", None)


def test_speech_view_reads_the_hedged_caption(tiny_captioner, tmp_path):
    described = app_logic.describe(tiny_captioner, red_circle(), 3)
    path, note = app_logic.speech_view(described, 250, app_logic.Scratch(tmp_path))
    assert note == "" and speech.wav_duration(path) > 1.0
    assert app_logic.speech_view(None, 250, app_logic.Scratch(tmp_path)) == (None, "")


def test_speech_failure_leaves_a_note_not_an_error(tiny_captioner, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise speech.SpeechError("No speech engine could read this aloud (espeak-ng: not installed).")

    monkeypatch.setattr(speech, "synthesize", fail)
    described = app_logic.describe(tiny_captioner, red_circle(), 3)
    path, note = app_logic.speech_view(described, 175, app_logic.Scratch(tmp_path))
    assert path is None and "Reading aloud failed" in note and "espeak-ng: not installed" in note


def test_recent_photos_are_recognised_by_content_not_by_path(tiny_captioner, tmp_path, monkeypatch):
    recent = app_logic.Recent(size=2)
    first, copy, other = (write(tmp_path, name, encoded(photo, "PNG")) for name, photo in
                          [("a.png", red_circle()), ("b.png", red_circle()),
                           ("c.png", shape_photo("white", "square", "green"))])
    described = app_logic.describe(tiny_captioner, str(first), 3, recent=recent)
    calls = []
    monkeypatch.setattr(tiny_captioner, "caption_features", lambda *a, **k: calls.append(a) or described.caption)
    assert app_logic.describe(tiny_captioner, str(copy), 3, recent=recent) is described  # same bytes: kept
    assert not calls
    app_logic.describe(tiny_captioner, str(copy), 1, recent=recent)  # another beam width: decoded
    app_logic.describe(tiny_captioner, str(other), 3, recent=recent)  # another photo: decoded
    assert len(calls) == 2
    app_logic.describe(tiny_captioner, str(first), 3, recent=recent)  # dropped: only 2 are kept
    assert len(calls) == 3
    assert app_logic.Recent.key(red_circle(), 3) is None  # only files are kept
    assert app_logic.Recent.key(str(tmp_path / "missing.png"), 3) is None


def test_describe_everything_gives_caption_heatmaps_grid_and_speech(tiny_captioner, tmp_path):
    scratch = app_logic.Scratch(tmp_path / "scratch")
    done = app_logic.describe_everything(tiny_captioner, red_circle(), 3, 0.6, 250, scratch)
    assert done.described.caption.text == TRUTH and done.speech_note == ""
    assert done.alt_texts == app_logic.alt_texts(done.described) and len(done.alt_texts) == len(TRUTH.split())
    with Image.open(done.grid) as image:  # the photo and one panel per word, 4 to a row
        assert image.format == "PNG" and image.height > 2 * done.described.photo.height * 256 // 448
    assert speech.wav_duration(done.audio) > 1.0


def test_describe_everything_still_answers_when_speech_fails(tiny_captioner, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise speech.SpeechError("No speech engine could read this aloud (espeak-ng: not installed).")

    monkeypatch.setattr(speech, "synthesize", fail)
    done = app_logic.describe_everything(tiny_captioner, red_circle(), 3, None, None, app_logic.Scratch(tmp_path))
    assert done.audio is None and "Reading aloud failed" in done.speech_note
    assert len(done.alt_texts) == len(TRUTH.split()) and done.grid.is_file()
    with pytest.raises(app_logic.ImageError):
        app_logic.describe_everything(tiny_captioner, None, 3, None, None, app_logic.Scratch(tmp_path))


def test_scratch_removes_only_stale_files(tmp_path):
    scratch = app_logic.Scratch(tmp_path, max_age=60)
    old, fresh = tmp_path / "old.png", tmp_path / "fresh.png"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(old, (0, 0))
    new = scratch.path(".wav")
    assert new.suffix == ".wav" and new.parent == tmp_path and not new.exists()
    assert not old.exists() and fresh.exists()


def test_example_photos_are_optional(tmp_path):
    assert app_logic.example_photos(tmp_path / "missing") == []
    assert app_logic.example_photos(tmp_path) == []
    (tmp_path / "LICENSES.md").write_text("CC0")
    red_circle().save(tmp_path / "red_circle.jpg")
    assert app_logic.example_photos(tmp_path) == [str(tmp_path / "red_circle.jpg")]
    assert app_logic.example_label(tmp_path / "grace_hopper.jpg") == "grace hopper"


# --- the app served on 127.0.0.1, through gradio_client ------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_app(env: dict):
    """Import app.py afresh with these environment variables (it loads its model at import)."""
    with mock.patch.dict(os.environ, env):
        spec = importlib.util.spec_from_file_location("captioner_web_app", ROOT / "app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    """app.py, imported with the tiny model from CAPTIONER_MODEL and one example photo."""
    examples = tmp_path_factory.mktemp("examples")
    red_circle().save(examples / "red_circle.png")
    return import_app({"CAPTIONER_MODEL": str(tiny_model_dir), "CAPTIONER_EXAMPLES": str(examples)})


def test_app_loads_its_model_and_examples_from_the_environment(app, tiny_model_dir):
    assert app.load_error is None and app.captioner.folder == tiny_model_dir
    config = app.demo.get_config_file()
    examples = [c for c in config["components"] if c["type"] == "dataset"]
    assert len(examples) == 1 and examples[0]["props"]["sample_labels"] == ["red circle"]


def test_the_app_builds_without_a_model_or_examples(app, tmp_path):
    demo = app.build_demo(None, "The captioning model could not be loaded: no folder.",
                          examples_folder=tmp_path / "missing", speech_status=speech.SpeechStatus(False, None, "No."))
    config = demo.get_config_file()
    assert not [c for c in config["components"] if c["type"] == "dataset"]
    texts = [str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown"]
    assert any("running without a model" in t for t in texts) and "No." in texts


@pytest.fixture(scope="module")
def served(app):
    """app.py's own demo served on 127.0.0.1."""
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, **app.launch_options())
    yield url
    app.demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served, verbose=False)


@pytest.mark.server
def test_the_api_has_exactly_the_four_named_endpoints(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/caption", "/describe", "/heatmaps", "/speak"}
    assert [p["parameter_has_default"] for p in endpoints["/caption"]["parameters"]] == [False, True]
    assert [p["parameter_has_default"] for p in endpoints["/describe"]["parameters"]] == [False, True, True, True]


@pytest.mark.server
def test_api_caption_needs_only_a_photo(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "photo.png"
    red_circle().save(photo)
    text, hedged, score, words = client.predict(handle_file(str(photo)), api_name="/caption")
    assert text == TRUTH and words == TRUTH.split()
    assert hedged.startswith(BANDS) and hedged.endswith(f"{TRUTH}.")
    assert isinstance(score, float) and score <= 0
    greedy = client.predict(handle_file(str(photo)), 1, api_name="/caption")
    assert greedy[0] == TRUTH


@pytest.mark.server
def test_api_heatmaps_returns_a_labelled_heatmap_per_word_and_the_grid(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "photo.png"
    red_circle().save(photo)
    gallery, alts, grid = client.predict(handle_file(str(photo)), api_name="/heatmaps")
    assert [a.split(":")[0] for a in alts] == TRUTH.split()
    assert [item["caption"] for item in gallery] == alts
    for item in gallery:
        with Image.open(item["image"]) as image:
            assert min(image.size) > 0
    with Image.open(grid) as image:
        assert image.format == "PNG"


@pytest.mark.server
def test_api_describe_returns_everything_in_one_call(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "photo.png"
    red_circle().save(photo)
    text, hedged, score, words, alts, grid, audio, note = client.predict(handle_file(str(photo)), api_name="/describe")
    assert text == TRUTH and words == TRUTH.split() and hedged.endswith(f"{TRUTH}.") and score <= 0
    assert [a.split(":")[0] for a in alts] == words
    with Image.open(grid) as image:
        assert image.format == "PNG"
    assert note == "" and speech.wav_duration(audio) > 1.0


@pytest.mark.server
def test_api_speak_returns_a_wav_at_the_chosen_rate(client):
    slow = speech.wav_duration(client.predict("Probably a red circle on a blue background.", 150, api_name="/speak"))
    fast = speech.wav_duration(client.predict("Probably a red circle on a blue background.", 300, api_name="/speak"))
    assert slow > 1.0 and fast == pytest.approx(slow / 2, rel=0.25)


@pytest.mark.server
@pytest.mark.parametrize("name", ["notes.jpg", "bomb.png", "corrupt.jpg"])
def test_api_explains_bad_files_and_keeps_serving(client, tmp_path, name):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    data, words = bad_inputs()[name]
    with pytest.raises(AppError, match=words):
        client.predict(handle_file(str(write(tmp_path, name, data))), api_name="/caption")
    good = tmp_path / "photo.png"
    red_circle().save(good)
    assert client.predict(handle_file(str(good)), api_name="/caption")[0] == TRUTH


@pytest.mark.server
def test_uploads_over_the_size_limit_are_refused(served, tmp_path):
    import httpx

    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with big.open("rb") as f:
        response = httpx.post(f"{served}gradio_api/upload", files={"files": ("big.jpg", f, "image/jpeg")},
                              timeout=60)
    assert response.status_code == 413
    small = httpx.post(f"{served}gradio_api/upload", files={"files": ("ok.jpg", b"x" * 1000, "image/jpeg")},
                       timeout=60)
    assert small.status_code == 200


@pytest.mark.server
def test_import_and_launch_reach_nothing_outside_this_machine(tmp_path):
    """Import app.py and serve a page in a child process that records every connection it attempts."""
    script = textwrap.dedent(f"""
        import json, os, socket, sys, urllib.request
        attempts = []
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
        LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
        def connect(self, address):
            host = address[0] if isinstance(address, tuple) else str(address)
            if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(LOCAL):
                attempts.append(str(host))
                raise OSError("network blocked by the test")
            return real_connect(self, address)
        def getaddrinfo(host, *args, **kwargs):
            if host is not None and not str(host).startswith(LOCAL):
                attempts.append(str(host))
                raise socket.gaierror("network blocked by the test")
            return real_getaddrinfo(host, *args, **kwargs)
        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
        sys.path.insert(0, {str(ROOT)!r})
        os.environ.pop("GRADIO_ANALYTICS_ENABLED", None)
        import app
        _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port={free_port()}, prevent_thread_lock=True,
                                    quiet=True, **app.launch_options())
        for path in ("", "config", "gradio_api/info", "theme.css"):
            urllib.request.urlopen(url + path, timeout=30).read()
        app.demo.close()
        print(json.dumps({{"attempts": attempts, "load_error": app.load_error}}))
    """)
    env = {**os.environ, "CAPTIONER_MODEL": str(tmp_path / "no_model"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert "could not be loaded" in report["load_error"]
