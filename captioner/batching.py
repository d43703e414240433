"""Requests that arrive together share one model call: the app's dynamic batching.

Gradio runs each request in its own thread. Every thread hands its photo to
one :class:`Batcher` and waits. A worker thread takes whatever has arrived
(up to ``max_batch`` of one kind) and runs the model on all of it at once,
then hands each thread its own result. When requests come one at a time,
each is run at once, alone, with no waiting window; when many come at once,
they queue while the model works and the next call takes them all, so the
encoder's and decoder's per-call cost is paid once per batch, not once per
photo.

Unlike Gradio's ``batch=True``, an error stays with the request that caused
it: a photo that cannot be read is refused before it joins a batch, and if a
model call fails, only the requests in that call get its error.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from typing import Callable, Hashable

log = logging.getLogger(__name__)

MAX_BATCH = 8  # photos per model call (benchmarks/load.py: 16 clients)


class Batcher:
    """``run(kind, items) -> results`` (one result per item, in order) called on batches of one ``kind``.

    ``submit(kind, item)`` blocks until its item's result is ready and returns it (or raises
    the error ``run`` raised for its batch). Thread-safe; the worker is a daemon thread
    started at the first request.
    """

    def __init__(self, run: Callable[[Hashable, list], list], max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run, self.max_batch = run, max_batch
        self._pending: OrderedDict[Hashable, list[tuple[object, Future]]] = OrderedDict()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the sizes of the latest model calls (tests, logs)

    def submit(self, kind: Hashable, item):
        done: Future = Future()
        with self._ready:
            self._pending.setdefault(kind, []).append((item, done))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="captioner-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return done.result()

    def _take(self) -> tuple[Hashable, list[tuple[object, Future]]]:
        """The oldest kind's waiting requests, up to max_batch (waits until there are some)."""
        with self._ready:
            while not self._pending:
                self._ready.wait()
            kind, waiting = next(iter(self._pending.items()))
            batch, rest = waiting[:self.max_batch], waiting[self.max_batch:]
            if rest:
                self._pending[kind] = rest
                self._pending.move_to_end(kind)  # other kinds go next: none waits behind a long queue
            else:
                del self._pending[kind]
            return kind, batch

    def _work(self) -> None:
        while True:
            kind, batch = self._take()
            self.batch_sizes.append(len(batch))
            try:
                results = self._run(kind, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} requests")
            except Exception as exc:  # the waiting requests get it; the worker lives on
                log.exception("a batch of %d failed", len(batch))
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results):
                done.set_result(result)
