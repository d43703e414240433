"""The accessible web app: photo in, hedged caption out, read aloud, with a heatmap per word.

``python app.py`` loads the model folder (CAPTIONER_MODEL, default the bundled model), the example
photos (CAPTIONER_EXAMPLES), checks speech and serves the page (GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT choose the address). Importing this file does none of that: :func:`create_demo`
builds the page around a captioner it is given. Nothing is fetched from the internet: analytics are
off and the theme uses system fonts. The logic lives in :mod:`captioner.app_logic`, the HTML in
:mod:`captioner.views`.

(No ``from __future__ import annotations`` here: gr.api reads the API functions' type hints as types.)
"""
import functools
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio.data_classes import FileData  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

from captioner import app_logic, heatmap, speech, views  # noqa: E402
from captioner.app_logic import AppState, ModelUnavailable  # noqa: E402
from captioner.batching import MAX_BATCH  # noqa: E402
from captioner.image import MAX_FILE_BYTES, ImageError  # noqa: E402

# Gradio names the upload area "Drop an image file here to upload"; the visible text must say the same.
UPLOAD_HINT = "Drop an image file here to upload"
SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
# Every text size in rem, none under 1rem (16 px by default), so that all text follows the browser's font size.
TEXT_SIZES = gr.themes.Size(xxs="1rem", xs="1rem", sm="1rem", md="1rem", lg="1.125rem", xl="1.375rem",
                            xxl="1.75rem")
THEME = gr.themes.Default(
    primary_hue="blue", neutral_hue="slate", font=SYSTEM_FONTS, text_size=TEXT_SIZES,
    font_mono=["ui-monospace", "SFMono-Regular", "Consolas", "monospace"],
).set(
    button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
    button_primary_text_color="white", body_text_color_subdued="*neutral_600",
    body_text_color_subdued_dark="*neutral_300",
)
CSS = """
.live-caption { font-size: 1.75rem; line-height: 1.35; font-weight: 600; color: #111111; background: #ffffff;
  border: 2px solid #1e3a8a; border-radius: 8px; padding: 0.75rem 1rem; min-height: 3.5rem; }
.live-caption.idle { font-weight: 400; font-size: 1.25rem; color: #1f2937; }
.live-caption.error { color: #7f1d1d; border-color: #7f1d1d; background: #fff7f7; }
.dark .live-caption { color: #f8fafc; background: #0f172a; border-color: #93c5fd; }
.dark .live-caption.idle { color: #e2e8f0; }
.dark .live-caption.error { color: #fecaca; border-color: #fca5a5; background: #2b1111; }
:focus-visible { outline: 3px solid #1d4ed8 !important; outline-offset: 2px !important; }
.dark :focus-visible { outline-color: #93c5fd !important; }
.teacher-table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 1rem; }
.teacher-table caption { text-align: left; font-weight: 600; padding-bottom: 0.25rem; }
.teacher-table th, .teacher-table td { border: 1px solid #64748b; padding: 0.25rem 0.5rem; text-align: left; }
.heatmap-grid { display: flex; flex-wrap: wrap; gap: 0.75rem; list-style: none; padding: 0; margin: 0; }
.heatmap { margin: 0; max-width: 14rem; }
.heatmap img { max-width: 100%; height: auto; display: block; }
.heatmap-text { display: block; font-size: 1rem; padding-top: 0.25rem; }
#caption-audio audio { width: 100%; max-width: 28rem; }
.model-missing { border-left: 4px solid #7f1d1d; padding-left: 0.75rem; }
"""
# Run once on page load; keeps fixing what Gradio's own components do not say to a screen reader
# (a MutationObserver, since Gradio re-renders): the teacher toggle's state and name, and each
# setting's hint as the description of its one control.
JS = """
() => {
  const fix = () => {
    const toggle = document.querySelector('#teacher-view > button, #teacher-view button.label-wrap');
    const content = document.querySelector('#teacher-view [data-testid="accordion-content"]');
    if (toggle && content) {
      content.id = 'teacher-view-content';
      toggle.setAttribute('aria-controls', content.id);
      const open = getComputedStyle(content).display !== 'none';
      if (toggle.getAttribute('aria-expanded') !== String(open)) toggle.setAttribute('aria-expanded', String(open));
      toggle.querySelectorAll('.icon').forEach(icon => icon.setAttribute('aria-hidden', 'true'));
    }
    document.querySelectorAll('.setting').forEach(block => {
      const info = block.querySelector('.info-text');
      const input = block.querySelector('input');
      if (!info || !input) return;
      info.id = block.id + '-hint';
      input.setAttribute('aria-describedby', info.id);
      info.setAttribute('aria-hidden', 'true');  // read once, as the control's description
      const label = block.querySelector('[data-testid="block-info"]');
      if (label && input.getAttribute('aria-label')) label.setAttribute('aria-hidden', 'true');
    });
    // Decorative icons in block labels ("Photo", "Example photos") are not announced as images.
    document.querySelectorAll('[data-testid="block-label"] svg, .label svg')
      .forEach(icon => icon.setAttribute('aria-hidden', 'true'));
  };
  fix();
  new MutationObserver(fix).observe(document.body, {childList: true, subtree: true, attributes: true,
                                                    attributeFilter: ['style']});
}
"""
# After a photo is chosen: focus the Caption button (or, if the file was refused, the photo input).
FOCUS_AFTER_CHOICE = """
() => { setTimeout(() => {
  const refused = document.querySelector('#live-caption .live-caption.error');
  const target = refused ? document.querySelector('#photo button') : document.getElementById('caption-button');
  if (target) target.focus();
}, 0); }
"""
# When the caption arrives: bring it into view, without moving focus (a screen reader announces it).
SHOW_CAPTION = ("() => { const c = document.getElementById('live-caption');"
                " if (c) c.scrollIntoView({block: 'nearest'}); }")


