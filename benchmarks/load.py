"""The app under load: many visitors at once, each with their own photos, through gradio_client.

Starts ``python app.py`` on 127.0.0.1 (a free port) with the given model folder, then runs
``--clients`` threads, each with its own ``gradio_client.Client``, each calling ``/describe``
(caption, heatmap grid and spoken caption: everything on) ``--requests`` times. Every request
sends a different photo: the bundled example photos in turn, each with one pixel changed from the
request's number, so that nothing is answered from the app's store of recent results.

Before the measured requests, ``--warmup`` requests (spread over the same clients) trace the
graphs. Prints errors, p50 and p95 latency, captions per second over the measured requests, and
the app's resident memory (its process and its children) after request 50 and after the last,
with the growth between them (goal: at most 5%).

The clients share the 2 cores with the server, so what a client spends is taken from the app.
gradio_client by default verifies TLS certificates, and builds a new HTTP client (loading its
certificate bundle, about 30 ms) for each of its five connections per call, even over plain
HTTP; ``--ssl-verify both`` (the default) measures the same load with the default clients and
with ``ssl_verify=False`` clients (nothing to verify on http://127.0.0.1), one after the other.

    python benchmarks/load.py [--model assets/model] [--clients 16] [--requests 10] [--warmup 40]
                              [--ssl-verify both|on|off]

Loopback only; the server is stopped at the end.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from app_latency import resident_mib

from captioner.pipeline import DEFAULT_EXAMPLES, DEFAULT_MODEL
from captioner.serve import AppDidNotStart, start_app, stop

STARTUP_SECONDS = 300
CALL_TIMEOUT = 300  # seconds for one call, queueing included
MEMORY_AT = 50  # requests served (warm-up included) when memory is first read


def photo_variants(folder: Path, count: int) -> list[Path]:
    """``count`` different photos: the bundled examples in turn, one pixel changed per copy."""
    from PIL import Image

    examples = sorted(Path(DEFAULT_EXAMPLES).glob("*.jpg"))
    if not examples:
        raise SystemExit(f"no example photos in {DEFAULT_EXAMPLES}")
    images = [Image.open(p).convert("RGB") for p in examples]
    paths = []
    for i in range(count):
        image = images[i % len(images)].copy()
        image.putpixel((0, 0), (i % 256, i // 256 % 256, 11))
        path = folder / f"photo{i:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


def tree_resident_mib(pid: int) -> float:
    """Resident memory of a process and its live children, in MiB (Linux)."""
    total = resident_mib(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_resident_mib(int(c)) for c in children if c)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (1-64)")
    parser.add_argument("--requests", type=int, default=10, help="measured /describe calls per client (1-100)")
    parser.add_argument("--warmup", type=int, default=40, help="unmeasured calls first, over all clients")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--ssl-verify", choices=("both", "on", "off"), default="both",
                        help="gradio_client's ssl_verify: on (its default), off, or both, one after the other")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 100 or not 0 <= args.warmup <= 1000:
        parser.error("--clients must be 1-64, --requests 1-100 and --warmup 0-1000")
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model folder; train one or pass --model")

    from gradio_client import Client, handle_file

    passes = {"both": (True, False), "on": (True,), "off": (False,)}[args.ssl_verify]
    measured = args.clients * args.requests
    total = args.warmup + measured * len(passes)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        photos = photo_variants(Path(tmp), total)
        try:
            process, url = start_app({"CAPTIONER_MODEL": str(args.model)}, Path(tmp) / "app.log", STARTUP_SECONDS)
        except AppDidNotStart as exc:
            raise SystemExit(str(exc)) from exc
        try:
            served, memory, lock = [0], {}, threading.Lock()

            def call(client, photo: Path, errors: list[str]) -> float:
                start = time.perf_counter()
                try:
                    out = client.predict(handle_file(str(photo)), args.beam_size, api_name="/describe")
                    if not out[0] or len(out[4]) != len(out[3]) or not out[5] or not out[6]:
                        raise RuntimeError(f"incomplete answer (caption, alt texts, grid, audio): {out}")
                except Exception as exc:  # counted, not fatal: the benchmark reports every error
                    with lock:
                        errors.append(f"{photo.name}: {type(exc).__name__}: {exc}"[:300])
                took = time.perf_counter() - start
                with lock:
                    served[0] += 1
                    if served[0] in (MEMORY_AT, total):
                        memory[served[0]] = tree_resident_mib(process.pid)
                return took

            def make_clients(verify: bool) -> list:
                return [Client(url, verbose=False, ssl_verify=verify, httpx_kwargs={"timeout": CALL_TIMEOUT})
                        for _ in range(args.clients)]

            warm = photos[:args.warmup]
            if warm:
                clients, errors = make_clients(passes[0]), []
                with ThreadPoolExecutor(max_workers=args.clients) as pool:
                    list(pool.map(lambda i: call(clients[i % args.clients], warm[i], errors), range(len(warm))))
            print(f"{args.clients} clients x {args.requests} /describe calls (beam {args.beam_size}, heatmaps and "
                  f"speech on) per pass, {len(set(photos))} different photos, after {args.warmup} warm-up calls")
            for n, verify in enumerate(passes):
                clients, errors = make_clients(verify), []
                batch = photos[args.warmup + n * measured:args.warmup + (n + 1) * measured]

                def client_loop(k: int) -> list[float]:
                    return [call(clients[k], p, errors) for p in batch[k * args.requests:(k + 1) * args.requests]]

                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.clients) as pool:
                    times = [t for ts in pool.map(client_loop, range(args.clients)) for t in ts]
                wall = time.perf_counter() - start
                print(f"clients with ssl_verify={verify}{' (gradio_client default)' if verify else ''}:")
                print(f"  errors: {len(errors)}")
                for e in errors[:5]:
                    print(f"    {e}")
                print(f"  latency: p50 {np.median(times):.2f} s, p95 {np.percentile(times, 95):.2f} s, "
                      f"max {max(times):.2f} s")
                print(f"  throughput: {measured / wall:.2f} captions/s ({measured} in {wall:.1f} s; goal: at least 6)")
            first, last = memory.get(MEMORY_AT), memory.get(total)
            if first and last:
                print(f"app resident memory: {first:.0f} MiB after request {MEMORY_AT}, {last:.0f} MiB after request "
                      f"{total}: {100 * (last / first - 1):+.1f}% (goal: at most +5%)")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
