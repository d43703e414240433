"""Train a model folder's photo check (``python -m captioner fit-photo-check``) and measure it.

Photos: Flickr8k's training photos (the feature cache of training; the
folder's own encoder is checked to be the one that made it). Not photos:
``per_kind`` pictures of each kind from :mod:`captioner.nonphotos` (seed 1),
run through the folder's encoder. The threshold is chosen on the dev photos;
then it is measured on what it never saw: the test photos (false alarms),
``held_out`` new pictures of each kind (seed 2), and, where scikit-image is
installed, its licence-clean sample pictures (``page`` and ``text`` are not
photos of scenes; ``astronaut``, ``coffee``, ``chelsea`` and others are).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..nonphotos import GENERATORS, generate
from ..photo_check import FILE, PHOTO, choose_threshold, fit, summarise

log = logging.getLogger(__name__)

SKIMAGE_NOT_PHOTOS = {"page": "text", "text": "text"}
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def _summaries(rows, chunk: int = 500) -> np.ndarray:
    return np.concatenate([summarise(np.asarray(rows[s:s + chunk], np.float32)) for s in range(0, len(rows), chunk)])


def _encode(captioner, images, batch: int = 16) -> np.ndarray:
    """Summaries (N, 2 D) of PIL images through the folder's own preprocessing and encoder."""
    from ..image import load_image, preprocess

    out = []
    for s in range(0, len(images), batch):
        pixels = np.stack([preprocess(load_image(im, target_size=captioner.config.image_size), captioner.config)
                           for im in images[s:s + batch]])
        out.append(summarise(captioner.features(pixels)))
    return np.concatenate(out)


def skimage_pictures() -> dict[str, tuple[str, object]]:
    """scikit-image's sample pictures that come inside its package: name -> (expected kind, PIL image)."""
    try:
        from skimage import data
    except ImportError:
        return {}
    from PIL import Image

    found = {}
    for name, kind in list(SKIMAGE_NOT_PHOTOS.items()) + [(n, PHOTO) for n in SKIMAGE_PHOTOS]:
        try:
            pixels = getattr(data, name)()
        except Exception as exc:  # noqa: BLE001 - a sample that needs a download is skipped, and said so
            log.warning("scikit-image's %s is not available here: %s", name, exc)
            continue
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            pixels = (255 * (pixels - pixels.min()) / max(1e-9, float(np.ptp(pixels)))).astype(np.uint8)
        found[name] = (kind, Image.fromarray(pixels).convert("RGB"))
    return found


def fit_photo_check(folder: Path, data_dir: Path, encoder_weights: Path | None, cache_root: Path, per_kind: int = 200,
                    held_out: int = 100, false_alarms: float = 0.005, dtype: str | None = None) -> dict:
    """Fit, choose the threshold on dev, measure, and write ``photo_check.json`` and ``config.json``'s
    ``photo_threshold`` into ``folder``. Returns what was measured.

    ``encoder_weights`` (default: the folder's own encoder) names the weights the cached
    features are looked up by, as ``train.py`` named them; they must be the folder's encoder,
    which is checked before anything is extracted.
    """
    import dataclasses

    from ..encoder import build_encoder, load_encoder_weights
    from ..flickr8k import load_data
    from ..pipeline import Captioner, check_folder, encoder_path
    from .run import folder_encoder_weights, prepare_features

    folder = Path(folder)
    config, _ = check_folder(folder)
    start = time.perf_counter()
    if encoder_weights is None:
        encoder_weights = encoder_path(folder)
    else:  # another file: it must hold the folder's encoder, or its features are not what the folder computes
        mine, theirs = build_encoder(config), build_encoder(config)
        load_encoder_weights(mine, encoder_path(folder))
        load_encoder_weights(theirs, folder_encoder_weights(encoder_weights, config, cache_root))
        if any(not np.array_equal(a, b) for a, b in zip(mine.get_weights(), theirs.get_weights())):
            raise ValueError(f"{encoder_weights} is not the encoder of {folder}: its cached features would not be "
                             "what the folder computes (leave --encoder-weights out to use the folder's own)")
        del mine, theirs
    data = load_data(data_dir, seed=TrainConfig().seed)
    splits, cache, _, _, _ = prepare_features(data, config, TrainConfig(), encoder_weights, cache_root, dtype,
                                              progress=False)
    captioner = Captioner.load(folder, compute_dtype=dtype)
    summaries = {PHOTO: _summaries(cache.rows(splits["train"]))}
    for kind in GENERATORS:
        summaries[kind] = _encode(captioner, generate(kind, per_kind, seed=1))
    check = fit(summaries)
    dev = check.probabilities_of(_summaries(cache.rows(splits["dev"])))[:, 0]
    threshold = choose_threshold(dev, false_alarms)
    test = check.probabilities_of(_summaries(cache.rows(splits["test"])))[:, 0]
    measured = {"threshold": round(threshold, 6),
                "dev_false_alarms": float(np.mean(dev < threshold)), "dev_photos": len(dev),
                "test_false_alarms": float(np.mean(test < threshold)), "test_photos": len(test),
                "held_out_detected": {}, "held_out": held_out}
    for kind in GENERATORS:
        verdicts = check.judge_probabilities(check.probabilities_of(_encode(captioner, generate(kind, held_out, 2))),
                                             threshold)
        measured["held_out_detected"][kind] = {
            "not_a_photo": float(np.mean([not v.is_photo for v in verdicts])),
            "right_kind": float(np.mean([v.kind == kind for v in verdicts]))}
    samples = skimage_pictures()
    if samples:
        probs = check.probabilities_of(_encode(captioner, [im for _, im in samples.values()]))
        measured["scikit_image"] = {name: {"expected": kind, "said": v.kind, "p_photo": round(v.p_photo, 4)}
                                    for (name, (kind, _)), v in zip(samples.items(),
                                                                    check.judge_probabilities(probs, threshold))}
    measured["seconds"] = round(time.perf_counter() - start, 1)
    check.record.update(measured=measured, false_alarm_target=false_alarms, per_kind=per_kind,
                        generator_seeds={"train": 1, "held_out": 2})
    check.save(folder / FILE)
    dataclasses.replace(config, photo_threshold=threshold).save(folder / "config.json")
    log.info("photo check written to %s: %s", folder / FILE, measured)
    return measured


def format_measured(measured: dict) -> str:
    lines = [f"threshold p(photo) < {measured['threshold']:.4g}",
             f"false alarms: dev {100 * measured['dev_false_alarms']:.2f}% of {measured['dev_photos']} photos, "
             f"test {100 * measured['test_false_alarms']:.2f}% of {measured['test_photos']} photos",
             f"held-out generated pictures ({measured['held_out']} of each kind):"]
    for kind, row in measured["held_out_detected"].items():
        lines.append(f"  {kind:8s} turned away {100 * row['not_a_photo']:5.1f}%, named right {100 * row['right_kind']:5.1f}%")
    for name, row in measured.get("scikit_image", {}).items():
        lines.append(f"  scikit-image {name:22s} expected {row['expected']:7s} said {row['said']:7s} "
                     f"p(photo) {row['p_photo']:.3f}")
    return "\n".join(lines)
