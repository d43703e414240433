"""The web app: its handlers called directly (every bad input included) and, marked ``server``, its API
through gradio_client against the app served on 127.0.0.1, and a check that it never reaches the internet."""
from __future__ import annotations

import html
import io
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from captioner import app_logic, speech, views
from captioner.image import MAX_FILE_BYTES
from captioner.limits import clamp
from helpers import BANDS, NOT_A_PHOTO, TRUTH, bomb_png, encoded, free_port, red_circle
from synthetic import shape_photo

ROOT = Path(__file__).resolve().parent.parent


# --- photos, good and bad ------------------------------------------------------------------------

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
        "notes.jpg": (NOT_A_PHOTO, "not a photo"),
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


@pytest.fixture
def state(tiny_captioner, tmp_path):
    return app_logic.AppState(tiny_captioner, scratch=app_logic.Scratch(tmp_path / "scratch"))


# --- handlers, called directly ---------------------------------------------------------------

def test_caption_view_fills_the_live_region_the_teacher_view_and_the_state(state, tmp_path):
    live, described, teacher = state.caption_view(payload(
        write(tmp_path, "photo.jpg", encoded(red_circle(), "JPEG", quality=95))), 3)
    assert 'class="live-caption caption"' in live
    text = status_text(live)
    assert text.startswith(BANDS) and text.endswith(f"{TRUTH}.")
    assert described.caption.text == TRUTH and described.hedged == text
    assert max(described.photo.size) <= app_logic.DISPLAY_SIDE
    beams, steps = teacher.split("</table>")[:2]
    assert beams.count("<tr><td>") == 1 + len(described.caption.alternatives) == 3
    assert f"<td>{TRUTH}</td>" in beams
    assert steps.count("<tr><td>") == len(TRUTH.split()) + 1  # every word, then the end
    assert "<td>(end of caption)</td>" in steps


def test_compare_view_puts_each_design_in_a_row(tiny_captioner, tmp_path):
    state = app_logic.AppState(tiny_captioner, scratch=app_logic.Scratch(tmp_path), designs={"merge": tiny_captioner})
    view = state.compare_view(payload(write(tmp_path, "p.png", encoded(red_circle(), "PNG"))), 3)
    rows = view.split("<tbody>")[1].split("</tbody>")[0].split("</tr>")[:-1]
    assert [r.split('<th scope="row">')[1].split("<")[0] for r in rows] == ["attention", "merge"]
    bleu4 = f"{100 * tiny_captioner.metrics['test']['3']['bleu4']:.1f}"
    assert all(f"{TRUTH}.</td><td>{bleu4}</td>" in r and r.endswith(" ms</td>") for r in rows)
    assert "Merge: an LSTM reads the words so far" in view
    assert "cannot be described" not in view
    assert "not a photo" in state.compare_view(payload(write(tmp_path, "x.jpg", b"hello")), 3)
    assert "no captioning model" in app_logic.AppState(None).compare_view(None, 3).lower()


def test_seed_designs_load_by_their_design_and_a_broken_one_is_left_out(tiny_model_dir, tmp_path):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "seeds" / "one")
    (tmp_path / "seeds" / "broken").mkdir()
    designs = app_logic.load_designs(tmp_path / "seeds")
    assert list(designs) == ["attention"] and designs["attention"].folder == tmp_path / "seeds" / "one"
    assert app_logic.load_designs(tmp_path / "nowhere") == {}


def test_the_step_through_shows_what_beam_search_chose_at_each_step(state, tmp_path):
    from captioner.teaching import step_through

    _, described, _ = state.caption_view(payload(write(tmp_path, "p.jpg", encoded(red_circle(), "JPEG"))), 3)
    caption = described.caption
    words = caption.words + ["<end>"]
    steps = step_through(caption)
    assert [s.word for s in steps] == words and len(steps) == len(caption.steps)
    for k, step in enumerate(steps, start=1):
        view = state.step_view(described, k)
        summary = html.unescape(view.split("</p>")[0])
        assert 'role="status"' in summary
        so_far = " ".join(caption.words[:k - 1]) or "nothing yet"
        shown = "(end of caption)" if step.word == "<end>" else step.word
        assert f"Step {k} of {len(steps)}. Caption so far: {so_far}. Chosen word: {shown}" in summary
        assert step.top == caption.steps[k - 1]  # the five words beam search recorded at that step
        assert html.unescape(view).count("(chosen)") == 1
        assert ("<img " in view) == (step.word != "<end>")  # a heatmap for every word, none for the end
        if step.word != "<end>":
            assert f'alt="Where the model looked for {step.word}: looked hardest at' in html.unescape(view)
            assert step.gate is not None and f"Gate beta {step.gate:.2f}" in summary
    assert state.step_view(described, 999) == state.step_view(described, len(steps))  # clamped
    assert state.step_view(described, "two") == state.step_view(described, 1)
    assert state.step_view(None, 1) == ""


