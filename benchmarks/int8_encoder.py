"""Would an int8 encoder extract features faster? VGG16 to block5_conv3 quantised with TFLite, timed.

    python benchmarks/int8_encoder.py [--data-dir ../shared/flickr8k] [--photos 48]
    python benchmarks/int8_encoder.py --data-dir ../shared/flickr8k --bleu assets/model   # + test BLEU

The evidence behind ``train.py --dtype int8``: int8 arithmetic (AVX-512 VNNI) does more than
bfloat16 on a CPU whose bfloat16 convolutions already run at its ceiling. This quantises the
encoder with :func:`captioner.backend.int8_encode_function` (calibrated on the first half of the
photos), and prints its time per photo beside the project's bfloat16 path and how close its
features are to float32 ones (cosine similarity per region, on the other half of the photos).
With ``--bleu MODEL``, it also quantises that model folder's encoder (calibrated on 32 training
photos), captions the test split from int8 features with the folder's decoder (beam 3) and
prints BLEU beside the folder's own bfloat16 features.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import encoder, photos, timed

from captioner.config import ModelConfig
from captioner.backend import int8_encode_function
from captioner.encoder import best_compute_dtype, encode_function


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--photos", type=int, default=48)
    p.add_argument("--bleu", type=Path, default=None, help="a model folder to score on int8 features")
    args = p.parse_args()
    if args.bleu and not args.data_dir:
        p.error("--bleu needs --data-dir")
    config = ModelConfig()
    x = photos(args.data_dir, args.photos, config)
    calibration, test = x[: len(x) // 2], x[len(x) // 2:]
    float32 = encoder(config, "float32")
    run = int8_encode_function(float32, calibration)  # what captioner.features uses for --dtype int8

    def int8_features():
        return run(test)

    dtype = best_compute_dtype(config)
    fn = encode_function(encoder(config, dtype), dtype)

    def project():
        return np.concatenate([np.asarray(fn(test[s:s + 32])) for s in range(0, len(test), 32)])

    int8_features(), project()  # warm up
    t_int8, t_ours = [], []
    for _ in range(3):  # alternating, best run of each (see extraction.py)
        t_int8 += timed(int8_features, 1)
        t_ours += timed(project, 1)
    quantised, reference = int8_features(), float32.predict(test, verbose=0)
    cosine = np.sum(quantised * reference, -1) / (
        np.linalg.norm(quantised, axis=-1) * np.linalg.norm(reference, axis=-1) + 1e-9)
    n = len(test)
    print(f"photos: {n} timed ({'Flickr8k' if args.data_dir else 'random'}), {len(calibration)} for calibration")
    print(f"int8 TFLite (XNNPACK, one photo at a time): {1000 * min(t_int8) / n:.0f} ms/photo")
    print(f"captioner.features ({dtype}, batch 32):      {1000 * min(t_ours) / n:.0f} ms/photo")
    print(f"int8 features against float32, cosine per region: mean {cosine.mean():.4f}, "
          f"1st percentile {np.percentile(cosine, 1):.4f}")
    if args.bleu:
        bleu(args.bleu, args.data_dir)


def bleu(model_dir: Path, data_dir: Path) -> None:
    """Test-split BLEU of the model folder's decoder on int8 features and on its own bfloat16 ones."""
    from captioner.flickr8k import load_data
    from captioner.encoder import build_encoder, load_encoder_weights
    from captioner.evaluate import bleu_scores, decode_all, evaluate_folder, format_table
    from captioner.image import load_and_preprocess
    from captioner.pipeline import Captioner, encoder_path

    captioner = Captioner.load(model_dir)
    config = captioner.config
    data = load_data(data_dir)
    float32 = build_encoder(config)
    load_encoder_weights(float32, encoder_path(model_dir))
    calibration = np.stack([load_and_preprocess(data.path(f), config) for f in data.split("train")[:32]])
    run = int8_encode_function(float32, calibration)
    files = data.split("test")
    features = np.concatenate([run(load_and_preprocess(data.path(f), config)[None]) for f in files])
    features = features.reshape(len(files), -1, features.shape[-1])  # (N, L, D)
    hypotheses = [c.words for c in decode_all(captioner, features, 3)]
    int8 = bleu_scores([data.captions[f] for f in files], hypotheses)
    own = evaluate_folder(model_dir, data_dir, "test", (3,), progress=False)[3]
    print(f"test split, beam 3, {len(files)} photos: int8 features, then the folder's {captioner.compute_dtype} ones")
    print(format_table({"int8": int8, captioner.compute_dtype: own}).replace("| beam |", "| features |"))


if __name__ == "__main__":
    main()
