"""Is this a photo of a scene? A small classifier on the encoder's features, so the captioner can say when it is not.

Shown a page of text, a screenshot, a drawing, a blank photo or noise, the
captioner still describes people and dogs; a blind user cannot tell. The
encoder already knows the difference: its 196 region vectors of a page of text
look nothing like those of a street. :class:`PhotoCheck` is a softmax
regression over a summary of them (log(1 + x) of the mean and of the standard
deviation over the regions, 2 D values), trained by :func:`fit` on Flickr8k's
training photos against pictures :mod:`captioner.nonphotos` generates.

A picture is "not a photo" when p(photo) falls below ``config.photo_threshold``,
chosen on the dev photos so that at most a set share of them (default 0.5 %)
would be turned away; its kind is then the likeliest of the others. The
weights live in ``photo_check.json`` in the model folder (plain numbers, nothing
executable); a folder without that file has no check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "photo_check.json"
PHOTO = "photo"

MESSAGES = {
    "text": "This looks like a page of text; I describe photos of scenes and cannot read text.",
    "screen": "This looks like a screenshot; I describe photos of scenes and cannot read what is on a screen.",
    "drawing": "This looks like a drawing or a diagram; I describe photos of scenes, not drawings.",
    "blank": "This photo looks nearly blank, almost one colour; I cannot see anything in it to describe.",
    "noise": "This looks like random noise, not a photo of a scene; there is nothing in it I can describe.",
}


def summarise(features: np.ndarray) -> np.ndarray:
    """Region vectors (B, L, D) -> (B, 2 D): log(1 + mean) and log(1 + std) over the L regions."""
    features = np.asarray(features, np.float32)
    return np.concatenate([np.log1p(features.mean(axis=1)), np.log1p(features.std(axis=1))], axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Verdict:
    kind: str  # "photo", or one of MESSAGES
    p_photo: float

    @property
    def is_photo(self) -> bool:
        return self.kind == PHOTO

    @property
    def message(self) -> str | None:
        """What the listener hears instead of a caption, or None for a photo."""
        return None if self.is_photo else MESSAGES[self.kind]


@dataclass
class PhotoCheck:
    kinds: tuple[str, ...]  # "photo" first
    mean: np.ndarray  # (2 D,) standardisation of the summary
    scale: np.ndarray  # (2 D,)
    weights: np.ndarray  # (2 D, K)
    bias: np.ndarray  # (K,)
    record: dict  # how it was trained and what it measured

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(B, L, D) region vectors -> (B, K) probabilities of the kinds."""
        return self.probabilities_of(summarise(features))

    def probabilities_of(self, summary: np.ndarray) -> np.ndarray:
        return _softmax(((summary - self.mean) / self.scale) @ self.weights + self.bias)

    def judge(self, features: np.ndarray, threshold: float) -> list[Verdict]:
        """A verdict per picture: a photo unless p(photo) < ``threshold``, then the likeliest other kind."""
        return self.judge_probabilities(self.probabilities(features), threshold)

    def judge_probabilities(self, probs: np.ndarray, threshold: float) -> list[Verdict]:
        others = 1 + np.argmax(probs[:, 1:], axis=1)
        return [Verdict(PHOTO if p[0] >= threshold else self.kinds[o], float(p[0])) for p, o in zip(probs, others)]

    def save(self, path: str | Path) -> None:
        data = {"kinds": list(self.kinds), "summary": "log1p of the mean and of the std over regions",
                "mean": self.mean.round(6).tolist(), "scale": self.scale.round(6).tolist(),
                "weights": self.weights.round(6).tolist(), "bias": self.bias.round(6).tolist(),
                "record": self.record}
        Path(path).write_text(json.dumps(data, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PhotoCheck":
        data = json.loads(Path(path).read_text())
        kinds = tuple(data["kinds"])
        if kinds[0] != PHOTO or any(k not in MESSAGES for k in kinds[1:]):
            raise ValueError(f"{path}: unknown kinds {kinds}")
        check = cls(kinds, *(np.asarray(data[k], np.float32) for k in ("mean", "scale", "weights", "bias")),
                    record=data.get("record", {}))
        width = check.mean.shape[0]
        if check.scale.shape != (width,) or check.weights.shape != (width, len(kinds)) or \
                check.bias.shape != (len(kinds),):
            raise ValueError(f"{path}: the arrays do not fit together ({check.weights.shape} weights)")
        return check

    def fits(self, feature_dim: int) -> bool:
        return self.mean.shape[0] == 2 * feature_dim


def fit(summaries: dict[str, np.ndarray], l2: float = 1e-3, steps: int = 400, learning_rate: float = 0.05,
        seed: int = 0) -> PhotoCheck:
    """Softmax regression on summaries by kind (``"photo"`` and any of :data:`MESSAGES`), every kind
    weighted equally, by full-batch Adam with L2 on the weights. Deterministic for a seed."""
    kinds = (PHOTO,) + tuple(k for k in MESSAGES if k in summaries)
    x = np.concatenate([summaries[k] for k in kinds]).astype(np.float64)
    y = np.concatenate([np.full(len(summaries[k]), i) for i, k in enumerate(kinds)])
    weight = np.concatenate([np.full(len(summaries[k]), 1.0 / (len(kinds) * len(summaries[k]))) for k in kinds])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    x = (x - mean) / scale
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, (x.shape[1], len(kinds)))
    b = np.zeros(len(kinds))
    onehot = np.eye(len(kinds))[y]
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for t in range(1, steps + 1):
        error = (_softmax(x @ w + b) - onehot) * weight[:, None]  # d(weighted cross-entropy)/d(logits)
        grads = (x.T @ error + l2 * w, error.sum(axis=0))
        for i, (param, grad) in enumerate(zip((w, b), grads)):
            m, v = moments[2 * i], moments[2 * i + 1]
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad ** 2
            param -= learning_rate * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    record = {"trained_on": {k: int(len(summaries[k])) for k in kinds}, "l2": l2, "steps": steps}
    return PhotoCheck(kinds, mean.astype(np.float32), scale.astype(np.float32), w.astype(np.float32),
                      b.astype(np.float32), record)


def choose_threshold(p_photo: np.ndarray, false_alarms: float = 0.005, ceiling: float = 0.5) -> float:
    """The p(photo) below which a picture is turned away: at most ``false_alarms`` of these photos
    (the dev split's) fall below it, and never above ``ceiling`` (a picture is only turned away when
    the check finds it likelier not a photo)."""
    return float(min(ceiling, np.quantile(np.asarray(p_photo, np.float64), false_alarms)))
