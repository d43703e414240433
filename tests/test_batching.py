"""Dynamic batching: requests that arrive together share a model call, and each gets its own answer."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from captioner import app_logic
from captioner.batching import Batcher
from captioner.image import ImageError


def held_batcher(max_batch=8, fail_on=None, drop_one=False):
    """A Batcher whose first model call waits until released, so that later requests queue up behind it."""
    release, started, calls = threading.Event(), threading.Event(), []

    def run(kind, items):
        calls.append((kind, list(items)))
        if len(calls) == 1:
            started.set()
            assert release.wait(30)
        if fail_on is not None and fail_on in items:
            raise RuntimeError(f"model failed on {fail_on}")
        results = [(kind, item * 10) for item in items]
        return results[:-1] if drop_one and len(items) > 1 else results

    return Batcher(run, max_batch), release, started, calls


def wait_for_queue(batcher, count: int, seconds: float = 60) -> None:
    """Wait until ``count`` requests wait in the batcher; fail (never hang) if they do not arrive."""
    deadline = time.monotonic() + seconds
    while sum(len(v) for v in batcher._pending.values()) < count:
        assert time.monotonic() < deadline, "the requests never reached the batcher"
        time.sleep(0.01)


def submit_all(batcher, release, started, jobs):
    """Submit the first job, wait until the model is busy with it, submit the rest, then release the model."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        first = pool.submit(lambda: batcher.submit(*jobs[0]))
        assert started.wait(30)
        rest = [pool.submit(lambda job=job: batcher.submit(*job)) for job in jobs[1:]]
        wait_for_queue(batcher, len(jobs) - 1)
        release.set()
        futures = [first, *rest]
        return [f.exception() or f.result() for f in futures]


def test_requests_waiting_together_share_one_call_and_each_gets_its_own_result():
    batcher, release, started, calls = held_batcher(max_batch=8)
    results = submit_all(batcher, release, started, [("a", i) for i in range(6)])
    assert results == [("a", i * 10) for i in range(6)]
    assert [len(items) for _, items in calls] == [1, 5]  # the first alone, the five that waited together
    assert list(batcher.batch_sizes) == [1, 5]


def test_a_batch_holds_at_most_max_batch_requests_of_one_kind():
    batcher, release, started, calls = held_batcher(max_batch=3)
    jobs = [("a", 0)] + [("a", i) for i in range(1, 6)] + [("b", i) for i in range(6, 8)]
    results = submit_all(batcher, release, started, jobs)
    assert results == [(kind, i * 10) for kind, i in jobs]
    assert all(len(items) <= 3 for _, items in calls)
    for kind, items in calls:  # kinds (beam widths) never mix
        assert all((kind, i) in jobs for i in items)
    assert sorted(i for _, items in calls for i in items) == list(range(8))  # each request run exactly once


def test_a_failed_call_fails_only_its_own_requests_and_the_batcher_goes_on():
    batcher, release, started, calls = held_batcher(max_batch=8, fail_on=3)
    results = submit_all(batcher, release, started, [("a", 0), ("a", 2), ("a", 3), ("b", 4)])
    assert results[0] == ("a", 0) and results[3] == ("b", 40)
    assert all(isinstance(r, RuntimeError) for r in results[1:3])  # the batch that held 3
    assert batcher.submit("a", 5) == ("a", 50)  # the worker is still alive


def test_a_wrong_number_of_results_is_an_error_not_a_shifted_answer():
    batcher, release, started, calls = held_batcher(drop_one=True)
    results = submit_all(batcher, release, started, [("a", 0), ("a", 1), ("a", 2)])
    assert results[0] == ("a", 0)
    assert all(isinstance(r, RuntimeError) and "1 results for 2 requests" in str(r) for r in results[1:])
    with pytest.raises(ValueError):
        Batcher(lambda kind, items: items, max_batch=0)


def test_concurrent_visitors_get_their_own_photos_captions(tiny_captioner, synthetic_data, tmp_path, monkeypatch):
    """The app under load: photos captioned in one batch get exactly the captions they get alone,
    and a photo that cannot be read fails on its own."""
    root, truth = synthetic_data
    names = list(truth)[:5]
    state = app_logic.AppState(tiny_captioner, scratch=app_logic.Scratch(tmp_path / "scratch"))
    model, release, started = tiny_captioner.describe_read, threading.Event(), threading.Event()

    def held(photos, *args, **kwargs):
        if not started.is_set():
            started.set()
            assert release.wait(60)
        return model(photos, *args, **kwargs)

    monkeypatch.setattr(tiny_captioner, "describe_read", held)
    bad = tmp_path / "not-a-photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    sources = [str(root / "Images" / names[0])] + [str(root / "Images" / n) for n in names[1:]] + [str(bad)]
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        first = pool.submit(state.describe, sources[0], 1)
        assert started.wait(60)
        rest = [pool.submit(state.describe, s, 1) for s in sources[1:]]
        wait_for_queue(state.batcher, len(names) - 1)
        release.set()
        outcomes = [f.exception() or f.result() for f in [first, *rest]]
    assert isinstance(outcomes[-1], ImageError)
    assert [d.text for d in outcomes[:-1]] == [truth[n] for n in names]
    assert list(state.batcher.batch_sizes) == [1, len(names) - 1]
    alone = [tiny_captioner.describe(s, 1, with_steps=True) for s in sources[:-1]]
    for together, single in zip(outcomes[:-1], alone):
        assert together.caption.words == single.caption.words
        assert together.caption.log_prob == pytest.approx(single.caption.log_prob, abs=1e-4)
        assert [[w for w, _ in s] for s in together.caption.steps] == [[w for w, _ in s] for s in single.caption.steps]
