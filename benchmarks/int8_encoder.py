"""Would an int8 encoder extract features faster? VGG16 to block5_conv3 quantised with TFLite, timed.

    python benchmarks/int8_encoder.py [--data-dir ../shared/flickr8k] [--photos 48]

An exploration kept as a record, not a path the project uses. int8 arithmetic (AVX-512 VNNI)
is the other way, beside Winograd (winograd_layer.py), to do more than bfloat16 on a CPU whose
bfloat16 convolutions already run at its ceiling. This quantises the encoder fully to int8
with TFLite's post-training quantisation (calibrated on the first half of the photos), runs it
with XNNPACK on 2 threads, one photo at a time (TFLite's way), and prints its time per photo
beside the project's bfloat16 path and how close its features are to float32 ones
(cosine similarity per region, on the other half of the photos).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import encoder, photos, timed

from captioner.config import ModelConfig
from captioner.encoder import encode_function
from captioner.features import best_compute_dtype


def main():
    import tensorflow as tf

    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--photos", type=int, default=48)
    args = p.parse_args()
    config = ModelConfig()
    x = photos(args.data_dir, args.photos, config)
    calibration, test = x[: len(x) // 2], x[len(x) // 2:]
    float32 = encoder(config, "float32")
    size = config.image_size
    with tempfile.TemporaryDirectory() as folder:
        float32.export(folder, format="tf_saved_model", verbose=False,
                       input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([photo[None]] for photo in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        blob = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=blob, num_threads=2)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def int8_features():
        out = []
        for photo in test:
            interpreter.set_tensor(source, photo[None])
            interpreter.invoke()
            out.append(interpreter.get_tensor(target))
        return np.concatenate(out)

    dtype = best_compute_dtype()
    fn = encode_function(encoder(config, dtype), dtype)

    def project():
        return np.concatenate([fn(test[s:s + 32]).numpy() for s in range(0, len(test), 32)])

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
    print(f"int8 TFLite (XNNPACK, 2 threads, batch 1): {1000 * min(t_int8) / n:.0f} ms/photo")
    print(f"captioner.features ({dtype}, batch 32):     {1000 * min(t_ours) / n:.0f} ms/photo")
    print(f"int8 features against float32, cosine per region: mean {cosine.mean():.4f}, "
          f"1st percentile {np.percentile(cosine, 1):.4f}")


if __name__ == "__main__":
    main()
