"""What the web app does, in plain Python: ``app.py`` only wires these functions to Gradio.

A visitor's photo arrives as Gradio's raw file payload (the app asks Gradio
not to preprocess it, so that :func:`captioner.image.load_image`, not PIL
inside Gradio, meets every bad file and can explain what is wrong). Each
function here returns what a component shows: live-region HTML, table HTML,
gallery items, file paths. None of them needs a server, so tests call them
directly.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import heatmap, speech
from .decoding import Caption
from .image import ImageError
from .pipeline import Captioner, ModelFolderError

log = logging.getLogger(__name__)

MIN_BEAM, MAX_BEAM = 1, 10
DISPLAY_SIDE = 448  # longer side of the photo under each heatmap in the gallery
IDLE_MESSAGE = "No photo described yet. Choose a photo, then press Caption."
BUSY_MESSAGE = "Describing the photo…"  # announced at once, so the visitor knows the button worked
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


class ModelUnavailable(RuntimeError):
    """The app runs without a model; the message says how to get one."""


@dataclass
class Described:
    """One captioned photo, kept per visitor (gr.State) so heatmaps and speech reuse it."""

    photo: Image.Image  # upright RGB, at most DISPLAY_SIDE pixels on its longer side
    caption: Caption
    hedged: str  # "Probably a dog running on grass."


def load_captioner(folder: str | Path) -> tuple[Captioner | None, str | None]:
    """(captioner, None), or (None, a message for the page) when the model folder is missing or broken."""
    try:
        return Captioner.load(folder), None
    except ModelFolderError as exc:
        return None, (f"The captioning model could not be loaded: {exc}. Train one with train.py, "
                      "or set CAPTIONER_MODEL to a model folder, then restart the app.")


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


def clamp_beam(beam_size, default: int) -> int:
    """A beam width in MIN_BEAM..MAX_BEAM; None gives ``default``."""
    if beam_size is None:
        return default
    return int(min(MAX_BEAM, max(MIN_BEAM, round(float(beam_size)))))


class Recent:
    """The last few photos captioned, by file content and beam width.

    A client that asks /caption and then /heatmaps for the same photo, or a
    visitor who presses Caption twice, gets the kept result instead of a
    second run of the model (decoding is deterministic, so it is the same).
    Thread-safe; at most ``size`` entries, the least recently used dropped.
    """

    def __init__(self, size: int = 32):
        self.size = size
        self._items: OrderedDict[tuple, Described] = OrderedDict()
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

    def get(self, key: tuple) -> Described | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple, described: Described) -> None:
        with self._lock:
            self._items[key] = described
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def describe(captioner: Captioner | None, source, beam_size=None, load_error: str | None = None,
             recent: Recent | None = None) -> Described:
    """Caption one photo with the top-5 words per step. Raises ImageError or ModelUnavailable.

    With ``recent``, a photo captioned before at the same beam width is not captioned again.
    """
    if captioner is None:
        raise ModelUnavailable(load_error or "No captioning model is loaded.")
    beam_size = clamp_beam(beam_size, captioner.config.beam_size)
    key = recent.key(source, beam_size) if recent is not None else None
    if key is not None and (kept := recent.get(key)) is not None:
        return kept
    done = captioner.describe(source, beam_size, with_steps=True)
    described = Described(heatmap.fit(done.photo, DISPLAY_SIDE), done.caption, done.hedged)
    if key is not None:
        recent.put(key, described)
    return described


def live_html(text: str, kind: str = "caption") -> str:
    """The live region: large text that screen readers announce without moving focus.

    ``kind`` is "caption", "error" or "idle" (a CSS class). The text is HTML-escaped.
    """
    if kind not in ("caption", "error", "idle"):
        raise ValueError(f"unknown kind {kind!r}")
    return (f'<div class="live-caption {kind}" role="status" aria-live="polite" aria-atomic="true">'
            f"{html.escape(text)}</div>")


def _word(word: str) -> str:
    return "(end of caption)" if word == "<end>" else word


def _percent(p: float) -> str:
    return "under 0.1%" if p < 0.0005 else f"{100 * p:.1f}%"


def beams_table(caption: Caption) -> str:
    """HTML table of the finished beam candidates, best first, with their scores."""
    rows = []
    for rank, cand in enumerate([caption] + caption.alternatives, start=1):
        finished = "yes" if cand.ended else "no, cut off at the length limit"
        rows.append(f"<tr><td>{rank}</td><td>{html.escape(cand.text)}</td><td>{cand.score:.3f}</td>"
                    f"<td>{cand.log_prob:.3f}</td><td>{finished}</td></tr>")
    return ('<table class="teacher-table"><caption>Beam candidates, best first. Score is the '
            "log-probability divided by length to the power of the length penalty.</caption>"
            '<thead><tr><th scope="col">Rank</th><th scope="col">Caption</th><th scope="col">Score</th>'
            '<th scope="col">Log-probability</th><th scope="col">Finished</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def steps_table(caption: Caption) -> str:
    """HTML table: at each step of the chosen caption, the five likeliest next words and their probabilities."""
    if not caption.steps:
        return "<p>No step-by-step probabilities were recorded for this caption.</p>"
    chosen = caption.words + ["<end>"]
    width = max(len(step) for step in caption.steps)
    head = "".join(f'<th scope="col">Choice {k}</th>' for k in range(1, width + 1))
    rows = []
    for index, step in enumerate(caption.steps):
        cells = "".join(f"<td>{html.escape(_word(w))} {_percent(p)}</td>" for w, p in step)
        cells += "<td></td>" * (width - len(step))
        rows.append(f"<tr><td>{index + 1}</td><td>{html.escape(_word(chosen[index]))}</td>{cells}</tr>")
    return ('<table class="teacher-table"><caption>The five likeliest next words at each step, with their '
            "probabilities</caption>"
            f'<thead><tr><th scope="col">Step</th><th scope="col">Chosen word</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def alt_texts(described: Described) -> list[str]:
    """One text alternative per word: "dog: mostly the lower left"."""
    return [heatmap.alt_text(word, grid) for word, grid in zip(described.caption.words, described.caption.attention)]


def heatmap_items(described: Described, opacity: float = heatmap.DEFAULT_OPACITY) -> list[tuple[Image.Image, str]]:
    """Each word's heatmap over the photo, with its alt text."""
    return [(heatmap.overlay(described.photo, grid, opacity), text)
            for grid, text in zip(described.caption.attention, alt_texts(described))]


