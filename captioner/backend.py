"""Everything that depends on the Keras backend, in one place.

The layers, the decoders and the encoder are written once with ``keras.ops``
and run under any Keras backend: TensorFlow is the default (and what the
shipped model was trained with); CI also runs the model, decoding and
save/load tests under JAX. What differs between backends lives here:

- how a function that calls Keras layers is compiled (:func:`compile_function`:
  ``tf.function`` under TensorFlow, ``jax.jit`` under JAX);
- what only TensorFlow has: the ``tf.data`` pipeline that feeds ``fit``
  (:func:`tf_dataset`) and the TFLite int8 encoder (:func:`int8_encode_function`,
  :func:`int8_flatbuffer`, :func:`tflite_function`).
"""
from __future__ import annotations

import os

import keras
import numpy as np


def name() -> str:
    return keras.backend.backend()


def compile_function(fn, owner, xla: bool = False):
    """``fn`` compiled; ``owner`` is the layer (or model) whose weights it reads.

    Under TensorFlow the graph reads the variables as they are when it runs,
    and is traced once for every batch size (the first dimension of each
    argument is left open), so calls with new batch sizes cost neither time nor
    memory; ``xla`` compiles it with XLA instead (``jit_compile``: fused
    kernels, one compile for each new input shape).
    Under JAX a jitted function would freeze the weights it saw when traced,
    so the weights are passed in as arguments on every call (new weights after
    ``load_weights`` or a training epoch are used at once, without retracing).
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        function = tf.function(fn, jit_compile=True) if xla else tf.function(fn)
        concrete = {}  # (shape, dtype) of each argument -> the graph traced for them

        def spec(a):  # a plain graph is traced once for any batch size; XLA compiles each shape
            shape = tuple(a.shape)
            return tf.TensorSpec(shape if xla or not shape else (None, *shape[1:]), a.dtype)

        def call(*args):  # the traced graph called directly: a decoder step is a few ms, tf.function's
            args = [tf.convert_to_tensor(a) for a in args]  # own dispatch about 1 ms of it
            specs = [spec(a) for a in args]
            key = tuple((tuple(s.shape), s.dtype) for s in specs)
            if key not in concrete:
                concrete[key] = function.get_concrete_function(*specs)
            return concrete[key](*args)

        return call
    if backend == "jax":
        import jax

        @jax.jit
        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(owner.variables, values))):
                return fn(*args)

        return lambda *args: pure([v.value for v in owner.variables], *args)
    return fn


def jit_compile(requested: bool) -> bool:
    """``Model.compile(jit_compile=...)`` for this backend.

    TensorFlow runs the train step as a graph either way, and XLA is opt-in
    (it was slower on the 2-core CPUs this project trains on). JAX has no
    graph mode besides XLA: without it every operation of every step runs
    eagerly, many times slower, so JAX always compiles.
    """
    return requested if name() == "tensorflow" else True


def to_numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def tf_dataset(one_epoch, signature: dict, length: int | None = None, prefetch: int = 2):
    """A tf.data pipeline for ``fit`` over a Python generator of dict batches (TensorFlow only).

    ``one_epoch()`` yields the batches of one epoch; ``signature`` maps each
    key to (shape, dtype), with None for the sizes that change from batch to
    batch (the batch and the caption length). Under other backends ``fit``
    takes the generator itself.
    """
    import tensorflow as tf

    specs = {key: tf.TensorSpec(shape, dtype) for key, (shape, dtype) in signature.items()}
    data = tf.data.Dataset.from_generator(one_epoch, output_signature=specs)
    if length is not None:  # batches per epoch, so that fit shows progress and knows where an epoch ends
        data = data.apply(tf.data.experimental.assert_cardinality(length))
    return data.prefetch(prefetch) if prefetch else data


def int8_encode_function(encoder, calibration: np.ndarray, threads: int | None = None):
    """The encoder quantised to int8, as a function from photos (B, S, S, 3) to features (B, G, G, D).

    :func:`int8_flatbuffer` run by :func:`tflite_function`: about twice the
    bfloat16 speed on the 2-core machines of the README
    (``benchmarks/extraction.py``), with BLEU kept (``benchmarks/int8_encoder.py --bleu``).
    """
    return tflite_function(int8_flatbuffer(encoder, calibration), threads)


def int8_flatbuffer(encoder, calibration: np.ndarray) -> bytes:
    """TFLite's full-integer post-training quantisation of ``encoder`` (TensorFlow only).

    Weights and activations int8, with the activation ranges taken from
    ``calibration`` (preprocessed photos, N x S x S x 3; the same photos and
    weights give the same model). Takes seconds (about 18 for VGG16 at 224 on 2 cores).
    """
    import tempfile

    import tensorflow as tf

    calibration = np.asarray(calibration, np.float32)
    if calibration.ndim != 4 or not len(calibration):
        raise ValueError("int8 quantisation needs at least one calibration photo (N, S, S, 3)")
    size = calibration.shape[1]
    with tempfile.TemporaryDirectory() as folder:
        encoder.export(folder, format="tf_saved_model", verbose=False,
                       input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([photo[None]] for photo in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def tflite_function(flatbuffer: bytes, threads: int | None = None):
    """A TFLite model (XNNPACK) as a function from photos (B, S, S, 3) to its output (B, ...).

    One photo at a time (the model's batch is 1), behind a lock: an
    interpreter must not run in two threads at once.
    """
    import threading

    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads or os.cpu_count())
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    lock = threading.Lock()

    def encode(pixels: np.ndarray) -> np.ndarray:
        out = []
        with lock:
            for photo in np.asarray(pixels, np.float32):
                interpreter.set_tensor(source, photo[None])
                interpreter.invoke()
                out.append(interpreter.get_tensor(target))
        return np.concatenate(out)

    return encode
