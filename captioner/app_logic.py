"""What the web app does, in plain Python: ``app.py`` only wires these to Gradio.

:class:`AppState` holds what the app keeps for all visitors: the captioner (or why there is none),
recent results, a scratch folder and whether speech works. Each visitor's last caption is a
:class:`~captioner.pipeline.Description` (its photo at display size), kept by Gradio per visitor. A visitor's photo arrives as Gradio's raw file
payload (the app asks Gradio not to preprocess it, so that :func:`captioner.image.load_image`, not PIL
inside Gradio, meets every bad file and can explain what is wrong). Nothing here needs a server, so
tests call it directly; the HTML comes from :mod:`captioner.views`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import logging
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from . import heatmap, speech, teaching, views
from .batching import Batcher
from .image import ImageError, load_image
from .limits import clamp
from .pipeline import Captioner, Description, ModelFolderError

log = logging.getLogger(__name__)

MIN_BEAM, MAX_BEAM = 1, 10
GRID_JPEG = {"format": "JPEG", "quality": 90, "subsampling": 0}  # how the heatmap grid is saved
DISPLAY_SIDE = 448  # longer side of the photo under each heatmap in the gallery
IDLE_MESSAGE = "No photo chosen yet. Choose a photo, then press Caption."
BUSY_MESSAGE = "Describing the photo…"  # announced at once, so the visitor knows the button worked
REMOVED_MESSAGE = "No photo chosen. Choose a photo, then press Caption."  # removed, or another source picked
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the photo on its side


class ModelUnavailable(RuntimeError):
    """The app runs without a model; the message says how to get one."""


@dataclass
class Everything:
    """A caption with all that goes with it: what the /describe API endpoint returns."""

    described: Description
    alt_texts: list[str]  # where the model looked for each word, in words
    grid: Path  # one JPEG: the caption, the photo and a labelled heatmap per word
    audio: Path | None  # the hedged caption read aloud; None if speech failed
    speech_note: str  # why there is no audio, or ""


def load_captioner(folder: str | Path) -> tuple[Captioner | None, str | None]:
    """(captioner, None), or (None, a message for the page) when the model folder is missing or broken."""
    try:
        return Captioner.load(folder), None
    except ModelFolderError as exc:
        return None, (f"The captioning model could not be loaded: {exc}. Train one with train.py, "
                      "or set CAPTIONER_MODEL to a model folder, then restart the app.")


def load_designs(folder: str | Path) -> dict[str, Captioner]:
    """The seed designs to compare with the main model: each model folder under ``folder`` (as
    assets/seeds/inject), by its design (config.decoder). Empty if the folder is missing; one that cannot
    be loaded is left out with a warning, so the page still serves the main model."""
    folder = Path(folder)
    designs = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        try:
            captioner = Captioner.load(sub)
        except ModelFolderError as exc:
            log.warning("seed design %s left out: %s", sub, exc)
            continue
        designs[captioner.design] = captioner
    return designs


def example_photos(folder: str | Path) -> list[str]:
    """The example photos bundled in ``folder``, sorted; none if the folder is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES)


def example_label(path: str | Path) -> str:
    """A button label for an example photo, from its file name: "grace_hopper.jpg" -> "grace hopper"."""
    return Path(path).stem.replace("_", " ").replace("-", " ")


def photo_source(payload):
    """Gradio's raw photo payload (a FileData dict, or a path) -> what load_image takes, or None."""
    if isinstance(payload, dict):
        return payload.get("path")
    return payload


def photo_name(payload) -> str:
    """The name the visitor knows the photo by: the uploaded file's own name, else the file's."""
    if isinstance(payload, dict) and payload.get("orig_name"):
        return str(payload["orig_name"])
    source = photo_source(payload)
    return Path(source).name if isinstance(source, (str, Path)) else "the photo"


class Recent:
    """The last few photos captioned, by file content and beam width.

    A client that asks /caption and then /heatmaps for the same photo, or a
    visitor who presses Caption twice, gets the kept result instead of a
    second run of the model (decoding is deterministic, so it is the same).
    Thread-safe; at most ``size`` entries, the least recently used dropped.
    """

    def __init__(self, size: int = 32):
        self.size = size
        self._items: OrderedDict[tuple, Description] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(source, beam_size: int) -> tuple | None:
        """(sha256 of the file, beam width) for a file path; None for anything else (not kept)."""
        if not isinstance(source, (str, Path)):
            return None
        try:
            digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        except OSError:  # missing or unreadable: load_image explains it
            return None
        return digest, beam_size

    def get(self, key: tuple) -> Description | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple, described: Description) -> None:
        with self._lock:
            self._items[key] = described
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Scratch:
    """A private temporary folder for files handed to Gradio (which copies them to its cache).

    Files older than ``max_age`` seconds are removed whenever a new one is
    named, so a long-running server does not fill its disk.
    """

    def __init__(self, root: str | Path | None = None, max_age: float = 3600.0):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="captioner-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age = max_age

    def path(self, suffix: str) -> Path:
        """A new, unused file name in the folder, after removing stale files."""
        cutoff = time.time() - self.max_age
        for old in self.root.iterdir():
            if old.is_file() and old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        return self.root / f"{uuid.uuid4().hex}{suffix}"


