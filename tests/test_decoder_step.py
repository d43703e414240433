"""How the decoder step is compiled: a plain graph or XLA, chosen by measuring, with row buckets."""
import json

import numpy as np
import pytest

from captioner import decoding
from captioner.config import ModelConfig
from captioner.decoding import (STEP_COMPILERS, _Steps, beam_search, beam_search_batch, best_step_compiler, greedy,
                                row_bucket)
from captioner.encoder import feature_shape
from captioner.model import build_model
from captioner.vocab import SPECIALS, Vocabulary


def _decoder(seed=5):
    import keras

    keras.utils.set_random_seed(seed)
    config = ModelConfig(image_size=32, embed_dim=8, lstm_units=8, attention_dim=8, dropout=0.0)
    decoder = build_model(config, 12).decoder
    bias = decoder.logits.bias.numpy()
    bias[2] = 1.0  # <end> about as likely as a word: searches end after different numbers of steps
    decoder.logits.bias.assign(bias)
    grid, _, _ = feature_shape(config)
    return decoder, grid * grid


VOCAB = Vocabulary(list(SPECIALS) + ["a", "on", "dog", "man", "red", "runs", "and", "grass"])


def test_row_buckets_cover_every_row_count_with_little_padding():
    for rows in range(1, 400):
        bucket = row_bucket(rows)
        assert bucket >= rows and (bucket - rows) / bucket < 1 / 3
        assert bucket & (bucket - 1) == 0 or (bucket // 3) & (bucket // 3 - 1) == 0  # 2^k or 3 * 2^k
    assert [row_bucket(n) for n in range(1, 10)] == [1, 2, 3, 4, 6, 6, 8, 8, 12]
    # the app's largest batch (8 photos, beam 3): nine compiles serve every row count up to 24
    assert len({row_bucket(n) for n in range(1, 25)}) == 9


@pytest.mark.parametrize("whole_endings", [False, True])
def test_xla_step_gives_the_graph_steps_captions(monkeypatch, whole_endings):
    """Padding to a bucket must not reach a caption: XLA's searches equal the graph's, photo by photo."""
    decoder, regions = _decoder()
    features = np.random.default_rng(4).normal(size=(5, regions, 512)).astype(np.float32) * 3
    results = {}
    for compiler in STEP_COMPILERS:
        steps = _Steps(decoder, compiler)
        monkeypatch.setitem(decoding._steps, decoder, steps)
        results[compiler] = (beam_search_batch(decoder, VOCAB, features, 3, 8, 0.7, whole_endings=whole_endings)
                             + [beam_search(decoder, VOCAB, f, 3, 8, 0.7, whole_endings=whole_endings)
                                for f in features]
                             + greedy(decoder, VOCAB, features, 8, whole_endings=whole_endings))
        assert steps.padded == (compiler == "xla")
    graph, xla = results["graph"], results["xla"]
    assert len({tuple(c.words) for c in graph}) > 1  # different photos, different captions
    for g, x in zip(graph, xla, strict=True):
        for a, b in zip([g, *g.alternatives], [x, *x.alternatives], strict=True):
            assert a.words == b.words and a.ended == b.ended
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
            np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


def test_xla_sampling_draws_what_the_graph_draws(monkeypatch):
    decoder, regions = _decoder()
    features = np.random.default_rng(1).normal(size=(3, regions, 512)).astype(np.float32)
    drawn = {}
    for compiler in STEP_COMPILERS:
        monkeypatch.setitem(decoding._steps, decoder, _Steps(decoder, compiler))
        drawn[compiler] = decoding.sample(decoder, VOCAB, features, 5, 8, np.random.default_rng(0))
    assert drawn["xla"].shape == (15, 10)
    np.testing.assert_array_equal(drawn["graph"], drawn["xla"])


def _fake_measure(seconds, difference, calls):
    def measure(compiler):
        calls.append(compiler)
        out = np.zeros((3, 4), np.float32) + (difference if compiler == "xla" else 0.0)
        return seconds[compiler], out
    return measure


@pytest.mark.parametrize("seconds, difference, expected", [
    ({"graph": 0.006, "xla": 0.0045}, 1e-5, "xla"),
    ({"graph": 0.006, "xla": 0.0058}, 1e-5, "graph"),  # within STEP_GAIN: not worth a compile per shape
    ({"graph": 0.006, "xla": 0.003}, 0.1, "graph"),  # faster but not the same numbers
    ({"graph": 0.004, "xla": 0.006}, 0.0, "graph"),
])
def test_step_compiler_is_measured_once_and_remembered(tmp_path, monkeypatch, seconds, difference, expected):
    monkeypatch.delenv(decoding.ENV_STEP, raising=False)
    decoder, regions = _decoder()
    cache, calls = tmp_path / "decoder-step.json", []
    choice = best_step_compiler(_Steps(decoder), (regions, 512), cache, _fake_measure(seconds, difference, calls))
    assert choice == expected
    assert sorted(calls) == sorted(list(STEP_COMPILERS) * decoding.STEP_ROUNDS)
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["compiler"] == expected and entry["seconds"] == seconds
    # the next process reads the file instead of measuring
    assert best_step_compiler(_Steps(decoder), (regions, 512), cache, _fake_measure(seconds, difference, calls)) \
        == expected
    assert len(calls) == 2 * decoding.STEP_ROUNDS
    # another decoder shape is another measurement
    best_step_compiler(_Steps(decoder), (regions + 1, 512), cache, _fake_measure(seconds, difference, calls))
    assert len(calls) == 4 * decoding.STEP_ROUNDS and len(json.loads(cache.read_text())) == 2


def test_step_compiler_can_be_forced(tmp_path, monkeypatch):
    decoder, regions = _decoder()
    never = _fake_measure({}, 0, [])
    monkeypatch.setenv(decoding.ENV_STEP, "xla")
    assert best_step_compiler(_Steps(decoder), (regions, 512), tmp_path / "c.json", never) == "xla"
    assert not (tmp_path / "c.json").exists()
    monkeypatch.setenv(decoding.ENV_STEP, "fast")
    with pytest.raises(ValueError, match="CAPTIONER_DECODER_STEP='fast'"):
        best_step_compiler(_Steps(decoder), (regions, 512), tmp_path / "c.json")


def test_step_compiler_really_measured(tmp_path, monkeypatch):
    """Without a fake: both compilers run a real step, and their numbers agree."""
    monkeypatch.delenv(decoding.ENV_STEP, raising=False)
    decoder, regions = _decoder()
    steps = _Steps(decoder)
    choice = best_step_compiler(steps, (regions, 512), tmp_path / "c.json")
    (entry,) = json.loads((tmp_path / "c.json").read_text()).values()
    assert choice == entry["compiler"] in STEP_COMPILERS
    assert all(0 < entry["seconds"][c] < 1 for c in STEP_COMPILERS)
    assert entry["difference"] < decoding.STEP_AGREEMENT
    assert ("xla", True) in steps._compiled and ("graph", True) in steps._compiled


def test_the_first_search_measures_and_later_searches_use_the_choice(tmp_path, monkeypatch):
    monkeypatch.delenv(decoding.ENV_STEP, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    decoder, regions = _decoder()
    features = np.random.default_rng(2).normal(size=(regions, 512)).astype(np.float32)
    beam_search(decoder, VOCAB, features, 3, 6)
    (entry,) = json.loads((tmp_path / "captioner" / "decoder-step.json").read_text()).values()
    assert decoding._functions(decoder).compiler == entry["compiler"]


def _traces(monkeypatch, compiler: str) -> list:
    """Force the step ``compiler`` and record the argument shapes of every trace (or XLA compile) the
    decoding module's compiled functions make from now on."""
    monkeypatch.setenv(decoding.ENV_STEP, compiler)
    traced = []
    original = decoding.compile_function

    def counting(fn, owner, xla=False):
        def traced_fn(*args):  # runs in Python only while TensorFlow traces (or JAX jits) it
            traced.append([tuple(getattr(a, "shape", ())) for a in args])
            return fn(*args)
        return original(traced_fn, owner, xla)

    monkeypatch.setattr(decoding, "compile_function", counting)
    return traced


@pytest.mark.parametrize("compiler", STEP_COMPILERS)
def test_warm_up_leaves_nothing_for_the_first_captions_to_compile(monkeypatch, tiny_model_dir, synthetic_data,
                                                                  compiler):
    from captioner.pipeline import Captioner

    traced = _traces(monkeypatch, compiler)
    captioner = Captioner.load(tiny_model_dir, compute_dtype="float32")
    captioner.warm_up()
    assert traced and decoding._functions(captioner.decoder).compiler == compiler
    warmed = len(traced)
    root, _ = synthetic_data
    photos = sorted((root / "Images").glob("*.jpg"))[:6]
    captions = [captioner.describe(p).caption for p in photos]
    assert all(c.words for c in captions)
    assert len(traced) == warmed, traced[warmed:]


@pytest.mark.parametrize("compiler", STEP_COMPILERS)
def test_warm_up_for_batches_leaves_nothing_to_compile_for_any_batch_the_app_makes(
        monkeypatch, tiny_model_dir, synthetic_data, compiler):
    """The app warms up for its largest batch: afterwards no batch of 1 to that many photos, whatever
    rows its searches step with, traces or compiles anything (so memory stops growing under load)."""
    from captioner.pipeline import Captioner

    traced = _traces(monkeypatch, compiler)
    captioner = Captioner.load(tiny_model_dir, compute_dtype="float32")
    captioner.warm_up(photos=4)
    warmed = len(traced)
    # prepare (a plain graph: one trace for any batch), then the beam step: one graph, or one XLA compile
    # for each (photo bucket, row bucket)
    assert warmed == 1 + (1 if compiler == "graph" else len(decoding.step_shapes(3, 4))), traced
    assert traced[0] == [(None, *traced[0][0][1:])]
    root, _ = synthetic_data
    photos = [captioner.read(p) for p in sorted((root / "Images").glob("*.jpg"))[:4]]
    for count in (4, 3, 2, 1):
        described = captioner.describe_read(photos[:count], beam_size=3)
        assert [d.caption.words for d in described] == [captioner.describe_read([p], 3)[0].caption.words
                                                        for p in photos[:count]]
    assert len(traced) == warmed, traced[warmed:]


def test_step_shapes_are_the_buckets_a_search_of_that_many_photos_can_meet():
    assert decoding.step_shapes(3, 1) == [(1, 1), (1, 2), (1, 3)]
    assert [decoding.photo_bucket(n) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]
    shapes = decoding.step_shapes(3, 8)  # the app: 8 photos at beam 3
    assert len(shapes) == 24 and max(shapes) == (8, 24)
    assert all(rows <= 3 * photos for photos, rows in shapes)
