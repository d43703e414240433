"""Turning a finished training run into a model folder with scores and a model card.

The folder is written once, after everything in it is known: the hedging
thresholds are calibrated on the dev features and the test split is scored on
the test features, both read from the run's feature cache (extracted with the
encoder the folder ships, in the same arithmetic), so nothing is saved,
reloaded or extracted again. ``python -m captioner evaluate --model <folder>``
extracts the test split afresh with the folder's own encoder and gives the
same table.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from .config import ModelConfig
from .evaluate import calibrate_hedging, decode_all, format_table, score_features
from .training.record import Run, stage_settings

log = logging.getLogger(__name__)


def export_run(model, run: Run, out_dir: Path, beam_sizes=(1, 3, 5), coco: bool = False, command: str = "") -> dict:
    """Calibrate hedging on dev, score test, then write ``out_dir`` (weights, config, metrics, card) once."""
    from .encoder import build_encoder, load_encoder_weights
    from .pipeline import Captioner, save_folder

    config = run.config
    encoder = build_encoder(config)
    load_encoder_weights(encoder, run.encoder_weights)  # the float16 weights the features came from
    captioner = Captioner(config, run.vocab, encoder, model)  # decodes given features; its encoder is not run here

    dev_caps = decode_all(captioner, run.features("dev"), config.beam_size)
    hedging = calibrate_hedging(dev_caps, run.references("dev"))
    config = dataclasses.replace(config, hedge_sure=round(hedging["hedge_sure"], 4),
                                 hedge_possible=round(hedging["hedge_possible"], 4))
    captioner.config = config
    start = time.perf_counter()
    table = score_features(captioner, run.features("test"), run.references("test"), beam_sizes, coco)
    log.info("test split:\n%s", format_table(table))
    metrics = {
        "test": {str(k): v for k, v in table.items()},
        "dev_hedging": hedging,
        "shipped_beam_size": config.beam_size,
        "stage": run.stage,  # "xe" (cross-entropy), "finetune" (block5 too) or "scst" (self-critical), after "earlier_stages"
        "best_epoch": run.best_epoch,
        "best_dev_greedy": {run.monitor: run.best_score},  # the dev score that chose the epoch
        "epochs_run": run.epoch,
        "earlier_stages": run.earlier,
        "checkpoint_average": dataclasses.asdict(run.averaged) if run.averaged else None,
        "train_seconds": run.train_seconds,  # this stage's; each earlier stage records its own
        "history": run.history,
        "evaluation": "nltk corpus_bleu, all references per photo, captioner.vocab.tokenize; "
                      "reproduce: python -m captioner evaluate --model <this folder> --data-dir <flickr8k> --split test",
        "command": command,
        "training_features_dtype": run.compute_dtype,  # the encoder's arithmetic in extraction (evaluate uses it too)
        "test_seconds": time.perf_counter() - start,
    }
    save_folder(out_dir, config, run.vocab, encoder, model, metrics=metrics,
                train_config=dataclasses.asdict(run.train_config),
                card=model_card(config, metrics, table, len(run.vocab), dataclasses.asdict(run.train_config)))
    return metrics


def stage_story(stages: list[dict]) -> str:
    """The training stages in order, in words: "Cross-entropy (9 epochs, 68 minutes), then ..."."""
    words, self_critical = [], False
    for stage in stages:
        span = f"{stage.get('epochs')} epochs, {(stage.get('train_seconds') or 0) / 60:.0f} minutes"
        kind = stage.get("stage")
        if kind == "xe":
            words.append(f"cross-entropy ({span})")
        elif kind == "finetune":
            decoder = {"trained": " with the decoder", "frozen": " alone under the frozen decoder"}.get(
                stage.get("decoder"), "")
            words.append(f"VGG16's block5 trained{decoder} (cross-entropy on cached block4_pool features, {span})")
        elif kind == "scst":
            reward = "CIDEr-D counting the end of a caption as a word" if stage.get("reward_end") else "CIDEr-D"
            kept = ("; no epoch beat its start on dev, so the decoder is unchanged"
                    if stage.get("best_epoch") == 0 else "")
            what = f"reward {reward}, {span}{kept}"
            words.append(f"SCST again from that stage's best epoch, with a new optimiser ({what})" if self_critical
                         else f"self-critical sequence training (SCST, Rennie et al. 2017; {what})")
            self_critical = True
    text = ", then ".join(words)
    return text[:1].upper() + text[1:]


def training_stages(metrics: dict, train_config: dict) -> list[dict]:
    """A trained folder's stages, first to last, from its metrics.json and train_config.json."""
    return [s for s in metrics["earlier_stages"] if s.get("stage") != "start"] + [
        {"stage": metrics["stage"], "epochs": metrics["epochs_run"], "train_seconds": metrics["train_seconds"],
         "best_epoch": metrics["best_epoch"], **stage_settings(metrics["stage"], train_config)}]


def training_story(metrics: dict, train_config: dict) -> str:
    """How a trained folder was made, in words, with the dev score that chose its last stage's epoch."""
    (monitor, best), = metrics["best_dev_greedy"].items()
    stages = training_stages(metrics, train_config)
    start = next((s["dev"] for s in reversed(metrics["earlier_stages"]) if s.get("stage") == "start"), {})
    if len(stages) > 1:
        return (f"{stage_story(stages)}, all on 2 CPU cores. Dev scores (greedy) before the last stage: BLEU-4 "
                f"{start.get('dev_bleu4', float('nan')):.4f}, CIDEr-D {start.get('dev_cider', float('nan')):.4f}; "
                f"its best epoch {metrics['best_epoch']}: {monitor.removeprefix('dev_')} {best:.4f}.")
    return (f"Best dev {monitor.removeprefix('dev_')} (greedy) {best:.4f} after epoch {metrics['best_epoch']}; "
            f"training took {metrics['train_seconds'] / 60:.0f} minutes on 2 CPU cores.")


