"""Self-critical sequence training (Rennie et al., 2017): the second stage, after cross-entropy.

For every training photo the decoder samples ``scst_samples`` captions
(:func:`captioner.decoding.sample`, dropout off); each is rewarded by its
CIDEr-D against the photo's five references, with document frequencies from
all training references (:class:`captioner.cider.CiderD`); the baseline of a
caption is the mean reward of the photo's other samples, so a caption is made
likelier exactly when it beats its siblings (``scst_baseline="greedy"``: the
reward of the photo's greedy caption, as Rennie et al. did). :class:`SelfCriticalModel`
follows that policy gradient in Keras's own ``fit``; the checkpoints, exact
resume, early stopping (on dev CIDEr-D, greedy) and logs are those of
cross-entropy training.

SCST is known to learn broken endings ("sitting on a blue"): CIDEr pays for
the n-grams before them and does not miss the object. Sampling here follows
the decoder's ``whole_endings`` rule, as beam search does at serving time,
so no caption the policy learns from ends mid-phrase, and its ``block_repeats``
rule, so none says a thing twice ("a bike on a bike"). The loss scores each
word under those same rules (``end_blocked``, ``repeat_blocked``): scored
under the unmasked distribution instead, every caption worse than its
siblings made ``<end>`` likelier exactly where it may not be drawn, nothing
ever pushed it back, and greedy captions began to run on ("a man is sitting
on a skateboard on a skateboard") until dev CIDEr-D collapsed (0.44 to 0.003
in three epochs). With ``scst_reward_end`` the reward also counts the end of
a caption as a word, so ending where people end ("a bike <end>") pays and
filler before the end ("... on a bike <end>" after "riding a bike") costs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np

from .. import backend
from ..config import ModelConfig, TrainConfig
from ..vocab import Vocabulary
from .batches import EpochBatches, bucket_widths, encode_captions
from .checkpoints import load_decoder_weights
from .record import Run, stage_settings

log = logging.getLogger(__name__)

END_WORD = "<end>"  # how the reward writes the end of a finished caption (scst_reward_end)


class SelfCriticalBatches(EpochBatches):
    """Batches of captions sampled by the decoder as it is now, with their rewards and advantages.

    Each batch: ``photos`` training photos in an order set by (seed, epoch),
    ``samples`` captions each, drawn with a generator seeded by (seed, epoch,
    batch), so a resumed run draws what the uninterrupted run would have.
    Captions are padded to the first length bucket they fit (few shapes: few
    graphs to build).
    """

    def __init__(self, decoder, vocab: Vocabulary, features: np.ndarray, scorer, photos: int, samples: int,
                 max_length: int, seed: int = 0, whole_endings: bool = True, epoch: int = 0,
                 references: list[list[list[int]]] | None = None, baseline: str = "mean",
                 block_repeats: bool = False, reward_end: bool = False):
        super().__init__()
        if baseline not in ("mean", "greedy"):
            raise ValueError(f"baseline must be 'mean' or 'greedy', not {baseline!r}")
        if samples < 2 and baseline == "mean":
            raise ValueError("self-critical training needs at least 2 samples per photo (one is the others' baseline)")
        self.baseline = baseline
        self.decoder, self.vocab, self.features, self.scorer = decoder, vocab, features, scorer
        self.photos, self.samples, self.max_length = photos, samples, max_length
        self.seed, self.whole_endings, self.block_repeats, self.epoch = seed, whole_endings, block_repeats, epoch
        self.reward_end = reward_end  # the scorer's references end with END_WORD: so do finished captions
        self.widths = bucket_widths(max_length)
        self.references = references  # per photo, its reference captions as <start> .. <end> ids (or None)
        self.plan()

    def plan(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.features))
        self.batches = [order[s:s + self.photos] for s in range(0, len(order) - self.photos + 1, self.photos)]

    def __getitem__(self, index):
        from ..decoding import blocked_ends, blocked_repeats, greedy, sample

        photos = np.sort(self.batches[index])  # sorted: h5/memmap reads in order
        features = np.asarray(self.features[photos])  # (B, L, D) float16
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tokens = sample(self.decoder, self.vocab, features, self.samples, self.max_length, rng,
                        whole_endings=self.whole_endings, block_repeats=self.block_repeats)  # (B * K, max_length + 2)
        words = [self.vocab.decode(row[1:]) for row in tokens]
        ended = [self.vocab.end_id in row[1:] for row in tokens]
        reward = self.scorer.scores(self.rewarded(words, ended), np.repeat(photos, self.samples))  # (B * K,)
        by_photo = reward.reshape(-1, self.samples)  # (B, K)
        if self.baseline == "greedy":  # Rennie et al.: a sample pays when it beats what greedy decoding says
            said = greedy(self.decoder, self.vocab, features, self.max_length, whole_endings=self.whole_endings,
                          block_repeats=self.block_repeats)
            baseline = self.scorer.scores(self.rewarded([c.words for c in said], [c.ended for c in said]),
                                          photos)[:, None]  # (B, 1)
        else:
            baseline = (by_photo.sum(axis=1, keepdims=True) - by_photo) / (self.samples - 1)  # the others' mean
        advantage = (by_photo - baseline).reshape(-1)
        longest = max(len(w) for w in words)
        width = next(b for b in self.widths if longest <= b)
        captions = tokens[:, : width + 2]  # <start> w_1 .. w_n <end> <pad> ..
        batch = {"features": np.repeat(features, self.samples, axis=0), "captions": captions,
                 "end_blocked": blocked_ends(self.vocab, captions, self.whole_endings).astype(np.float32),
                 "advantage": advantage.astype(np.float32), "reward": reward.astype(np.float32)}
        if self.block_repeats:  # (B * K, T, R): the words the sampler ruled out, step by step
            batch["repeat_blocked"] = blocked_repeats(self.vocab, captions, True)
        if self.references is not None:  # one human caption per photo, drawn with the same generator
            chosen = [self.references[p][rng.integers(len(self.references[p]))] for p in photos]
            refs = np.zeros((len(photos), max(map(len, chosen))), np.int32)
            for j, ids in enumerate(chosen):
                refs[j, : len(ids)] = ids
            batch["references"], batch["reference_features"] = refs, features
        return batch

    def rewarded(self, words: list[list[str]], ended: list[bool]) -> list[list[str]]:
        """The captions as the reward reads them: with ``reward_end``, a finished one ends with END_WORD."""
        if not self.reward_end:
            return words
        return [w + [END_WORD] if e else w for w, e in zip(words, ended)]

    prefetch = 0  # no read-ahead: each batch is sampled with the weights of the step before it

    def signature(self) -> dict:
        width = self.features.shape[1:]
        signature = {"features": ((None,) + width, "float16"), "captions": ((None, None), "int32"),
                     "end_blocked": ((None, None), "float32"), "advantage": ((None,), "float32"),
                     "reward": ((None,), "float32")}
        if self.block_repeats:
            signature["repeat_blocked"] = ((None, None, None), "int32")
        if self.references is not None:
            signature.update(references=((None, None), "int32"), reference_features=((None,) + width, "float16"))
        return signature


def start_from_folder(folder: Path) -> tuple[ModelConfig, Vocabulary, Path, list[dict], str | None]:
    """(config, vocabulary, decoder weights, the stages that made it, the arithmetic of its training
    features) of a model folder that block5 fine-tuning or SCST starts from.

    The stages are the folder's own ``earlier_stages`` followed by its last stage in brief, so a
    model made from a model folder records, and its card names, every stage from the first.
    """
    from ..pipeline import DECODER_WEIGHTS, ModelFolderError, check_folder

    config, vocab = check_folder(folder)
    if config.ensemble > 1:
        raise ModelFolderError(f"{folder} is an ensemble of {config.ensemble} decoders, which trains no further: "
                               "start from one of its members (metrics.json lists them)")
    metrics_file = Path(folder) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    train_file = Path(folder) / "train_config.json"
    trained = json.loads(train_file.read_text()) if train_file.is_file() else {}
    (monitor, best), = (metrics.get("best_dev_greedy") or {"dev_bleu4": metrics.get("best_dev_bleu4_greedy")}).items()
    last = {"stage": metrics.get("stage", "xe"), "from": str(folder), "epochs": metrics.get("epochs_run"),
            "train_seconds": metrics.get("train_seconds"), "best_epoch": metrics.get("best_epoch"),
            "monitor": monitor, "best_score": best, "history": metrics.get("history", []),
            **stage_settings(last_stage=metrics.get("stage", "xe"), train_config=trained)}
    stages = [dict(s) for s in metrics.get("earlier_stages", [])] + [last]
    tuned = [s for s in stages if s.get("stage") == "finetune"]
    if tuned and "decoder" not in tuned[-1] and trained.get("finetune_block5"):  # written before stages said it
        tuned[-1].update(stage_settings("finetune", trained))
    return config, vocab, Path(folder) / DECODER_WEIGHTS, stages, metrics.get("training_features_dtype")


def train_scst(data_dir: Path, run_dir: Path, config: ModelConfig, vocab: Vocabulary, start_weights: Path,
               tcfg: TrainConfig, encoder_weights: Path, cache_root: Path, earlier: list[dict] | None = None,
               resume: bool = False, dtype: str | None = None, progress: bool = True):
    """SCST from ``start_weights`` (the cross-entropy stage's best, or a model folder's decoder).

    Writes its own checkpoints in ``run_dir``; with ``resume`` it continues
    from the latest one (weights, Adam's state, record). Returns the model
    with the best epoch's weights (on dev CIDEr-D) and the :class:`Run`.
    """
    from ..cider import CiderD
    from ..flickr8k import load_data
    from ..model import SelfCriticalModel, build_decoder
    from .callbacks import DevScores
    from .run import begin_stage, fit_with_callbacks, prepare_features, resumable

    keras.utils.set_random_seed(tcfg.seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, saved_dtype = resumable(run_dir, resume, config, vocab, "self-critical")
    data = load_data(data_dir, seed=tcfg.seed)
    splits, cache, cache_dir, weights, dtype = prepare_features(data, config, tcfg, encoder_weights, cache_root,
                                                                dtype or saved_dtype, progress)
    references = [data.captions[f] for f in splits["train"]]
    # document frequencies of the training references; with scst_reward_end each ends with END_WORD, so
    # "a bike <end>" is a 2-gram people write and "on a <end>" is not
    scorer = CiderD([[r + [END_WORD] for r in refs] for refs in references] if tcfg.scst_reward_end else references)

    keras.utils.set_random_seed(tcfg.seed)
    model = SelfCriticalModel(build_decoder(config, len(vocab)), xe_weight=tcfg.scst_xe_weight, name="captioner")
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(tcfg.scst_learning_rate, global_clipnorm=tcfg.clip_norm),
                  jit_compile=backend.jit_compile(tcfg.jit_compile))
    dev = DevScores(cache.rows(splits["dev"]), [data.captions[f] for f in splits["dev"]], vocab, config.max_length,
                    whole_endings=config.whole_endings, block_repeats=config.block_repeats)
    fresh = Run(config=config, train_config=tcfg, vocab=vocab, run_dir=run_dir, data_dir=Path(data_dir),
                cache_dir=cache_dir, encoder_weights=weights, compute_dtype=dtype, splits=splits, stage="scst",
                earlier=list(earlier or []))
    run = begin_stage(model, checkpoint, fresh, lambda: load_decoder_weights(model, start_weights, file=True), dev)

    encoded = None
    if tcfg.scst_xe_weight:  # the references the cross-entropy term reads, within the length limit
        encoded = [[c for c in encode_captions(refs, vocab) if len(c) - 2 <= config.max_length] or
                   encode_captions(refs, vocab)[:1] for refs in references]
    batches = SelfCriticalBatches(model.decoder, vocab, cache.rows(splits["train"]), scorer, tcfg.scst_photos,
                                  tcfg.scst_samples, min(tcfg.scst_max_words, config.max_length), seed=tcfg.seed,
                                  whole_endings=config.whole_endings, references=encoded,
                                  baseline=tcfg.scst_baseline, block_repeats=config.block_repeats,
                                  reward_end=tcfg.scst_reward_end)
    if not len(batches):
        raise ValueError(f"{len(references)} training photos make no batch of {tcfg.scst_photos}")
    log.info("self-critical training: %d batches of %d photos x %d samples", len(batches), tcfg.scst_photos,
             tcfg.scst_samples)
    batches.start_at(run.epoch)
    fit_with_callbacks(model, run, batches, dev, resumed=bool(checkpoint), progress=progress)
    if run.best_epoch:
        load_decoder_weights(model, run.best_checkpoint)
    else:  # no epoch beat the start on dev: what comes out is the start, not the last epoch's weights
        load_decoder_weights(model, start_weights, file=True)
    log.info("best %s %.4f after self-critical epoch %d", run.monitor, run.best_score, run.best_epoch)
    return model, run