@pytest.mark.parametrize("beam", [1, 3, 10, 0, 99, None, "4", 2.6, "wide"])
def test_any_beam_width_is_clamped_and_captions(state, beam):
    described = state.describe(red_circle(), beam)
    assert described.caption.text == TRUTH
    default = state.captioner.config.beam_size
    expected = {None: default, 0: 1, 99: 10, "4": 4, 2.6: 3, "wide": default}.get(beam, beam)
    assert 1 + len(described.caption.alternatives) == expected  # one finished caption per beam


@pytest.mark.parametrize("value, low, high, default, kind, expected", [
    (None, 1, 10, 3, int, 3), ("", 1, 10, 3, int, 3), ("x", 1, 10, 3, int, 3), (float("nan"), 0, 1, 0.6, float, 0.6),
    (0, 1, 10, 3, int, 1), (11, 1, 10, 3, int, 10), ("4.6", 1, 10, 3, int, 5), (1.5, 0.0, 1.0, 0.6, float, 1.0),
    (-2, 0.0, 1.0, 0.6, float, 0.0), ("0.25", 0.0, 1.0, 0.6, float, 0.25), (212.6, 80, 400, 175, int, 213),
])
def test_one_clamp_for_every_number(value, low, high, default, kind, expected):
    result = clamp(value, low, high, default, kind)
    assert result == expected and type(result) is kind


@pytest.mark.parametrize("name", sorted(variants()))
def test_unusual_but_valid_photos_are_captioned(state, tmp_path, name):
    live, described, _ = state.caption_view(payload(write(tmp_path, name, variants()[name])), 3)
    assert 'class="live-caption caption"' in live, status_text(live)
    assert described is not None and status_text(live).startswith(BANDS)
    if name != "sixteen_bit.png":  # grey: the colours are gone, so the words may differ
        assert described.caption.text == TRUTH


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_bad_files_get_a_clear_message_in_the_live_region(state, tmp_path, name):
    data, words = bad_inputs()[name]
    live, described, teacher = state.caption_view(payload(write(tmp_path, name, data)), 3)
    assert 'class="live-caption error"' in live
    assert words in status_text(live)
    assert "Traceback" not in live and described is None and "<table" not in teacher


@pytest.mark.parametrize("name", sorted(bad_inputs()))
def test_a_bad_file_is_reported_as_soon_as_it_is_chosen(state, tmp_path, name):
    data, words = bad_inputs()[name]
    live, ok = state.chosen_view(payload(write(tmp_path, name, data)))
    assert not ok and 'class="live-caption error"' in live
    assert status_text(live).startswith(f"{name} cannot be described: ") and words in status_text(live)
    assert status_text(live).endswith("Choose another photo.")


def test_choosing_a_photo_announces_its_name_and_upright_size(state, tmp_path):
    live, ok = state.chosen_view(payload(write(tmp_path, "wide.png", encoded(Image.new("RGB", (640, 480)), "PNG"))))
    assert ok and status_text(live) == "Photo chosen: wide.png, 640 by 480 pixels. Press Caption to describe it."
    turned = Image.new("RGB", (640, 480))
    exif = turned.getexif()
    exif[0x0112] = 6  # shown turned a quarter: 480 wide, 640 high
    live, ok = state.chosen_view(payload(write(tmp_path, "upright.jpg", encoded(turned, "JPEG", exif=exif))))
    assert ok and "upright.jpg, 480 by 640 pixels" in status_text(live)
    example = write(tmp_path, "red_circle.png", encoded(red_circle(), "PNG"))
    assert "Photo chosen: red_circle.png, " in status_text(state.chosen_view(str(example))[0])  # an example: a path
    live, ok = state.chosen_view(None)
    assert not ok and status_text(live) == app_logic.REMOVED_MESSAGE


@pytest.mark.parametrize("empty", [None, {"path": None}])
def test_an_empty_submit_asks_for_a_photo(state, empty):
    live, described, _ = state.caption_view(empty, 3)
    assert "No photo was given" in status_text(live) and described is None