def alt_texts(described: Description) -> list[str]:
    """One text alternative per word: "dog: looked hardest at the lower left; ..."."""
    return [heatmap.alt_text(word, grid) for word, grid in zip(described.caption.words, described.caption.attention)]


def heatmap_items(described: Description, opacity: float = heatmap.DEFAULT_OPACITY) -> list[tuple[Image.Image, str]]:
    """Each word's heatmap over the photo, with its alt text."""
    return [(heatmap.overlay(described.photo, grid, opacity), text)
            for grid, text in zip(described.caption.attention, alt_texts(described))]


def clamp_opacity(opacity) -> float:
    """An overlay opacity in 0..1 (the one clamp); None gives the default."""
    return clamp(opacity, 0.0, 1.0, heatmap.DEFAULT_OPACITY)


@dataclass
class AppState:
    """What the app keeps for every visitor: the model (or why there is none) and its helpers.

    ``speech_status`` None means speech was not checked; the page then offers it and reports a failure
    when it happens.
    """

    captioner: Captioner | None
    load_error: str | None = None
    examples: list[str] = field(default_factory=list)
    speech_status: speech.SpeechStatus | None = None
    recent: Recent = field(default_factory=Recent)
    scratch: Scratch = field(default_factory=Scratch)
    designs: dict = field(default_factory=dict)  # design name -> Captioner: the seed designs, for Compare
    batcher: Batcher = field(init=False, repr=False)  # concurrent requests share model calls

    def __post_init__(self):
        self.batcher = Batcher(self._caption_batch)

    def _caption_batch(self, kind: tuple[int, bool], photos: list) -> list[Description]:
        beam_size, with_steps = kind
        return self.captioner.describe_read(photos, beam_size, with_steps)

    @property
    def default_beam(self) -> int:
        from .config import ModelConfig

        return (self.captioner.config if self.captioner else ModelConfig()).beam_size

    @property
    def speech_available(self) -> bool:
        return self.speech_status is None or self.speech_status.available

    # --- the model ---------------------------------------------------------------------------

    def describe(self, source, beam_size=None) -> Description:
        """Caption one photo with the top-5 words per step. Raises ImageError or ModelUnavailable.

        A photo captioned lately at the same beam width is not captioned again.
        """
        if self.captioner is None:
            raise ModelUnavailable(self.load_error or "No captioning model is loaded.")
        beam_size = clamp(beam_size, MIN_BEAM, MAX_BEAM, self.default_beam, int)
        key = self.recent.key(source, beam_size)
        if key is not None and (kept := self.recent.get(key)) is not None:
            return kept
        photo = self.captioner.read(source)  # here, in the request's thread: a bad photo fails on its own
        done = self.batcher.submit((beam_size, True), photo)
        # kept per visitor (gr.State) and in Recent: the photo at display size, not as uploaded
        described = dataclasses.replace(done, photo=heatmap.fit(done.photo, DISPLAY_SIDE))
        if key is not None:
            self.recent.put(key, described)
        return described

    def compare(self, source, beam_size=None) -> list[teaching.Comparison]:
        """The photo captioned by the main model and by each seed design, in that order, each timed.
        Raises ImageError or ModelUnavailable."""
        if self.captioner is None:
            raise ModelUnavailable(self.load_error or "No captioning model is loaded.")
        beam_size = clamp(beam_size, MIN_BEAM, MAX_BEAM, self.default_beam, int)
        captioners = {self.captioner.design: self.captioner}
        captioners.update((name, c) for name, c in self.designs.items() if name not in captioners)
        return teaching.compare(captioners, source, beam_size)

    def compare_view(self, payload, beam_size) -> str:
        """The Compare models button: the comparison table, or a message; never raises."""
        try:
            return views.compare_html(self.compare(photo_source(payload), beam_size))
        except (ImageError, ModelUnavailable) as exc:
            return f"<p>{html.escape(str(exc))}</p>"
        except Exception:
            log.exception("comparing failed")
            return "<p>Sorry, something went wrong while comparing the models. Please try again.</p>"

    def describe_everything(self, source, beam_size=None, opacity=None, rate=None) -> Everything:
        """Caption, heatmaps and speech in one go; speech is made in a child process while the heatmap
        grid is drawn. Raises ImageError or ModelUnavailable; a speech failure only leaves the audio out.

        The heatmaps come as one image (a client downloads two files, not one per word);
        :func:`heatmap_items` gives them one by one.
        """
        described = self.describe(source, beam_size)
        with ThreadPoolExecutor(max_workers=1) as pool:
            voice = pool.submit(self.speech_view, described, rate)
            grid = self.save_grid(described, opacity)
            audio, note = voice.result()
        return Everything(described, alt_texts(described), grid, audio, note)

    # --- files -------------------------------------------------------------------------------

    def save_grid(self, described: Description, opacity=None) -> Path:
        """Write the combined heatmap image (caption, photo, one panel per word, colour key) as a JPEG.

        JPEG, not PNG: a grid of photos compresses badly losslessly, and saving it as PNG took
        longer than drawing it. Quality 90 without chroma subsampling keeps the labels sharp.
        ``python benchmarks/grid_formats.py`` times both (README, Reliability and performance).
        """
        path = self.scratch.path(".jpg")
        image = heatmap.grid_image(described.photo, described.caption.words, described.caption.attention,
                                   title=described.hedged, opacity=clamp_opacity(opacity))
        image.save(path, **GRID_JPEG)
        return path

    def speak(self, text: str, rate=None) -> Path:
        """Read ``text`` aloud into a new WAV file. Raises speech.SpeechError."""
        path = self.scratch.path(".wav")
        speech.synthesize(text, path, rate)
        return path

    # --- the page's handlers: they never raise ---------------------------------------------

    def chosen_view(self, payload) -> tuple[str, bool]:
        """A photo was chosen (or removed): (live-region HTML saying so, whether it can be captioned).

        The photo is read now, so that a file that is not a photo is reported at once, not after Caption.
        """
        source = photo_source(payload)
        if source is None:
            return views.live_html(REMOVED_MESSAGE, "idle"), False
        name = photo_name(payload)
        try:
            image = load_image(source, target_size=224)  # a large JPEG is checked at a reduced scale: fast
            width, height = _upright_size(source) if isinstance(source, (str, Path)) else image.size
        except ImageError as exc:
            return views.live_html(f"{name} cannot be described: {exc} Choose another photo.", "error"), False
        return views.live_html(f"Photo chosen: {name}, {width} by {height} pixels. "
                               "Press Caption to describe it.", "idle"), True

    def caption_view(self, payload, beam_size) -> tuple[str, Description | None, str]:
        """The Caption button: (live-region HTML, Description or None, teacher view HTML).

        Every failure becomes a message in the live region; nothing is raised.
        """
        try:
            described = self.describe(photo_source(payload), beam_size)
        except (ImageError, ModelUnavailable) as exc:
            return views.live_html(str(exc), "error"), None, views.teacher_html(None)
        except Exception:  # the page must answer, whatever broke; the log keeps the traceback
            log.exception("captioning failed")
            return (views.live_html("Sorry, something went wrong while describing this photo. Please try again.",
                                    "error"), None, views.teacher_html(None))
        return views.live_html(described.hedged), described, views.teacher_html(described.caption)

    def heatmaps_view(self, described: Description | None, opacity) -> tuple[str, Path | None]:
        """Heatmaps for the visitor's last caption: (gallery HTML, combined grid JPEG path), or ("", None)."""
        if described is None or not described.is_photo:  # no "man: looked at the top" for a page of text
            return "", None
        opacity = clamp_opacity(opacity)
        return views.gallery_html(heatmap_items(described, opacity)), self.save_grid(described, opacity)

    def step_view(self, described: Description | None, step, opacity=None) -> str:
        """The step-through at ``step`` (1-based, clamped to the caption's steps): its HTML, or "" without a
        caption. It reads what beam search recorded for the caption shown (:func:`teaching.step_through`)."""
        if described is None or not described.caption.steps:
            return ""
        steps = teaching.step_through(described.caption)
        chosen = steps[clamp(step, 1, len(steps), 1, int) - 1]
        picture = alt = None
        if chosen.attention is not None:
            picture = heatmap.overlay(described.photo, chosen.attention, clamp_opacity(opacity))
            alt = "Where the model looked for " + heatmap.alt_text(chosen.word, chosen.attention)
        return views.step_html(chosen, len(steps), picture, alt or "")

    def speech_view(self, described: Description | None, rate) -> tuple[Path | None, str]:
        """Speech for the visitor's last caption: (WAV path or None, a note for the page)."""
        if described is None:
            return None, ""
        try:
            return self.speak(described.hedged, rate), ""
        except speech.SpeechError as exc:
            return None, f"Reading aloud failed: {exc} The caption is shown above."


def _upright_size(source) -> tuple[int, int]:
    """(width, height) of a photo file as it is shown: read from its header, turned by its EXIF orientation."""
    with Image.open(source) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112)
    return (height, width) if orientation in SWAPPED_ORIENTATIONS else (width, height)


__all__ = ["AppState", "Everything", "ImageError", "ModelUnavailable", "Recent", "Scratch",
           "alt_texts", "clamp_opacity", "example_label", "example_photos", "heatmap_items", "load_captioner",
           "load_designs",
           "photo_name", "photo_source"]