def launch_options() -> dict:
    """Everything demo.launch() needs besides the address (Gradio 6 takes theme, CSS and JS here)."""
    return {"theme": THEME, "css": CSS, "js": JS, "max_file_size": MAX_FILE_BYTES, "ssr_mode": False,
            "footer_links": ["api", "settings"]}


class CompareRow(TypedDict):
    design: str  # "attention", "inject" or "merge"
    caption: str
    hedged: str  # what a listener hears
    seconds: float  # this photo, read, encoded and decoded
    test_bleu4: float | None  # Flickr8k test, 0-1, at the model's beam width (None if not recorded)
    test_cider: float | None


class HeatmapItem(TypedDict):
    image: FileData  # one word's heatmap over the photo (JPEG)
    caption: str  # where the model looked for that word, in words


def _errors_as_messages(fn):
    """For API endpoints: a bad photo, a missing model or failed speech becomes a gr.Error message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ImageError, ModelUnavailable, speech.SpeechError) as exc:
            raise gr.Error(str(exc)) from exc
    return wrapper


def _api(demo: gr.Blocks, fn, name: str, description: str, inputs: list[str], outputs: list[str], **queue):
    """Declare ``fn`` as the API endpoint /name (gr.api: typed by its hints), naming its inputs and outputs."""
    dependency = gr.api(_errors_as_messages(fn), api_name=name, api_description=description, **queue)
    for ids, names in ((dependency["inputs"], inputs), (dependency["outputs"], outputs)):
        if len(ids) != len(names):
            raise ValueError(f"/{name}: {len(ids)} values but {len(names)} names")
        for block_id, label in zip(ids, names):
            demo.blocks[block_id].label = label


def create_demo(captioner, examples=(), *, load_error: str | None = None,
                speech_status: speech.SpeechStatus | None = None,
                scratch: app_logic.Scratch | None = None, designs: dict | None = None) -> gr.Blocks:
    """The Blocks app around one loaded Captioner (or None, with ``load_error`` shown on the page).

    ``examples`` are photo paths; ``speech_status`` None means speech was not checked (it is offered).
    ``designs`` (name -> Captioner) are the seed designs the teacher view compares with it.
    The app's state is ``demo.app_state``.
    """
    state = AppState(captioner, load_error, list(examples), speech_status, scratch=scratch or app_logic.Scratch(),
                     designs=dict(designs or {}))
    default_beam = state.default_beam

    # --- the page's handlers ------------------------------------------------------------------
    def cleared(live: str):
        """Everything a new photo makes stale, emptied; ``live`` is the new live-region HTML."""
        return live, None, "", gr.DownloadButton(value=None, visible=False), views.teacher_html(None), "", \
            gr.Slider(value=1, maximum=2, interactive=False), "", gr.Button(interactive=False)

    def on_chosen(payload):
        live, ok = state.chosen_view(payload)
        outputs = cleared(live)
        return (*outputs, gr.Image() if ok or payload is None else gr.Image(value=None))

    def on_busy():
        return cleared(views.live_html(app_logic.BUSY_MESSAGE, "idle"))[:-1]

    def on_caption(payload, beam, opacity_percent):
        live, described, teacher = state.caption_view(payload, beam)
        ready = described is not None and state.speech_available
        steps = len(described.caption.steps) if described is not None else 0
        # A one-step caption still gets a two-step slider (Gradio wants maximum > minimum); the view clamps.
        slider = gr.Slider(value=1, maximum=max(2, steps), interactive=steps > 1)
        return live, described, teacher, slider, on_step(described, 1, opacity_percent), gr.Button(interactive=ready)

    def on_step(described, step, opacity_percent):
        opacity = None if opacity_percent is None else float(opacity_percent) / 100
        return state.step_view(described, step, opacity)

    def on_speech(described, rate, autoplay):
        path, note = state.speech_view(described, rate)
        return views.audio_html(path, bool(autoplay)), note or _speech_message(state)

    def on_heatmaps(described, opacity_percent):
        opacity = None if opacity_percent is None else float(opacity_percent) / 100
        gallery, grid = state.heatmaps_view(described, opacity)
        return gallery, gr.DownloadButton(value=grid, visible=grid is not None)

    # --- the API endpoints (no visible UI; declared with gr.api, typed by these hints) --------------
    def caption(photo: FileData, beam_width: int = default_beam) -> tuple[str, str, float, list[str]]:
        described = state.describe(app_logic.photo_source(photo), beam_width)
        return described.caption.text, described.hedged, described.caption.score, described.caption.words

    def describe(photo: FileData, beam_width: int = default_beam, opacity: float = heatmap.DEFAULT_OPACITY,
                 rate: int = speech.DEFAULT_RATE) -> tuple[str, str, float, list[str], list[str], FileData,
                                                           FileData | None, str]:
        done = state.describe_everything(app_logic.photo_source(photo), beam_width, opacity, rate)
        caption = done.described.caption
        return (caption.text, done.described.hedged, caption.score, caption.words, done.alt_texts,
                FileData(path=str(done.grid)), done.audio and FileData(path=str(done.audio)), done.speech_note)

    def heatmaps(photo: FileData, beam_width: int = default_beam,
                 opacity: float = heatmap.DEFAULT_OPACITY) -> tuple[list[HeatmapItem], list[str], FileData]:
        described = state.describe(app_logic.photo_source(photo), beam_width)
        items = app_logic.heatmap_items(described, app_logic.clamp_opacity(opacity))
        gallery = []
        for image, text in items:
            path = state.scratch.path(".jpg")
            image.save(path, quality=90)
            # A FileData nested in a dict must itself be a dict for Gradio to serve the file.
            gallery.append(HeatmapItem(image=FileData(path=str(path)).model_dump(), caption=text))
        return gallery, [text for _, text in items], FileData(path=str(state.save_grid(described, opacity)))

    def compare(photo: FileData, beam_width: int = default_beam) -> list[CompareRow]:
        return [CompareRow(design=c.name, caption=c.description.text, hedged=c.description.hedged,
                           seconds=round(c.seconds, 4), test_bleu4=c.test_scores.get("bleu4"),
                           test_cider=c.test_scores.get("cider"))
                for c in state.compare(app_logic.photo_source(photo), beam_width)]

    def speak(text: str, rate: int = speech.DEFAULT_RATE) -> FileData:
        return FileData(path=str(state.speak(text, rate)))

    with gr.Blocks(title="Photo captioner", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Describe a photo\nChoose a photo (upload, paste or webcam), then press **Caption**. "
                    "The caption is announced to screen readers, shown in large text and can be read aloud. "
                    "The wording says how sure the model is. It is often wrong about counts, colours and small "
                    "things, and it cannot read text.")
        if load_error:
            gr.Markdown(f"**The app is running without a model.** {load_error}", elem_classes="model-missing")
        described = gr.State(None, time_to_live=3600)  # the visitor's last caption; bounded memory
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("## Photo")
                photo = gr.Image(label="Photo", type="filepath", sources=["upload", "webcam", "clipboard"],
                                 image_mode=None, buttons=[], elem_id="photo", placeholder=UPLOAD_HINT,
                                 alt_text="The photo you chose", height="20rem")
                example_list = None
                if state.examples:
                    example_list = gr.Examples(examples=[[p] for p in state.examples], inputs=[photo],
                                               label="Example photos", cache_examples=False,
                                               example_labels=[app_logic.example_label(p) for p in state.examples])
            with gr.Column():
                gr.Markdown("## Caption")
                caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                live = gr.HTML(views.live_html(app_logic.IDLE_MESSAGE, "idle"), js_on_load=None,
                               elem_id="live-caption")
                speak_button = gr.Button("Read aloud again", interactive=False, elem_id="speak-button")
                audio = gr.HTML("", js_on_load=None, elem_id="caption-audio")
                speech_note = gr.Markdown(_speech_message(state), elem_id="speech-note")
        gr.Markdown("## Settings")
        with gr.Row():
            beam = gr.Number(default_beam, minimum=app_logic.MIN_BEAM, maximum=app_logic.MAX_BEAM, step=1,
                             precision=0, label="Beam width", elem_id="beam-width", elem_classes="setting",
                             info=f"How many candidate captions to weigh, {app_logic.MIN_BEAM} to "
                                  f"{app_logic.MAX_BEAM}; 1 is greedy. Used when you press Caption.")
            rate = gr.Number(speech.DEFAULT_RATE, minimum=speech.MIN_RATE, maximum=speech.MAX_RATE, step=5,
                             precision=0, label="Speech rate (words per minute)", elem_id="speech-rate",
                             elem_classes="setting",
                             info=f"{speech.MIN_RATE} to {speech.MAX_RATE}; {speech.DEFAULT_RATE} is usual speech.")
            opacity = gr.Number(round(100 * heatmap.DEFAULT_OPACITY), minimum=0, maximum=100, step=5, precision=0,
                                label="Heatmap opacity (percent)", elem_id="heatmap-opacity", elem_classes="setting",
                                info="0 shows only the photo, 100 only the heatmap.")
            autoplay = gr.Checkbox(value=False, label="Play the spoken caption automatically", elem_id="autoplay",
                                   elem_classes="setting",
                                   info="Off at first, so that it does not talk over a screen reader.")
        gr.Markdown("## Where the model looked\nEach picture shows one word's attention over the photo: "
                    "yellow is where the model looked most, dark blue where it looked least.")
        gallery = gr.HTML("", js_on_load=None, elem_id="heatmaps")
        download = gr.DownloadButton("Download all heatmaps as one image (JPEG)", visible=False,
                                     elem_id="heatmaps-download")
        gr.Markdown("## Teacher view")
        with gr.Accordion("Beam candidates and word probabilities", open=False, elem_id="teacher-view"):
            teacher = gr.HTML(views.teacher_html(None), js_on_load=None, elem_id="teacher-tables")
            gr.Markdown("### Step through the decoding\nWhat the model had said so far, where it looked and "
                        "which words it weighed, one word at a time.")
            step = gr.Slider(1, 2, value=1, step=1, label="Decoding step", elem_id="step-slider",
                             interactive=False, info="Arrow keys move one step; or type the step's number in the box.")
            step_view = gr.HTML("", js_on_load=None, elem_id="step-view")
            compare_button = compare_view = None
            if state.designs:
                gr.Markdown("### Compare models\nThe same photo described by the attention model and by the "
                            "designs it grew from, each with its test scores and its time.")
                compare_button = gr.Button("Compare models on this photo", elem_id="compare-button")
                compare_view = gr.HTML("", js_on_load=None, elem_id="compare-view")

        quiet = {"api_visibility": "private", "show_progress": "hidden"}  # the live region says what happens
        # Up to two batches' worth of requests at once: while one batch is in the model, the next one
        # gathers, and finished ones draw their heatmaps and speech (captioner.batching).
        model = {"concurrency_id": "model", "concurrency_limit": 2 * MAX_BATCH}
        voice = {"concurrency_id": "speech", "concurrency_limit": 1}
        stale = [live, described, gallery, download, teacher, audio, step, step_view, speak_button]

        # Caption: announce at once and clear the old results, caption, bring it into view; then speech
        # (a child process) and the heatmaps (drawn in this one) side by side.
        busy = caption_button.click(on_busy, None, stale[:-1], queue=False, **quiet)
        captioned = busy.then(on_caption, [photo, beam, opacity],
                              [live, described, teacher, step, step_view, speak_button],
                              preprocess=False, **quiet, **model)
        captioned.then(None, None, None, js=SHOW_CAPTION, **quiet)
        captioned.then(on_speech, [described, rate, autoplay], [audio, speech_note], **quiet, **voice)
        captioned.then(on_heatmaps, [described, opacity], [gallery, download], **quiet)

        # A new photo (or none): the old results go at once, the choice is announced, focus moves on.
        for chosen in (photo.upload, photo.clear):
            chosen(on_chosen, [photo], [*stale, photo], preprocess=False, cancels=[captioned], **quiet) \
                .then(None, None, None, js=FOCUS_AFTER_CHOICE, **quiet)
        if example_list is not None:
            example_list.load_input_event.then(on_chosen, [photo], [*stale, photo], preprocess=False, **quiet) \
                .then(None, None, None, js=FOCUS_AFTER_CHOICE, **quiet)

        speak_button.click(lambda d, r: on_speech(d, r, True), [described, rate], [audio, speech_note],
                           **quiet, **voice)
        opacity.change(on_heatmaps, [described, opacity], [gallery, download], trigger_mode="always_last",
                       **quiet)
        step.change(on_step, [described, step, opacity], [step_view], trigger_mode="always_last", **quiet)
        if compare_button is not None:
            compare_button.click(state.compare_view, [photo, beam], [compare_view], preprocess=False, **quiet,
                                 **model)

        _api(demo, caption, "caption", "Caption a photo. Returns the caption, the caption worded by how sure the "
             "model is, its score (mean log-probability per word, length-normalised; nearer 0 is surer) and "
             "its words.", ["photo", "beam width"], ["caption", "hedged caption", "score", "words"], **model)
        _api(demo, describe, "describe", "Everything in one call: the caption, hedged caption, score and words, "
             "where the model looked for each word (alt texts), one JPEG with the photo and a labelled heatmap "
             "per word, a WAV of the hedged caption read aloud (none if speech failed) and why speech failed.",
             ["photo", "beam width", "heatmap opacity (0-1)", "speech rate (words per minute)"],
             ["caption", "hedged caption", "score", "words", "alt texts", "heatmap grid (JPEG)",
              "spoken caption (WAV)", "speech note"], **model)
        _api(demo, heatmaps, "heatmaps", "One heatmap per word (JPEG, with where the model looked as its "
             "caption), the same alt texts as a list, and all heatmaps as one JPEG.",
             ["photo", "beam width", "heatmap opacity (0-1)"], ["heatmaps", "alt texts", "heatmap grid (JPEG)"],
             **model)
        _api(demo, compare, "compare", "Caption a photo with the shipped model and each seed design beside it "
             "(inject, merge; those that are installed): for each, the design, caption, hedged caption, seconds "
             "for this photo and its Flickr8k test BLEU-4 and CIDEr-D (0-1).", ["photo", "beam width"],
             ["models"], **model)
        _api(demo, speak, "speak", "Read a text aloud (offline, espeak-ng) into a WAV file.",
             ["text", "speech rate (words per minute)"], ["speech (WAV)"], **voice)
    demo.queue(default_concurrency_limit=2, max_size=32)
    demo.app_state = state
    return demo


def _speech_message(state: AppState) -> str:
    """What the page says about speech when it is unavailable; "" when it works or was not checked."""
    status = state.speech_status
    return "" if status is None or status.available else status.message


def main() -> None:
    """Load the model and examples named by the environment, check speech, and serve the page."""
    from captioner.pipeline import DEFAULT_EXAMPLES, DEFAULT_MODEL, DEFAULT_SEEDS

    captioner, load_error = app_logic.load_captioner(Path(os.environ.get("CAPTIONER_MODEL", DEFAULT_MODEL)))
    examples = app_logic.example_photos(os.environ.get("CAPTIONER_EXAMPLES", DEFAULT_EXAMPLES))
    designs = app_logic.load_designs(os.environ.get("CAPTIONER_SEEDS", DEFAULT_SEEDS)) if captioner else {}
    if captioner:  # no visitor waits for tracing or compiling, and memory does not grow under load
        seconds = captioner.warm_up(photos=MAX_BATCH)  # every batch the app can make
        print(f"Warmed up for up to {MAX_BATCH} photos at once in {seconds:.1f} s", flush=True)
    for model in designs.values():
        model.warm_up()  # Compare captions one photo at a time
    demo = create_demo(captioner, examples, load_error=load_error, speech_status=speech.check(), designs=designs)
    demo.launch(**launch_options())


if __name__ == "__main__":
    main()