def ensemble_story(metrics: dict) -> str:
    """How an ensemble's members were made and what combining them did on dev."""
    beam = str(metrics["shipped_beam_size"])
    members, dev = metrics["members"], metrics["dev"]
    words = [f"{len(members)} decoders, each trained on its own (another random start, or another stage of a "
             f"run), on the same features."]
    for k, member in enumerate(members):
        row = dev[f"member{k}"][beam]
        story = (training_story(member["metrics"], member["train_config"]) if "best_dev_greedy" in member["metrics"]
                 else "its folder keeps no training record.")
        words.append(f"Decoder {k + 1} (`{member['folder']}`): {story} "
                     f"Alone, dev beam {beam}: BLEU-4 {100 * row['bleu4']:.1f}, CIDEr-D {100 * row['cider']:.1f}.")
    row = dev["ensemble"][beam]
    words.append(f"Together, dev beam {beam}: BLEU-4 {100 * row['bleu4']:.1f}, CIDEr-D {100 * row['cider']:.1f}.")
    return " ".join(words)


def model_card(config: ModelConfig, metrics: dict, table: dict, vocab_size: int, train_config: dict) -> str:
    from .encoder import feature_shape

    h = metrics["dev_hedging"]
    grid, _, width = feature_shape(config)
    if metrics["stage"] == "ensemble":
        first = metrics["members"][0]
        stages = training_stages(first["metrics"], first["train_config"])
        training = ensemble_story(metrics)
        decoders = (f"{config.ensemble} LSTM decoders with soft attention, the gating scalar beta and a deep\n"
                    "output layer (Xu et al., 2015), whose word distributions are averaged at every step\n"
                    "(their weights stored as float16 and measured as such)")
        files = ("`metrics.json` (all scores, and each member's own record: its scores, per-epoch history and "
                 "training settings)")
    else:
        stages = training_stages(metrics, train_config)
        training = training_story(metrics, train_config)
        decoders = "an LSTM decoder with soft attention, the gating scalar\nbeta and a deep output layer (Xu et al., 2015)"
        files = "`metrics.json` (all scores and the per-epoch history),\n`train_config.json`"
    tuned = next((s for s in stages if s.get("stage") == "finetune"), None)
    rules = "".join([", never ending a caption mid-phrase" if config.whole_endings else "",
                     ", never saying a thing twice (\"a bike on a bike\")" if config.block_repeats else ""])
    frozen = "blocks 1-4 frozen, block5 fine-tuned on Flickr8k" if tuned and tuned.get("best_epoch") else "frozen"
    return f"""# Show, Attend and Tell captioner: model card

**What it does.** Describes a photo in one English sentence and shows which
part of the photo each word came from (soft attention over a 14 x 14 grid).

**Architecture.** VGG16 up to `{config.encoder_layer}` ({frozen}, {grid * grid} regions of
{width} features) and {decoders}: embedding {config.embed_dim}, LSTM
{config.lstm_units}, attention {config.attention_dim}, dropout {config.dropout}, vocabulary
{vocab_size} words. Everything is in `config.json`.

**Encoder weights.** {config.encoder_weights}: torchvision's VGG16 IMAGENET1K_V1
convolutional weights (BSD-3-Clause, from torchvision; trained on ImageNet), stored
here as float16. Photos are resized whole to {config.image_size} x {config.image_size} (no crop) and
standardised with ImageNet's mean {config.pixel_mean} and std {config.pixel_std}.
The training features were extracted with {metrics['training_features_dtype']} arithmetic.

**Training data.** Flickr8k (Hodosh, Young & Hockenmaier, 2013), official split:
6,000 training photos x 5 captions; the dev split chose the epoch and the
hedging thresholds; the test split was scored once. {training}

**Test scores** (nltk `corpus_bleu` against all five references, in %):

{format_table(table)}

The app decodes with beam width {config.beam_size} and length penalty {config.length_penalty}{rules}.

**Hedged wording.** The mean log-probability per word decides the wording:
"Probably ..." at or above {config.hedge_sure:.3f}, "Possibly ..." at or above
{config.hedge_possible:.3f}, otherwise "I'm not sure, but perhaps ...". On dev, BLEU-1 of
each band: probably {100 * h.get('probably_bleu1', 0):.1f}, possibly {100 * h.get('possibly_bleu1', 0):.1f},
not sure {100 * h.get('not_sure_bleu1', 0):.1f}.

**Intended use.** Alt text drafts and a teaching tool for attention. Not for
decisions about people: it was trained on 6,000 Flickr photos, mostly of
people, dogs and outdoor scenes in the USA, and it inherits their biases
(for example, guessing gender from appearance). It often gets counts,
colours and small objects wrong, and it has never seen text, screenshots,
documents or medical images. It cannot read text in photos.

**Files.** `config.json`, `vocab.json`, `encoder.weights.json` and `decoder.weights.json`
(Keras 3 weights, each a manifest of shards under 10 MB), {files}. No pickles.
"""
