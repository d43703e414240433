"""A model folder: how it is written, checked and loaded, and :class:`Captioner`, which uses it.

A model folder holds everything needed to rebuild the exact model, and
nothing executable:

    config.json                  ModelConfig: architecture, preprocessing, decoding, hedging
    vocab.json                   the vocabulary, as a list of words (its length sizes the decoder)
    encoder.weights.json         VGG16 up to block5_conv3, float16: Keras's manifest of ...
    encoder_0000N.weights.h5     ... its shards, each under 10 MB (what a Hugging Face Space accepts)
      or encoder.json            instead of those: {"weights": a relative path, "sha256": ...}, an encoder
                                 stored once for several model folders (see :func:`share_encoder`)
    decoder.weights.json         the decoder, likewise sharded
    decoder_0000N.weights.h5
    photo_check.json             optional: the "is this a photo?" classifier (see captioner.photo_check)
    metrics.json                 scores and how they were measured
    train_config.json            the training settings, for the record
    README.md                    the model card

:meth:`Captioner.describe` is the one call from a photo to its caption.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .config import ModelConfig
from .decoding import Caption, beam_search, beam_search_batch, greedy
from .hedging import hedge
from .image import load_image, preprocess
from .photo_check import FILE as PHOTO_CHECK
from .photo_check import PHOTO, PhotoCheck, Verdict
from .vocab import Vocabulary

log = logging.getLogger(__name__)



def bundled(name: str) -> Path:
    """``assets/<name>`` of this checkout, or the same files installed as package data (``pip install .``)."""
    here = Path(__file__).resolve().parent.parent
    checkout, installed = here / "assets" / name, here / "captioner_assets" / name
    return installed if installed.is_dir() and not checkout.is_dir() else checkout


DEFAULT_MODEL = bundled("model")
DEFAULT_EXAMPLES = bundled("examples")
DEFAULT_SEEDS = bundled("seeds")  # one model folder per seed design (inject, merge), for the teacher view
ENCODER_WEIGHTS = "encoder.weights.json"
ENCODER_REFERENCE = "encoder.json"
DECODER_WEIGHTS = "decoder.weights.json"
REQUIRED = ("config.json", "vocab.json", DECODER_WEIGHTS)
PHOTO_VERDICT = Verdict(PHOTO, 1.0)  # what a folder without a photo check says of every picture
MAX_SHARD_GB = 8 / 1024  # 8 MiB a shard: the Hub refuses a plain git push of any file over 10 MB


class ModelFolderError(ValueError):
    """A model folder that cannot be used; the message names the folder or file and says why."""


def _weight_files(folder: Path, name: str) -> list[Path]:
    """The manifest ``name`` and its shards, each checked to exist and not to be a Git LFS pointer."""
    from .encoder import weight_files

    manifest = folder / name
    if _is_lfs_pointer(manifest):
        raise ModelFolderError(f"{manifest} is a Git LFS pointer, not the weights: run `git lfs pull`")
    try:
        files = weight_files(manifest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelFolderError(f"{manifest} is not a Keras weights manifest ({exc})") from exc
    for file in files[1:]:
        if not file.is_file():
            raise ModelFolderError(f"{manifest} lists {file.name}, which is missing")
        if _is_lfs_pointer(file):
            raise ModelFolderError(f"{file} is a Git LFS pointer, not the weights: run `git lfs pull`")
    return files


def _is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8).startswith(b"version ")


def encoder_path(folder: Path) -> Path:
    """The encoder weights of a model folder: its own ``encoder.weights.json``, or the shared file that its
    ``encoder.json`` names, checked against the sha256 recorded there (a mismatch names the file)."""
    from .encoder import weights_digest

    folder = Path(folder)
    own, reference = folder / ENCODER_WEIGHTS, folder / ENCODER_REFERENCE
    if own.is_file():
        _weight_files(folder, ENCODER_WEIGHTS)
        return own
    if not reference.is_file():
        raise ModelFolderError(f"{folder} is missing {ENCODER_WEIGHTS} (or an {ENCODER_REFERENCE} naming a shared one)")
    try:
        named = json.loads(reference.read_text())
        path, expected = (folder / named["weights"]).resolve(), str(named["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{reference} is not an encoder reference ({exc})") from exc
    if not path.is_file():
        raise ModelFolderError(f"{reference} names {path}, which is missing")
    _weight_files(path.parent, path.name)
    actual = weights_digest(path)
    if actual != expected:
        raise ModelFolderError(f"{path} (named by {reference}) has sha256 {actual[:12]}..., not the "
                               f"{expected[:12]}... this model was made with: a different or damaged encoder")
    return path


def share_encoder(folder: Path, shared: Path) -> Path:
    """Store ``folder``'s encoder once, in ``shared/encoder.weights.json``, and leave an ``encoder.json`` behind.

    If ``shared`` already holds an encoder, it must hold the same weights (compared value by value);
    the folder's own copy is then removed. Returns the shared weights path.
    """
    from .encoder import build_encoder, load_encoder_weights, weights_digest

    folder, shared = Path(folder), Path(shared)
    config, _ = check_folder(folder)
    own = folder / ENCODER_WEIGHTS
    if not own.is_file():
        raise ModelFolderError(f"{folder} has no encoder of its own to share")
    target = shared / ENCODER_WEIGHTS
    files = _weight_files(folder, ENCODER_WEIGHTS)
    if target.is_file():
        mine, theirs = build_encoder(config), build_encoder(config)
        load_encoder_weights(mine, own)
        load_encoder_weights(theirs, target)
        if any(not np.array_equal(a, b) for a, b in zip(mine.get_weights(), theirs.get_weights())):
            raise ModelFolderError(f"{target} holds other encoder weights than {own}: share into another folder")
        for file in files:
            file.unlink()
    else:
        shared.mkdir(parents=True, exist_ok=True)
        for file in files:
            file.replace(shared / file.name)
    reference = {"weights": os.path.relpath(target, folder), "sha256": weights_digest(target)}
    (folder / ENCODER_REFERENCE).write_text(json.dumps(reference, indent=1) + "\n")
    return target


def check_folder(folder: Path) -> tuple[ModelConfig, Vocabulary]:
    """Read config and vocabulary and check that the folder's files are all there and readable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a model folder (it does not exist)")
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise ModelFolderError(f"{folder} is missing {', '.join(missing)}")
    encoder_path(folder)
    _weight_files(folder, DECODER_WEIGHTS)
    try:
        config = ModelConfig.load(folder / "config.json")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{folder / 'config.json'}: {exc}") from exc
    try:
        vocab = Vocabulary.load(folder / "vocab.json")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{folder / 'vocab.json'}: {exc}") from exc
    return config, vocab


