"""Ensembles: decoders trained apart on one encoder's features, choosing each word together.

    python -m captioner ensemble --models assets/model runs/seed1/model --data-dir ../shared/flickr8k \\
        --out runs/ensemble/model

Two decoders trained from different random starts make different mistakes;
the mean of their word distributions (:class:`captioner.model.EnsembleDecoder`)
makes fewer. :func:`combine` checks that the folders can be combined (one
design, one vocabulary, value for value the same encoder), writes their
decoders into one folder whose ``config.json`` says ``"ensemble": K`` (the
decoders' weights rounded to float16 and stored so, half the size), scores
every member and the ensemble on dev (the choice is made there), calibrates
the hedged wording on the ensemble's own dev captions, scores the test split
once, and keeps each member's record (``metrics.json``: ``members``). The
folder loads, serves and is evaluated like any other.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .vocab import Vocabulary

log = logging.getLogger(__name__)


def check_members(folders: list[Path]) -> tuple[list[ModelConfig], Vocabulary]:
    """The members' configs and their one vocabulary; a :class:`~captioner.pipeline.ModelFolderError` names
    the first folder that cannot join the first one's ensemble, and why."""
    from .encoder import build_encoder, load_encoder_weights
    from .pipeline import ModelFolderError, check_folder, encoder_path

    if len(folders) < 2:
        raise ModelFolderError(f"an ensemble needs at least two model folders, not {len(folders)}")
    checked = [check_folder(f) for f in folders]
    configs = [c for c, _ in checked]
    first, vocab = checked[0]
    reference = None
    for folder, (config, words) in zip(folders, checked):
        if config.ensemble != 1:
            raise ModelFolderError(f"{folder} is an ensemble already: list its members instead")
        other = {k: (v, first.architecture()[k]) for k, v in config.architecture().items()
                 if v != first.architecture()[k]}
        if other:
            raise ModelFolderError(f"{folder} is another design than {folders[0]}: "
                                   + ", ".join(f"{k} {a} not {b}" for k, (a, b) in other.items()))
        if words.words != vocab.words:
            raise ModelFolderError(f"{folder} has another vocabulary than {folders[0]} "
                                   f"({len(words)} words against {len(vocab)})")
        encoder = build_encoder(config)
        load_encoder_weights(encoder, encoder_path(folder))
        weights = encoder.get_weights()
        if reference is None:
            reference = weights
        elif any(not np.array_equal(a, b) for a, b in zip(weights, reference)):
            raise ModelFolderError(f"{folder} has another encoder than {folders[0]}: members must read the same "
                                   "features (train the second with --encoder-weights FIRST/encoder.weights.json)")
    return configs, vocab


def build_ensemble(folders: list[Path]):
    """(config, vocabulary, CaptionModel) of the members' decoders in one :class:`EnsembleDecoder`, member k
    holding folder k's weights. The config is the first folder's, with ``ensemble`` = K."""
    from .model import build_model, round_to_float16
    from .pipeline import DECODER_WEIGHTS

    configs, vocab = check_members(folders)
    config = dataclasses.replace(configs[0], ensemble=len(folders))
    model = build_model(config, len(vocab))
    for member, folder, own in zip(model.decoder.members, folders, configs):
        single = build_model(own, len(vocab))
        single.load_weights(Path(folder) / DECODER_WEIGHTS)
        member.set_weights(single.decoder.get_weights())
    round_to_float16(model)  # the folder stores K decoders as float16: everything is measured on those values
    return config, vocab, model


def combine(folders: list[Path], data_dir: Path, out: Path | None, beam_sizes=(1, 3, 5), coco: bool = False,
            cache_root: Path = Path("cache"), command: str = "") -> dict:
    """Write the ensemble of ``folders`` to ``out``, scored on dev (members and ensemble) and test (the
    ensemble, once); returns its metrics. Features come from train.py's cache of the first folder.

    With ``out=None`` it scores on dev alone and writes nothing (the test split is never read): to choose
    between sets of members before the one that is written and scored on test."""
    from .evaluate import calibrate_hedging, format_table, score_features
    from .export import model_card
    from .model import CaptionModel
    from .pipeline import PHOTO_CHECK, Captioner, save_folder
    from .training.run import folder_features

    folders = [Path(f) for f in folders]
    config, vocab, model = build_ensemble(folders)
    first, data, splits, cache, _, dtype = folder_features(folders[0], data_dir, cache_root)
    references = {s: [data.captions[f] for f in splits[s]] for s in ("dev", "test")}
    dev_features = cache.rows(splits["dev"])
    beam = config.beam_size
    dev = {}
    alone = dataclasses.replace(config, ensemble=1)
    for k, (folder, decoder) in enumerate(zip(folders, model.decoder.members)):  # each alone, the same rules
        member = Captioner(alone, vocab, first.encoder, CaptionModel(decoder))
        dev[f"member{k}"] = score_features(member, dev_features, references["dev"], (1, beam))
        log.info("dev, %s alone: %s", folder, _brief(dev[f"member{k}"]))
    ensemble = Captioner(config, vocab, first.encoder, model)
    decoded = {}
    dev["ensemble"] = score_features(ensemble, dev_features, references["dev"], (1, beam), captions=decoded)
    log.info("dev, the ensemble: %s", _brief(dev["ensemble"]))
    dev = {who: {str(k): v for k, v in rows.items()} for who, rows in dev.items()}  # what chooses the members
    if out is None:
        return {"dev": dev, "shipped_beam_size": beam}
    hedging = calibrate_hedging(decoded[beam], references["dev"])  # on the ensemble's own dev captions
    config = dataclasses.replace(config, hedge_sure=round(hedging["hedge_sure"], 4),
                                 hedge_possible=round(hedging["hedge_possible"], 4))
    ensemble.config = config
    start = time.perf_counter()
    table = score_features(ensemble, cache.rows(splits["test"]), references["test"], beam_sizes, coco)
    log.info("test split:\n%s", format_table(table))
    members = []
    for folder in folders:
        record = {"folder": str(folder)}
        for name in ("metrics.json", "train_config.json"):
            path = folder / name
            record[name.removesuffix(".json")] = json.loads(path.read_text()) if path.is_file() else {}
        members.append(record)
    metrics = {
        "test": {str(k): v for k, v in table.items()},
        "dev": dev,
        "dev_hedging": hedging,
        "shipped_beam_size": beam,
        "stage": "ensemble",
        "members": members,
        "evaluation": "nltk corpus_bleu, all references per photo, captioner.vocab.tokenize; "
                      "reproduce: python -m captioner evaluate --model <this folder> --data-dir <flickr8k> --split test",
        "command": command,
        "training_features_dtype": dtype,
        "test_seconds": time.perf_counter() - start,
    }
    save_folder(out, config, vocab, first.encoder, model, metrics=metrics,
                card=model_card(config, metrics, table, len(vocab), {}), decoder_dtype="float16")
    if (folders[0] / PHOTO_CHECK).is_file():  # it reads the encoder's features alone: the members' encoder
        shutil.copy2(folders[0] / PHOTO_CHECK, Path(out) / PHOTO_CHECK)
    return metrics



def _brief(rows: dict) -> str:
    return "; ".join(f"beam {k}: BLEU-1 {100 * r['bleu1']:.2f}, BLEU-4 {100 * r['bleu4']:.2f}, "
                     f"CIDEr-D {100 * r['cider']:.2f}" for k, r in rows.items())