def test_an_unexpected_failure_is_reported_without_a_traceback(state, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("TensorFlow fell over")

    monkeypatch.setattr(state.captioner, "describe_read", broken)
    live, described, _ = state.caption_view(red_circle(), 3)
    assert status_text(live) == "Sorry, something went wrong while describing this photo. Please try again."
    assert described is None and "TensorFlow fell over" in caplog.text


def test_the_live_region_escapes_html():
    live = views.live_html('<img src=x onerror="alert(1)"> & more')
    assert "<img" not in live and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; more" in live
    with pytest.raises(ValueError):
        views.live_html("x", "shout")


def test_tables_escape_the_words(state):
    described = state.describe(red_circle(), 3)
    described.caption.words[0] = "<b>"
    described.caption.steps[0][0] = ("<script>", 0.5)
    assert "<b>" not in views.beams_table(described.caption)
    assert "<script>" not in views.steps_table(described.caption)
    assert "&lt;script&gt; 50.0%" in views.steps_table(described.caption)
    assert "<table" not in views.teacher_html(None)


def test_without_a_model_the_app_explains_what_to_do(tmp_path):
    captioner, error = app_logic.load_captioner(tmp_path / "no_model_here")
    assert captioner is None and "does not exist" in error and "CAPTIONER_MODEL" in error
    live, described, _ = app_logic.AppState(None, error).caption_view(red_circle(), 3)
    assert status_text(live) == error and described is None


def test_heatmaps_say_each_words_place_once_and_come_as_a_grid_jpeg(state):
    described = state.describe(red_circle(), 3)
    gallery, grid = state.heatmaps_view(described, 0.6)
    texts = app_logic.alt_texts(described)
    assert len(texts) == len(TRUTH.split())
    assert [t.split(":")[0] for t in texts] == TRUTH.split()
    assert gallery.count("<li") == gallery.count("<img") == len(texts) and "<figure" not in gallery
    assert gallery.count('alt=""') == len(texts)  # the pictures are decorative: the text says it all
    for text in texts:
        # once per word ("a" comes twice), not as a label, an alt text and a list item again
        assert gallery.count(f">{html.escape(text)}<") == texts.count(text)
    with Image.open(grid) as image:
        assert image.format == "JPEG" and image.width > described.photo.width
    faint, _ = state.heatmaps_view(described, 0.0)
    assert faint != gallery  # the opacity changes the pictures
    assert state.heatmaps_view(None, 0.6) == ("", None)


def test_the_spoken_caption_is_a_named_player_with_one_download(state, tmp_path):
    described = state.describe(red_circle(), 3)
    path, note = state.speech_view(described, 250)
    assert note == "" and speech.wav_duration(path) > 1.0
    player = views.audio_html(path, autoplay=True)
    assert player.count("<audio") == 1 and 'aria-label="Spoken caption"' in player and " autoplay" in player
    assert player.count("<a ") == 1 and "<button" not in player and "Download the spoken caption (WAV)" in player
    assert " autoplay" not in views.audio_html(path) and views.audio_html(None) == ""
    assert state.speech_view(None, 250) == (None, "")


def test_speech_failure_leaves_a_note_not_an_error(state, monkeypatch):
    def fail(*args, **kwargs):
        raise speech.SpeechError("No speech engine could read this aloud (espeak-ng: not installed).")

    monkeypatch.setattr(speech, "synthesize", fail)
    described = state.describe(red_circle(), 3)
    path, note = state.speech_view(described, 175)
    assert path is None and "Reading aloud failed" in note and "espeak-ng: not installed" in note


def test_recent_photos_are_recognised_by_content_not_by_path(tiny_captioner, tmp_path, monkeypatch):
    state = app_logic.AppState(tiny_captioner, recent=app_logic.Recent(size=2), scratch=app_logic.Scratch(tmp_path))
    first, copy, other = (write(tmp_path, name, encoded(photo, "PNG")) for name, photo in
                          [("a.png", red_circle()), ("b.png", red_circle()),
                           ("c.png", shape_photo("white", "square", "green"))])
    described = state.describe(str(first), 3)
    calls, model = [], tiny_captioner.describe_read
    monkeypatch.setattr(tiny_captioner, "describe_read", lambda *a, **k: calls.append(a) or model(*a, **k))
    assert state.describe(str(copy), 3) is described  # same bytes: kept
    assert not calls
    state.describe(str(copy), 1)  # another beam width: decoded
    state.describe(str(other), 3)  # another photo: decoded
    assert len(calls) == 2
    state.describe(str(first), 3)  # dropped: only 2 are kept
    assert len(calls) == 3
    assert app_logic.Recent.key(red_circle(), 3) is None  # only files are kept
    assert app_logic.Recent.key(str(tmp_path / "missing.png"), 3) is None


def test_describe_everything_gives_caption_heatmaps_grid_and_speech(state):
    done = state.describe_everything(red_circle(), 3, 0.6, 250)
    assert done.described.caption.text == TRUTH and done.speech_note == ""
    assert done.alt_texts == app_logic.alt_texts(done.described) and len(done.alt_texts) == len(TRUTH.split())
    with Image.open(done.grid) as image:  # the photo and one panel per word, 4 to a row
        assert image.format == "JPEG" and image.height > 2 * done.described.photo.height * 256 // 448
    assert speech.wav_duration(done.audio) > 1.0


def test_describe_everything_still_answers_when_speech_fails(state, monkeypatch):
    def fail(*args, **kwargs):
        raise speech.SpeechError("No speech engine could read this aloud (espeak-ng: not installed).")

    monkeypatch.setattr(speech, "synthesize", fail)
    done = state.describe_everything(red_circle(), 3, None, None)
    assert done.audio is None and "Reading aloud failed" in done.speech_note
    assert len(done.alt_texts) == len(TRUTH.split()) and done.grid.is_file()
    with pytest.raises(app_logic.ImageError):
        state.describe_everything(None, 3, None, None)


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


# --- app.py: a factory, nothing heavy at import -------------------------------------------------------

def load_app_module():
    """app.py imported afresh (under another name, so that each test gets its own copy)."""
    spec = importlib.util.spec_from_file_location("captioner_web_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_app_loads_no_model_checks_no_speech_and_starts_nothing():
    with mock.patch("captioner.pipeline.Captioner.load", side_effect=AssertionError("model loaded")) as load, \
            mock.patch.object(speech, "check", side_effect=AssertionError("speech checked")) as check, \
            mock.patch("subprocess.Popen", side_effect=AssertionError("process started")) as popen:
        module = load_app_module()
    assert not load.called and not check.called and not popen.called
    assert callable(module.create_demo) and not hasattr(module, "demo")


def test_main_loads_the_model_and_examples_named_by_the_environment(tiny_model_dir, tmp_path):
    module = load_app_module()
    red_circle().save(tmp_path / "red_circle.png")
    built = {}
    real_create = module.create_demo

    def create_demo(*args, **kwargs):
        built["demo"] = real_create(*args, **kwargs)
        return built["demo"]

    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "seeds" / "merge")
    env = {"CAPTIONER_MODEL": str(tiny_model_dir), "CAPTIONER_EXAMPLES": str(tmp_path),
           "CAPTIONER_SEEDS": str(tmp_path / "seeds")}
    with mock.patch.dict(os.environ, env), mock.patch.object(module, "create_demo", create_demo), \
            mock.patch.object(speech, "check", return_value=speech.SpeechStatus(True, "pyttsx3", "ok")), \
            mock.patch("gradio.Blocks.launch") as launch:
        module.main()
    state = built["demo"].app_state
    assert state.load_error is None and state.captioner.folder == tiny_model_dir
    assert state.examples == [str(tmp_path / "red_circle.png")] and state.speech_status.engine == "pyttsx3"
    assert launch.call_args.kwargs["max_file_size"] == MAX_FILE_BYTES
    assert [c.folder for c in state.designs.values()] == [tmp_path / "seeds" / "merge"]  # CAPTIONER_SEEDS
    examples = [c for c in built["demo"].get_config_file()["components"] if c["type"] == "dataset"]
    assert len(examples) == 1 and examples[0]["props"]["sample_labels"] == ["red circle"]


@pytest.fixture(scope="module")
def app():
    return load_app_module()


def test_the_app_builds_without_a_model_or_examples(app):
    demo = app.create_demo(None, [], load_error="The captioning model could not be loaded: no folder.",
                           speech_status=speech.SpeechStatus(False, None, "No."))
    config = demo.get_config_file()
    assert not [c for c in config["components"] if c["type"] == "dataset"]
    texts = [str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown"]
    assert any("running without a model" in t for t in texts) and "No." in texts


def test_every_numeric_setting_is_one_number_box_and_read_aloud_starts_disabled(app, tiny_captioner):
    config = app.create_demo(tiny_captioner, []).get_config_file()
    by_id = {c["props"].get("elem_id"): c for c in config["components"]}
    # The one slider is the teacher view's decoding step, and it comes with its number box (Gradio's own)
    sliders = [c for c in config["components"] if c["type"] == "slider"]
    assert [c["props"]["elem_id"] for c in sliders] == ["step-slider"]
    assert sliders[0]["props"]["interactive"] is False and sliders[0]["props"]["step"] == 1
    for elem_id in ("beam-width", "speech-rate", "heatmap-opacity"):
        assert by_id[elem_id]["type"] == "number" and by_id[elem_id]["props"]["info"]
    assert by_id["beam-width"]["props"]["value"] == tiny_captioner.config.beam_size
    assert by_id["speak-button"]["props"]["interactive"] is False
    headings = [c["props"]["value"].split("\n")[0] for c in config["components"]
                if c["type"] == "markdown" and str(c["props"].get("value", "")).startswith("#")]
    assert headings == ["# Describe a photo", "## Photo", "## Caption", "## Settings", "## Where the model looked",
                        "## Teacher view", "### Step through the decoding"]


# --- the app served on 127.0.0.1, through gradio_client ------------------------------------------------

@pytest.fixture(scope="module")
def served(app, tiny_captioner):
    """The app (create_demo around the tiny model) served on 127.0.0.1."""
    demo = app.create_demo(tiny_captioner, [], designs={"inject": tiny_captioner})
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, **app.launch_options())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served, verbose=False, ssl_verify=False)  # plain HTTP on loopback: no certificates to load


