"""A model folder: how it is written, checked and loaded, and :class:`Captioner`, which uses it.

A model folder holds everything needed to rebuild the exact model, and
nothing executable:

    config.json           ModelConfig: architecture, preprocessing, decoding, hedging
    vocab.json            the vocabulary, as a list of words
    encoder.weights.h5    VGG16 up to block5_conv3, float16 (Keras weights format)
    decoder.weights.h5    the attention decoder (Keras weights format)
    metrics.json          scores and how they were measured
    train_config.json     the training settings, for the record
    README.md             the model card
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .data import Vocabulary
from .decoding import Caption, beam_search, greedy
from .image import load_image, preprocess

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"
REQUIRED = ("config.json", "vocab.json", "encoder.weights.h5", "decoder.weights.h5")


class ModelFolderError(ValueError):
    pass


def check_folder(folder: Path) -> tuple[ModelConfig, Vocabulary]:
    """Read config and vocabulary and check that the folder's files agree with each other."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a model folder (it does not exist)")
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise ModelFolderError(f"{folder} is missing {', '.join(missing)}")
    for name in REQUIRED[2:]:
        head = (folder / name).read_bytes()[:8]
        if head.startswith(b"version "):
            raise ModelFolderError(f"{folder / name} is a Git LFS pointer, not the weights: run `git lfs pull`")
    try:
        config = ModelConfig.load(folder / "config.json")
        vocab = Vocabulary.load(folder / "vocab.json")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFolderError(f"{folder}: {exc}") from exc
    if len(vocab) != config.vocab_size:
        raise ModelFolderError(
            f"{folder}: vocab.json has {len(vocab)} words but config.json says vocab_size={config.vocab_size}"
        )
    return config, vocab


def save_folder(folder: Path, config: ModelConfig, vocab: Vocabulary, encoder, model, metrics: dict | None = None,
                train_config: dict | None = None, card: str | None = None) -> Path:
    from .encoder import save_encoder_weights_float16
    from .model import save_model_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / "config.json")
    vocab.save(folder / "vocab.json")
    save_encoder_weights_float16(encoder, config, folder / "encoder.weights.h5")
    save_model_weights(model, folder / "decoder.weights.h5")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if train_config is not None:
        (folder / "train_config.json").write_text(json.dumps(train_config, indent=2) + "\n")
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


class Captioner:
    """A loaded model folder: photo in, :class:`Caption` out. Load once, use from any thread."""

    def __init__(self, config: ModelConfig, vocab: Vocabulary, encoder, model, folder: Path | None = None,
                 compute_dtype: str = "float32"):
        from .encoder import encode_function

        self.config, self.vocab, self.encoder, self.model = config, vocab, encoder, model
        self.folder = folder
        self.compute_dtype = compute_dtype
        self.metrics = {}
        if folder and (Path(folder) / "metrics.json").is_file():
            self.metrics = json.loads((Path(folder) / "metrics.json").read_text())
        self._encode = encode_function(encoder, compute_dtype)
        self._lock = threading.Lock()  # TensorFlow graphs are safe, but keep one photo at a time on 2 cores

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_MODEL, compute_dtype: str | None = None) -> "Captioner":
        folder = Path(folder)
        config, vocab = check_folder(folder)  # before importing TensorFlow: a bad folder fails fast

        from .encoder import build_encoder, load_encoder_weights
        from .features import best_compute_dtype
        from .model import build_model

        compute_dtype = compute_dtype or best_compute_dtype()
        encoder = build_encoder(config, dtype=compute_dtype)
        model = build_model(config)
        try:
            load_encoder_weights(encoder, folder / "encoder.weights.h5")
            model.load_weights(folder / "decoder.weights.h5")
        except (ValueError, OSError) as exc:
            raise ModelFolderError(f"{folder}: the weight files do not fit config.json ({exc})") from exc
        return cls(config, vocab, encoder, model, folder, compute_dtype)

    @property
    def decoder(self):
        return self.model.decoder

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed photos (B, S, S, 3) -> annotation vectors (B, L, D) float32."""
        out = self._encode(np.asarray(pixels, np.float32)).numpy().astype(np.float32)  # (B, G, G, D)
        return out.reshape(out.shape[0], -1, self.config.feature_dim)

    def prepare_image(self, source):
        """Anything :func:`load_image` takes -> (the upright RGB photo, encoder input)."""
        image = load_image(source, target_size=self.config.image_size)
        return image, preprocess(image, self.config)

    def caption(self, source, beam_size: int | None = None, with_steps: bool = False) -> Caption:
        """Caption one photo (path, bytes, PIL image or array). Raises ImageError for bad input."""
        _, pixels = self.prepare_image(source)
        return self.caption_features(self.features(pixels[None])[0], beam_size, with_steps)

    def caption_features(self, features: np.ndarray, beam_size: int | None = None,
                         with_steps: bool = False) -> Caption:
        beam_size = beam_size or self.config.beam_size
        with self._lock:
            return beam_search(self.decoder, self.vocab, features, beam_size, self.config.max_length,
                               self.config.length_penalty, with_steps=with_steps)

    def greedy_batch(self, features: np.ndarray) -> list[Caption]:
        with self._lock:
            return greedy(self.decoder, self.vocab, features, self.config.max_length, self.config.length_penalty)
