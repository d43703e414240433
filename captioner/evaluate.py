"""Scoring captions: BLEU-1..4 with nltk, and the coco-caption metrics when available.

Tokenisation: references and hypotheses both go through
:func:`captioner.vocab.tokenize` (lowercase, letters and digits only).
BLEU is nltk's ``corpus_bleu`` over all photos, each hypothesis against all
of its references (five for Flickr8k), without smoothing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def bleu_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    from nltk.translate.bleu_score import corpus_bleu

    weights = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]
    scores = corpus_bleu(references, hypotheses, weights=weights)
    return {f"bleu{n}": float(s) for n, s in enumerate(scores, start=1)}


def coco_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """BLEU, METEOR, ROUGE-L and CIDEr from pycocoevalcap (the paper's toolkit).

    Raises RuntimeError when pycocoevalcap or Java (which METEOR needs) is missing.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:
        raise RuntimeError("pip install pycocoevalcap to compute the coco-caption metrics") from exc
    refs = {i: [" ".join(r) for r in rs] for i, rs in enumerate(references)}
    hyps = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    out = {}
    bleu, _ = Bleu(4).compute_score(refs, hyps)
    out.update({f"coco_bleu{n}": float(s) for n, s in enumerate(bleu, start=1)})
    out["rouge_l"] = float(Rouge().compute_score(refs, hyps)[0])
    out["cider"] = float(Cider().compute_score(refs, hyps)[0])
    if shutil.which("java"):
        out["meteor"] = float(Meteor().compute_score(refs, hyps)[0])
    return out


def decode_all(captioner, features, beam_size: int, with_steps: bool = False, batch_size: int = 250):
    """Captions for many photos' features (N, L, D). Beam width 1 runs greedy in batches (the same result)."""
    import numpy as np

    if beam_size == 1:
        out = []
        for s in range(0, len(features), batch_size):
            out += captioner.greedy_batch(np.asarray(features[s:s + batch_size], np.float32))
        return out
    return [captioner.caption_features(np.asarray(f, np.float32), beam_size, with_steps) for f in features]


def split_features(captioner, data, split: str, cache_root, max_images: int | None = None, progress: bool = True,
                   dtype: str | None = None):
    """(file names, features) of a split, encoded by the model folder's own encoder and cached.

    ``dtype`` is the encoder's arithmetic (default: the captioner's).
    """
    from pathlib import Path

    from .features import extract_features, feature_cache_dir

    dtype = dtype or captioner.compute_dtype
    files = data.split(split, max_images)
    weights = captioner.encoder_weights
    cache_dir = feature_cache_dir(Path(cache_root), files, captioner.config, weights, dtype)
    cache = extract_features([data.path(f) for f in files], cache_dir, captioner.config, weights,
                             dtype=dtype, progress=progress)
    files = [f for f in files if f in cache]
    return files, cache.rows(files)


def score_features(captioner, features, references, beam_sizes=(3,), coco: bool = False,
                   captions: dict | None = None) -> dict:
    """Decode every photo's features with each beam width and score: {beam_size: {metric: value}}.

    Besides BLEU, CIDEr-D (``cider``) and the coco metrics, ``broken_endings`` is the share of
    captions that end mid-phrase ("sitting on a blue"; see
    :func:`captioner.grammar.broken_ending`) and ``repeats`` the share that say a thing twice
    ("a bike on a bike"; :func:`captioner.grammar.repeats`). ``captions``, if given, receives
    each beam width's :class:`~captioner.decoding.Caption` list.
    """
    from .cider import corpus_cider
    from .grammar import broken_ending, repeats

    table = {}
    for k in beam_sizes:
        decoded = decode_all(captioner, features, k)
        if captions is not None:
            captions[k] = decoded
        hypotheses = [c.words for c in decoded]
        scores = bleu_scores(references, hypotheses)
        scores["cider"] = corpus_cider(references, hypotheses)  # CIDEr-D, as pycocoevalcap's Cider
        scores["broken_endings"] = sum(map(broken_ending, hypotheses)) / max(1, len(hypotheses))
        scores["repeats"] = sum(map(repeats, hypotheses)) / max(1, len(hypotheses))
        if coco:
            try:
                scores.update(coco_scores(references, hypotheses))
            except RuntimeError as exc:
                scores["coco_error"] = str(exc)
        scores["photos"] = len(features)
        table[k] = scores
    return table


def evaluate_folder(model_dir, data_dir, split: str = "test", beam_sizes=(3,), cache_root="cache",
                    coco: bool = False, max_images: int | None = None, progress: bool = True,
                    length_penalty: float | None = None, compute_dtype: str | None = None,
                    captions_out: str | Path | None = None, whole_endings: bool | None = None,
                    block_repeats: bool | None = None) -> dict:
    """Score a model folder on a split: {beam_size: {metric: value}}.

    ``captions_out`` names a JSON-lines file for the captions of the first beam
    width: photo, caption, hedged wording, score and per-word log-probability.

    ``length_penalty``, ``whole_endings`` and ``block_repeats`` override the folder's own, to choose them
    on the dev split.
    ``compute_dtype`` is the encoder's arithmetic; by default the one its
    training features were extracted with (``metrics.json``), so that the test
    scores recorded there are reproduced.
    """
    import dataclasses

    from .flickr8k import load_data
    from .pipeline import Captioner

    metrics_file = Path(model_dir) / "metrics.json"
    if compute_dtype is None and metrics_file.is_file():
        compute_dtype = json.loads(metrics_file.read_text()).get("training_features_dtype")
    captioner = Captioner.load(model_dir, compute_dtype=None if compute_dtype == "int8" else compute_dtype)
    if length_penalty is not None:
        captioner.config = dataclasses.replace(captioner.config, length_penalty=length_penalty)
    if whole_endings is not None:
        captioner.config = dataclasses.replace(captioner.config, whole_endings=whole_endings)
    if block_repeats is not None:
        captioner.config = dataclasses.replace(captioner.config, block_repeats=block_repeats)
    data = load_data(data_dir)
    files, features = split_features(captioner, data, split, cache_root, max_images, progress, compute_dtype)
    decoded = {}
    table = score_features(captioner, features, [data.captions[f] for f in files], beam_sizes, coco, decoded)
    if captions_out:
        from .hedging import hedge

        rows = [{"image": f, "caption": c.text, "hedged": hedge(c, captioner.config), "score": round(c.score, 4),
                 "mean_log_prob": round(c.mean_log_prob, 4)} for f, c in zip(files, decoded[beam_sizes[0]])]
        Path(captions_out).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table


def format_table(table: dict) -> str:
    metrics = [m for m in ("bleu1", "bleu2", "bleu3", "bleu4", "coco_bleu4", "meteor", "rouge_l", "cider",
                           "broken_endings", "repeats") if any(m in row for row in table.values())]
    names = {"broken_endings": "broken endings %", "repeats": "repeats %", "cider": "CIDEr-D"}
    lines = ["| beam | " + " | ".join(names.get(m, m.upper().replace("_", "-")) for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for k, row in table.items():
        lines.append(f"| {k} | " + " | ".join(f"{100 * row[m]:.1f}" if m in row else "-" for m in metrics) + " |")
    return "\n".join(lines)


def calibrate_hedging(captions, references) -> dict:
    """Thresholds on the per-word log-probability for "Probably" / "Possibly" / "I'm not sure".

    Chosen on the dev split as the terciles of the model's own confidence,
    with the BLEU-1 of each band reported, so the wording can be checked to
    track how right the captions actually are.
    """
    import numpy as np

    conf = np.array([c.mean_log_prob for c in captions])
    sure, possible = float(np.quantile(conf, 2 / 3)), float(np.quantile(conf, 1 / 3))
    bands = {"probably": conf >= sure, "possibly": (conf < sure) & (conf >= possible), "not_sure": conf < possible}
    report = {"hedge_sure": sure, "hedge_possible": possible}
    for name, mask in bands.items():
        idx = np.flatnonzero(mask)
        if len(idx):
            report[f"{name}_bleu1"] = bleu_scores([references[i] for i in idx],
                                                  [captions[i].words for i in idx])["bleu1"]
            report[f"{name}_photos"] = int(len(idx))
    return report