@pytest.mark.server
def test_the_api_has_exactly_the_five_named_endpoints_described_and_typed(client, tiny_captioner):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/caption", "/describe", "/heatmaps", "/compare", "/speak"}
    assert [p["parameter_has_default"] for p in endpoints["/caption"]["parameters"]] == [False, True]
    assert [p["parameter_has_default"] for p in endpoints["/describe"]["parameters"]] == [False, True, True, True]
    for name, endpoint in endpoints.items():
        assert len(endpoint["description"]) > 40, name
        labels = [r["label"] for r in endpoint["returns"]]
        assert len(set(labels)) == len(labels) and not any(label[0].isdigit() for label in labels), labels
    beam = endpoints["/caption"]["parameters"][1]
    assert beam["parameter_name"] == "beam_width" and beam["python_type"]["type"] == "int"
    assert beam["parameter_default"] == tiny_captioner.config.beam_size
    returns = {r["label"]: r["python_type"]["type"] for r in endpoints["/describe"]["returns"]}
    assert returns["words"] == returns["alt texts"] == "list[str]" and returns["score"] == "float"
    assert returns["heatmap grid (JPEG)"] == "filepath" and returns["spoken caption (WAV)"] == "None | filepath"
    assert endpoints["/speak"]["parameters"][1]["python_type"]["type"] == "int"


