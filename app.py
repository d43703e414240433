"""The accessible web app: photo in, hedged caption out, read aloud, with a heatmap per word.

Run ``python app.py`` (GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose the
address; CAPTIONER_MODEL the model folder, default assets/model;
CAPTIONER_EXAMPLES the example photos, default assets/examples). The model is
loaded once, here; if it is missing the page says so instead of failing.
Nothing is fetched from the internet: analytics are off and the theme uses
system fonts. The logic lives in :mod:`captioner.app_logic`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from captioner import app_logic, heatmap, speech  # noqa: E402
from captioner.app_logic import ModelUnavailable  # noqa: E402
from captioner.config import ModelConfig  # noqa: E402
from captioner.image import MAX_FILE_BYTES, ImageError  # noqa: E402
from captioner.pipeline import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parent
MODEL_FOLDER = Path(os.environ.get("CAPTIONER_MODEL", DEFAULT_MODEL))
EXAMPLES_FOLDER = Path(os.environ.get("CAPTIONER_EXAMPLES", ROOT / "assets" / "examples"))

# Gradio names the upload area "Drop an image file here to upload"; the visible text must say the same.
UPLOAD_HINT = "Drop an image file here to upload"
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
THEME = gr.themes.Default(
    primary_hue="blue", neutral_hue="slate", font=SYSTEM_FONTS,
    font_mono=["ui-monospace", "SFMono-Regular", "Consolas", "monospace"],
).set(
    button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
    button_primary_text_color="white", body_text_color_subdued="*neutral_600",
)
CSS = """
.live-caption { font-size: 1.75rem; line-height: 1.35; font-weight: 600; color: #111111; background: #ffffff;
  border: 2px solid #1e3a8a; border-radius: 8px; padding: 0.75rem 1rem; min-height: 3.5rem; }
.live-caption.idle { font-weight: 400; font-size: 1.25rem; color: #1f2937; }
.live-caption.error { color: #7f1d1d; border-color: #7f1d1d; background: #fff7f7; }
:focus-visible { outline: 3px solid #1d4ed8 !important; outline-offset: 2px !important; }
.dark :focus-visible { outline-color: #93c5fd !important; }
.teacher-table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
.teacher-table caption { text-align: left; font-weight: 600; padding-bottom: 0.25rem; }
.teacher-table th, .teacher-table td { border: 1px solid #64748b; padding: 0.25rem 0.5rem; text-align: left; }
.heatmap-grid { display: flex; flex-wrap: wrap; gap: 12px; }
.heatmap { margin: 0; max-width: 224px; }
.heatmap img { max-width: 100%; height: auto; display: block; }
.heatmap figcaption { font-size: 1.1rem; padding-top: 0.25rem; }
.alt-list { margin: 0.25rem 0 0 1.5rem; }
.model-missing { border-left: 4px solid #7f1d1d; padding-left: 0.75rem; }
"""


def launch_options() -> dict:
    """Everything demo.launch() needs besides the address (Gradio 6 takes theme and CSS here)."""
    return {"theme": THEME, "css": CSS, "max_file_size": MAX_FILE_BYTES, "ssr_mode": False,
            "footer_links": ["api", "settings"]}


def _api(fn):
    """For API endpoints: a bad photo, a missing model or failed speech becomes a gr.Error message."""
    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except (ImageError, ModelUnavailable, speech.SpeechError) as exc:
            raise gr.Error(str(exc)) from exc
    return wrapper


def build_demo(captioner, load_error: str | None = None, examples_folder: Path = EXAMPLES_FOLDER,
               speech_status: speech.SpeechStatus | None = None, scratch: app_logic.Scratch | None = None):
    """The Blocks app around one loaded Captioner (or None, with ``load_error`` shown on the page)."""
    speech_status = speech_status or speech.check()
    scratch = scratch or app_logic.Scratch()
    recent = app_logic.Recent()  # photos captioned lately: /heatmaps after /caption does not decode again
    default_beam = (captioner.config if captioner else ModelConfig()).beam_size

    def on_caption(photo, beam):
        return app_logic.caption_view(captioner, photo, beam, load_error, recent)

    def on_speech(described, rate, autoplay):
        path, note = app_logic.speech_view(described, rate, scratch)
        return gr.Audio(value=path, autoplay=bool(autoplay), visible=path is not None), note

    def on_heatmaps(described, opacity):
        gallery, grid = app_logic.heatmaps_view(described, opacity, scratch)
        return gallery, gr.DownloadButton(value=grid, visible=grid is not None)

    @_api
    def api_caption(photo, beam):
        described = app_logic.describe(captioner, app_logic.photo_source(photo), beam, load_error, recent)
        return described.caption.text, described.hedged, described.caption.score, described.caption.words

    @_api
    def api_describe(photo, beam, opacity, rate):
        done = app_logic.describe_everything(captioner, app_logic.photo_source(photo), beam, opacity, rate,
                                             scratch, load_error, recent)
        caption = done.described.caption
        return (caption.text, done.described.hedged, caption.score, caption.words, done.alt_texts,
                str(done.grid), done.audio and str(done.audio), done.speech_note)

    @_api
    def api_heatmaps(photo, beam, opacity):
        described = app_logic.describe(captioner, app_logic.photo_source(photo), beam, load_error, recent)
        opacity = app_logic.clamp_opacity(opacity)
        items = app_logic.heatmap_items(described, opacity)
        return items, [text for _, text in items], str(app_logic.save_grid(described, scratch, opacity))

    @_api
    def api_speak(text, rate):
        return str(app_logic.speak(text, rate, scratch))

    with gr.Blocks(title="Photo captioner", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Describe a photo\nChoose a photo (upload, paste or webcam), then press **Caption**. "
                    "The caption appears below in large text, is announced to screen readers, and can be read "
                    "aloud. The wording says how sure the model is. It is often wrong about counts, colours "
                    "and small things, and it cannot read text.")
        if load_error:
            gr.Markdown(f"**The app is running without a model.** {load_error}", elem_classes="model-missing")
        described = gr.State(None, time_to_live=3600)  # the visitor's last caption; bounded memory
        with gr.Row():
            with gr.Column():
                photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"],
                                 image_mode=None, buttons=[], elem_id="photo", placeholder=UPLOAD_HINT,
                                 alt_text="The photo you chose")
                caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                beam = gr.Slider(app_logic.MIN_BEAM, app_logic.MAX_BEAM, value=default_beam, step=1,
                                 label="Beam width", info="How many candidate captions to weigh; 1 is greedy.")
                examples = app_logic.example_photos(examples_folder)
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[photo], label="Example photos",
                                example_labels=[app_logic.example_label(p) for p in examples])
            with gr.Column():
                gr.Markdown("## Caption")
                live = gr.HTML(app_logic.live_html(app_logic.IDLE_MESSAGE, "idle"), js_on_load=None,
                               elem_id="live-caption")
                audio = gr.Audio(label="Caption read aloud", type="filepath", interactive=False, visible=False,
                                 buttons=["download"], elem_id="caption-audio",
                                 waveform_options=gr.WaveformOptions(show_recording_waveform=False))
                speech_note = gr.Markdown("" if speech_status.available else speech_status.message)
                autoplay = gr.Checkbox(value=False, label="Play the spoken caption automatically")
                rate = gr.Slider(speech.MIN_RATE, speech.MAX_RATE, value=speech.DEFAULT_RATE, step=5,
                                 label="Speech rate (words per minute)")
                speak_button = gr.Button("Read aloud again", interactive=speech_status.available)
        gr.Markdown("## Where the model looked\nEach picture shows one word's attention over the photo: "
                    "yellow is where the model looked most, dark blue where it looked least.")
        opacity = gr.Slider(0, 1, value=heatmap.DEFAULT_OPACITY, step=0.05, label="Heatmap opacity")
        gallery = gr.HTML("", js_on_load=None, elem_id="heatmaps")
        download = gr.DownloadButton("Download all heatmaps as one image (PNG)", visible=False)
        with gr.Accordion("Teacher view: beam candidates and word probabilities", open=False):
            beams_html = gr.HTML("", js_on_load=None)
            steps_html = gr.HTML("", js_on_load=None)
        with gr.Group(visible=False):  # the API endpoints' own trigger, text input and outputs; never shown
            api_trigger = gr.Button("API")
            api_text, api_hedged = gr.Textbox(label="caption"), gr.Textbox(label="hedged caption")
            api_score, api_words = gr.Number(label="score"), gr.JSON(label="words")
            api_gallery, api_alts = gr.Gallery(label="heatmaps", format="jpeg"), gr.JSON(label="alt texts")
            api_grid = gr.File(label="heatmap grid")
            api_speak_text = gr.Textbox(label="text")
            api_audio = gr.Audio(label="speech", type="filepath")
            api_note = gr.Textbox(label="speech note")

        private = {"api_visibility": "private"}
        quiet = {**private, "show_progress": "hidden"}  # no loading overlays: the live region says what happens
        model = {"concurrency_id": "model", "concurrency_limit": 1}
        voice = {"concurrency_id": "speech", "concurrency_limit": 1}
        captioned = (caption_button.click(lambda: app_logic.live_html(app_logic.BUSY_MESSAGE, "idle"), None, live,
                                          queue=False, **quiet)
                     .then(on_caption, [photo, beam], [live, described, beams_html, steps_html],
                           preprocess=False, **quiet, **model))
        # Speech (a child process) and the heatmaps (drawing in this one) run side by side.
        captioned.then(on_speech, [described, rate, autoplay], [audio, speech_note], **quiet, **voice)
        captioned.then(on_heatmaps, [described, opacity], [gallery, download], **quiet)
        speak_button.click(lambda d, r: on_speech(d, r, True), [described, rate], [audio, speech_note],
                           **quiet, **voice)
        opacity.change(on_heatmaps, [described, opacity], [gallery, download], trigger_mode="always_last",
                       **quiet)

        api_trigger.click(api_caption, [photo, beam], [api_text, api_hedged, api_score, api_words],
                          preprocess=False, api_name="caption", **model)
        api_trigger.click(api_describe, [photo, beam, opacity, rate],
                          [api_text, api_hedged, api_score, api_words, api_alts, api_grid, api_audio, api_note],
                          preprocess=False, api_name="describe", **model)
        api_trigger.click(api_heatmaps, [photo, beam, opacity], [api_gallery, api_alts, api_grid],
                          preprocess=False, api_name="heatmaps", **model)
        api_trigger.click(api_speak, [api_speak_text, rate], api_audio, api_name="speak", **voice)
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


captioner, load_error = app_logic.load_captioner(MODEL_FOLDER)
demo = build_demo(captioner, load_error)

if __name__ == "__main__":
    demo.launch(**launch_options())
