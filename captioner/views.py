"""What the web page shows, as HTML strings: the live region, the teacher view's tables, the heatmaps and
the spoken caption's player. Pure functions of their arguments (every word is HTML-escaped)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from .decoding import Caption

KINDS = ("caption", "error", "idle")


def live_html(text: str, kind: str = "caption") -> str:
    """The live region: large text that screen readers announce without moving focus.

    ``kind`` is "caption", "error" or "idle" (a CSS class). The text is HTML-escaped.
    """
    if kind not in KINDS:
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


def step_html(step, total: int, picture: Image.Image | None = None, alt: str = "") -> str:
    """One decoding step for the step-through (a :class:`captioner.teaching.Step`): the caption so far,
    the word chosen and its probability, the gate beta, where the model looked (``picture``, with ``alt``
    as its text alternative) and the five likeliest words.

    The first paragraph says it all in one sentence, so a screen reader that announces the region
    when the step changes reads that sentence first.
    """
    so_far = " ".join(step.words_so_far) or "nothing yet"
    chosen = step.chosen_probability
    said = f", probability {_percent(chosen)}" if chosen is not None else ""
    gate = "" if step.gate is None else (f" Gate beta {step.gate:.2f}: how much of what the model looked at "
                                          "reached the LSTM (0 none, 1 all).")
    summary = (f"Step {step.index + 1} of {total}. Caption so far: {so_far}. "
               f"Chosen word: {_word(step.word)}{said}.{gate}")
    figure = ""
    if picture is not None:
        figure = (f'<figure class="step-heatmap"><img src="{data_url(picture)}" alt="{html.escape(alt)}" '
                  f'width="{picture.width}" height="{picture.height}"></figure>')
    rows = "".join(f"<tr><td>{rank}</td><td>{html.escape(_word(w))}{' (chosen)' if w == step.word else ''}</td>"
                   f"<td>{_percent(p)}</td></tr>" for rank, (w, p) in enumerate(step.top, start=1))
    table = (f'<table class="teacher-table"><caption>The five likeliest words at step {step.index + 1}'
             '</caption><thead><tr><th scope="col">Rank</th><th scope="col">Word</th>'
             f'<th scope="col">Probability</th></tr></thead><tbody>{rows}</tbody></table>')
    return (f'<p class="step-summary" role="status" aria-live="polite" aria-atomic="true">{html.escape(summary)}'
            f"</p>{figure}{table}")


def compare_html(comparisons) -> str:
    """The Compare models table (a list of :class:`captioner.teaching.Comparison`): each design's
    sentence for this photo, its Flickr8k test scores and how long this photo took."""
    def score(row, key):
        return f"{100 * row[key]:.1f}" if key in row else "not measured"

    rows = "".join(
        f"<tr><th scope=\"row\">{html.escape(c.name)}</th><td>{html.escape(c.description.hedged)}</td>"
        f"<td>{score(c.test_scores, 'bleu4')}</td><td>{score(c.test_scores, 'cider')}</td>"
        f"<td>{1000 * c.seconds:.0f} ms</td></tr>" for c in comparisons)
    about = "".join(f"<li><strong>{html.escape(c.name)}</strong>: {html.escape(c.summary)}</li>" for c in comparisons)
    return ('<table class="teacher-table"><caption>The same photo described by each design. Scores: Flickr8k '
            "test, in %, at the model's beam width; time: this photo, read, encoded and decoded.</caption>"
            '<thead><tr><th scope="col">Design</th><th scope="col">Caption</th><th scope="col">Test BLEU-4</th>'
            '<th scope="col">Test CIDEr-D</th><th scope="col">Time</th></tr></thead>'
            f"<tbody>{rows}</tbody></table><ul class=\"designs\">{about}</ul>")


def teacher_html(caption: Caption | None) -> str:
    """Both teacher tables, or a note that there is no caption yet."""
    if caption is None:
        return "<p>Caption a photo to see how beam search chose its words.</p>"
    return beams_table(caption) + steps_table(caption)


def data_url(image: Image.Image) -> str:
    """An image as a ``data:`` URL (JPEG), so the page needs no file route for it."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)  # ~5x faster to encode than WebP at this size
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gallery_html(items: list[tuple[Image.Image, str]]) -> str:
    """The heatmaps as one ordered list: each item a picture and, under it, where the model looked for
    that word ("dog: looked hardest at the lower left; ..."). The text is said once: the picture is
    marked decorative (alt=""), because the words beside it say all that it shows."""
    if not items:
        return ""
    listed = "".join(
        f'<li class="heatmap"><img src="{data_url(image)}" alt="" width="{image.width}" height="{image.height}">'
        f'<span class="heatmap-text">{html.escape(text)}</span></li>'
        for image, text in items)
    return f'<ol class="heatmap-grid" aria-label="Heatmaps, one per word">{listed}</ol>'


def audio_html(path: str | Path | None, autoplay: bool = False) -> str:
    """The spoken caption: the browser's own player, named "Spoken caption", and one download link.

    The WAV travels inside the page (a ``data:`` URL, ~130 kB for a sentence), so no file route is needed.
    """
    if path is None:
        return ""
    url = "data:audio/wav;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    play = " autoplay" if autoplay else ""
    return (f'<audio controls{play} aria-label="Spoken caption" src="{url}"></audio>'
            f'<p><a class="download-link" href="{url}" download="spoken-caption.wav">'
            "Download the spoken caption (WAV)</a></p>")