@pytest.mark.server
def test_api_compare_gives_each_design_its_caption_time_and_scores(client, tmp_path, tiny_captioner):
    from gradio_client import handle_file

    photo = tmp_path / "photo.png"
    red_circle().save(photo)
    rows = client.predict(handle_file(str(photo)), api_name="/compare")
    assert [r["design"] for r in rows] == ["attention", "inject"]  # the main model first, then the seeds
    for row in rows:  # (here "inject" is the tiny model again, under that name)
        assert row["caption"] == TRUTH and row["hedged"].endswith(f"{TRUTH}.") and row["seconds"] > 0
        assert row["test_bleu4"] == tiny_captioner.metrics["test"]["3"]["bleu4"]


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
        assert image.format == "JPEG"


@pytest.mark.server
def test_api_describe_returns_everything_in_one_call(client, tmp_path):
    from gradio_client import handle_file

    photo = tmp_path / "photo.png"
    red_circle().save(photo)
    text, hedged, score, words, alts, grid, audio, note = client.predict(handle_file(str(photo)), api_name="/describe")
    assert text == TRUTH and words == TRUTH.split() and hedged.endswith(f"{TRUTH}.") and score <= 0
    assert [a.split(":")[0] for a in alts] == words
    with Image.open(grid) as image:
        assert image.format == "JPEG"
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
    """Run app.py's main() (as `python app.py` does) in a child process that records every connection
    it attempts, and fetch its pages."""
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
        os.environ.pop("GRADIO_ANALYTICS_ENABLED", None)
        import gradio as gr
        import app
        served = {{}}
        real_launch = gr.Blocks.launch
        def launch(self, **options):  # as `python app.py` launches, but on a free port and returning
            served["demo"] = self
            served["url"] = real_launch(self, server_name="127.0.0.1", server_port={free_port()},
                                        prevent_thread_lock=True, quiet=True, **options)[1]
        gr.Blocks.launch = launch
        app.main()
        for path in ("", "config", "gradio_api/info", "theme.css"):
            urllib.request.urlopen(served["url"] + path, timeout=30).read()
        served["demo"].close()
        print(json.dumps({{"attempts": attempts, "load_error": served["demo"].app_state.load_error}}))
    """)
    env = {**os.environ, "CAPTIONER_MODEL": str(tmp_path / "no_model"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert "could not be loaded" in report["load_error"]