def data_url(image: Image.Image) -> str:
    """An image as a ``data:`` URL (JPEG), so the page needs no file route for it."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)  # ~5x faster to encode than WebP at this size
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gallery_html(words: list[str], items: list[tuple[Image.Image, str]]) -> str:
    """The heatmap gallery: one figure per word (alt text on the image, the word below it), then
    the alt texts again as an ordered list, so that everyone can read where the model looked."""
    if not items:
        return ""
    figures = "".join(
        f'<figure class="heatmap"><img src="{data_url(image)}" alt="{html.escape(text)}" '
        f'width="{image.width}" height="{image.height}"><figcaption>{index}. {html.escape(word)}</figcaption></figure>'
        for index, (word, (image, text)) in enumerate(zip(words, items), start=1))
    listed = "".join(f"<li>{html.escape(text)}</li>" for _, text in items)
    return (f'<div class="heatmap-grid">{figures}</div>'
            f'<h3 class="alt-heading">Where the model looked for each word</h3><ol class="alt-list">{listed}</ol>')


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


def save_grid(described: Described, scratch: Scratch, opacity: float = heatmap.DEFAULT_OPACITY) -> Path:
    """Write the combined heatmap image (caption, photo, one panel per word, colour key) as a PNG."""
    path = scratch.path(".png")
    image = heatmap.grid_image(described.photo, described.caption.words, described.caption.attention,
                               title=described.hedged, opacity=opacity)
    image.save(path, compress_level=1)  # optimize=True costs ~0.35 s for 15% less
    return path


def speak(text: str, rate, scratch: Scratch) -> Path:
    """Read ``text`` aloud into a new WAV file. Raises speech.SpeechError."""
    path = scratch.path(".wav")
    speech.synthesize(text, path, rate)
    return path


def clamp_opacity(opacity) -> float:
    """An overlay opacity in 0..1; None gives the default."""
    if opacity is None:
        return heatmap.DEFAULT_OPACITY
    return min(1.0, max(0.0, float(opacity)))


def caption_view(captioner: Captioner | None, payload, beam_size, load_error: str | None = None,
                 recent: Recent | None = None):
    """The Caption button: (live-region HTML, Described or None, beams table HTML, steps table HTML).

    Every failure becomes a message in the live region; nothing is raised.
    """
    try:
        described = describe(captioner, photo_source(payload), beam_size, load_error, recent)
    except (ImageError, ModelUnavailable) as exc:
        return live_html(str(exc), "error"), None, "", ""
    except Exception:  # the page must answer, whatever broke; the log keeps the traceback
        log.exception("captioning failed")
        return live_html("Sorry, something went wrong while describing this photo. Please try again.",
                         "error"), None, "", ""
    return (live_html(described.hedged), described, beams_table(described.caption),
            steps_table(described.caption))


@dataclass
class Everything:
    """A caption with all that goes with it: what the /describe API endpoint returns."""

    described: Described
    alt_texts: list[str]  # where the model looked for each word, in words
    grid: Path  # one PNG: the caption, the photo and a labelled heatmap per word
    audio: Path | None  # the hedged caption read aloud; None if speech failed
    speech_note: str  # why there is no audio, or ""


def describe_everything(captioner: Captioner | None, source, beam_size, opacity, rate, scratch: Scratch,
                        load_error: str | None = None, recent: Recent | None = None) -> Everything:
    """Caption, heatmaps and speech in one go; speech is made in a child process while the heatmap
    grid is drawn. Raises ImageError or ModelUnavailable; a speech failure only leaves the audio out.

    The heatmaps come as one image (a client downloads two files, not one per word);
    :func:`heatmap_items` gives them one by one.
    """
    described = describe(captioner, source, beam_size, load_error, recent)
    with ThreadPoolExecutor(max_workers=1) as pool:
        voice = pool.submit(speech_view, described, rate, scratch)
        grid = save_grid(described, scratch, clamp_opacity(opacity))
        audio, note = voice.result()
    return Everything(described, alt_texts(described), grid, audio, note)


def heatmaps_view(described: Described | None, opacity, scratch: Scratch) -> tuple[str, Path | None]:
    """Heatmaps for the visitor's last caption: (gallery HTML, combined grid PNG path), or ("", None)."""
    if described is None:
        return "", None
    opacity = clamp_opacity(opacity)
    items = heatmap_items(described, opacity)
    return gallery_html(described.caption.words, items), save_grid(described, scratch, opacity)


def speech_view(described: Described | None, rate, scratch: Scratch) -> tuple[Path | None, str]:
    """Speech for the visitor's last caption: (WAV path or None, a note for the page)."""
    if described is None:
        return None, ""
    try:
        return speak(described.hedged, rate, scratch), ""
    except speech.SpeechError as exc:
        return None, f"Reading aloud failed: {exc} The caption is shown above."