def save_folder(folder: Path, config: ModelConfig, vocab: Vocabulary, encoder, model, metrics: dict | None = None,
                train_config: dict | None = None, card: str | None = None, decoder_dtype: str = "float32") -> Path:
    """Write a model folder; weight files are sharded under 10 MB each. The encoder's weights are stored as
    float16, the decoder's as ``decoder_dtype`` (float16 for an ensemble's K decoders).

    Written whole or not at all: everything goes to a new folder beside it, which then takes the old
    one's place. If a write fails (a full disk), a :class:`ModelFolderError` says so and the folder as
    it was still loads. Files of the old folder that this does not write are kept, except its weights
    and its photo check, which belong to the old model (and encoder).
    """
    import shutil
    import uuid

    from .encoder import save_encoder_weights_float16
    from .model import save_model_weights

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f".{folder.name}.writing-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    try:
        config.save(work / "config.json")
        vocab.save(work / "vocab.json")
        save_encoder_weights_float16(encoder, config, work / ENCODER_WEIGHTS, max_shard_size=MAX_SHARD_GB)
        save_model_weights(model, work / DECODER_WEIGHTS, max_shard_size=MAX_SHARD_GB, dtype=decoder_dtype)
        if metrics is not None:
            (work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if train_config is not None:
            (work / "train_config.json").write_text(json.dumps(train_config, indent=2) + "\n")
        if card is not None:
            (work / "README.md").write_text(card)
        stale = ("encoder*.weights.*", "decoder*.weights.*", ENCODER_REFERENCE, PHOTO_CHECK)
        for old in folder.iterdir() if folder.is_dir() else ():
            if old.is_file() and not (work / old.name).exists() and not any(old.match(p) for p in stale):
                shutil.copy2(old, work / old.name)  # a file of the user's beside the model
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ModelFolderError(f"could not write the model folder {folder} ({exc}); "
                               "the folder as it was is untouched") from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        folder.rename(retired)
        work.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        work.rename(folder)
    return folder


def load_photo_check(folder: Path, config: ModelConfig) -> PhotoCheck | None:
    """The folder's photo check, or None if it has none; a damaged one is refused naming the file."""
    from .encoder import feature_shape

    path = Path(folder) / PHOTO_CHECK
    if not path.is_file():
        return None
    try:
        check = PhotoCheck.load(path)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{path} is not a photo check ({exc})") from exc
    if not check.fits(feature_shape(config)[-1]):
        raise ModelFolderError(f"{path} was made for another encoder ({check.mean.shape[0]} values, "
                               f"not 2 x {feature_shape(config)[-1]})")
    return check


@dataclass(frozen=True)
class ReadPhoto:
    """A photo read by :meth:`Captioner.read`, ready for the encoder."""

    image: Image.Image  # upright RGB, as :func:`~captioner.image.load_image` gives it
    pixels: np.ndarray  # (S, S, 3) float32, preprocessed for the encoder
    seconds: float  # how long reading and preprocessing took


@dataclass
class Description:
    """What :meth:`Captioner.describe` returns for one photo."""

    photo: Image.Image  # the photo as read: upright RGB (JPEGs decoded at a reduced scale when large)
    caption: Caption  # words, the attention map behind each word, score, and more (see Caption)
    hedged: str  # the caption worded by the model's confidence: "Probably a dog running on grass."
    beam_size: int
    seconds: dict = field(default_factory=dict)  # {"read": ..., "encoder": ..., "decoder": ...}
    verdict: Verdict = PHOTO_VERDICT  # not a photo of a scene? Then ``hedged`` says so instead of the caption

    @property
    def is_photo(self) -> bool:
        return self.verdict.is_photo

    @property
    def text(self) -> str:
        return self.caption.text

    @property
    def words(self) -> list[str]:
        return self.caption.words

    @property
    def attention(self) -> np.ndarray:
        return self.caption.attention  # (len(words), G, G)

    @property
    def score(self) -> float:
        return self.caption.score


class Captioner:
    """A loaded model folder: photo in, :class:`Description` out. Load once, use from any thread.

    The model serves one request at a time (a lock covers encoding and
    decoding): on a 2-core machine two at once only slow each other down.
    Photos that arrive together are better captioned together
    (:meth:`describe_read`), as the app does under load.
    """

    def __init__(self, config: ModelConfig, vocab: Vocabulary, encoder, model, folder: Path | None = None,
                 compute_dtype: str = "float32", encoder_weights: Path | None = None,
                 photo_check: PhotoCheck | None = None):
        from .encoder import serving_function

        self.config, self.vocab, self.encoder, self.model = config, vocab, encoder, model
        self.photo_check = photo_check
        self.folder = folder
        self.encoder_weights = encoder_weights  # the file the encoder was loaded from (shared or the folder's)
        self.compute_dtype = compute_dtype
        self.metrics = {}
        if folder and (Path(folder) / "metrics.json").is_file():
            self.metrics = json.loads((Path(folder) / "metrics.json").read_text())
        self._encode = serving_function(encoder, config, compute_dtype, encoder_weights)
        self._lock = threading.RLock()

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL, compute_dtype: str | None = None) -> "Captioner":
        folder = Path(folder)
        config, vocab = check_folder(folder)  # before building anything: a bad folder fails fast

        from .encoder import best_compute_dtype, build_encoder, load_encoder_weights
        from .model import build_model

        weights = encoder_path(folder)
        check = load_photo_check(folder, config)
        compute_dtype = compute_dtype or best_compute_dtype(config, weights)
        encoder = build_encoder(config, dtype=compute_dtype)
        model = build_model(config, len(vocab))
        for path, load in ((weights, lambda p: load_encoder_weights(encoder, p)),
                           (folder / DECODER_WEIGHTS, model.load_weights)):
            try:
                load(path)
            except (ValueError, OSError, KeyError) as exc:
                raise ModelFolderError(
                    f"{path}: the weights do not fit config.json and vocab.json "
                    f"({len(vocab)} words): {exc}") from exc
        return cls(config, vocab, encoder, model, folder, compute_dtype, weights, check)

    @property
    def decoder(self):
        return self.model.decoder

    @property
    def design(self) -> str:
        """"attention", "inject" or "merge" (see :mod:`captioner.model`)."""
        return self.config.decoder

    def describe(self, photo, beam_size: int | None = None, with_steps: bool = False) -> Description:
        """Caption one photo: a path, bytes, a file object, a PIL image or an array.

        ``beam_size`` defaults to the model's; ``with_steps`` records the five
        likeliest next words at every step (for the teacher view). Raises
        :class:`~captioner.image.ImageError` for a photo that cannot be read.
        """
        return self.describe_read([self.read(photo)], beam_size, with_steps)[0]

    def read(self, photo) -> "ReadPhoto":
        """Read and preprocess one photo (no model involved, so any thread may do it at any time).
        Raises :class:`~captioner.image.ImageError` for a photo that cannot be read."""
        start = time.perf_counter()
        image = load_image(photo, target_size=self.config.image_size)
        pixels = preprocess(image, self.config)  # (S, S, 3)
        return ReadPhoto(image, pixels, time.perf_counter() - start)

    def describe_read(self, photos: list["ReadPhoto"], beam_size: int | None = None,
                      with_steps: bool = False) -> list[Description]:
        """Caption photos read by :meth:`read`, all in one encoder call and one beam search (see
        :func:`~captioner.decoding.beam_search_batch`): each photo gets the caption it gets alone, in
        its own place. Each Description's ``seconds`` are what that photo waited for: its own reading,
        and the encoder and decoder time of the batch it was in."""
        beam_size = beam_size or self.config.beam_size
        if not photos:
            return []
        with self._lock:
            start = time.perf_counter()
            features = self.features(np.stack([p.pixels for p in photos]))  # (B, L, D)
            encoded = time.perf_counter()
            verdicts = self.judge(features)
            captions = beam_search_batch(self.decoder, self.vocab, features, beam_size, self.config.max_length,
                                         self.config.length_penalty, with_steps=with_steps,
                                         whole_endings=self.config.whole_endings,
                                         block_repeats=self.config.block_repeats)
            done = time.perf_counter()
        return [Description(p.image, caption, verdict.message or hedge(caption, self.config), beam_size,
                            {"read": p.seconds, "encoder": encoded - start, "decoder": done - encoded}, verdict)
                for p, caption, verdict in zip(photos, captions, verdicts, strict=True)]

    def warm_up(self, photos: int = 1) -> float:
        """Trace the encoder and compile every decoder step a beam search of up to ``photos`` photos at
        once needs (the app: its largest batch), on a blank photo, and on a machine new to it measure how
        the step is compiled fastest: what captions would otherwise wait for, and what would otherwise
        make memory grow under load. Returns the seconds it took."""
        from .decoding import warm_up

        start = time.perf_counter()
        with self._lock:
            size = self.config.image_size
            features = self.features(np.zeros((1, size, size, 3), np.float32))  # (1, L, D)
            self.judge(features)
            steps = warm_up(self.decoder, features[0], self.config.beam_size, photos)
        seconds = time.perf_counter() - start
        log.info("warmed up for up to %d photos at once: %d decoder steps compiled, %.1f s", photos, steps, seconds)
        return seconds

    def judge(self, features: np.ndarray) -> list[Verdict]:
        """Photos' features (B, L, D) -> is each a photo of a scene? (Always yes without a photo check.)"""
        if self.photo_check is None:
            return [PHOTO_VERDICT] * len(features)
        return self.photo_check.judge(features, self.config.photo_threshold)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed photos (B, S, S, 3) -> annotation vectors (B, L, D) float32."""
        out = np.asarray(self._encode(np.asarray(pixels, np.float32)), np.float32)  # (B, G, G, D)
        return out.reshape(out.shape[0], -1, out.shape[-1])

    def caption_features(self, features: np.ndarray, beam_size: int | None = None,
                         with_steps: bool = False) -> Caption:
        """Beam search from one photo's features (L, D): for evaluation on cached features."""
        with self._lock:
            return beam_search(self.decoder, self.vocab, features, beam_size or self.config.beam_size,
                               self.config.max_length, self.config.length_penalty, with_steps=with_steps,
                               whole_endings=self.config.whole_endings,
                               block_repeats=self.config.block_repeats)

    def greedy_batch(self, features: np.ndarray) -> list[Caption]:
        """Greedy captions for many photos' features (B, L, D) at once: for evaluation."""
        with self._lock:
            return greedy(self.decoder, self.vocab, features, self.config.max_length, self.config.length_penalty,
                          whole_endings=self.config.whole_endings, block_repeats=self.config.block_repeats)
