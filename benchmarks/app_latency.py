"""Latency of the web app as a client sees it: what one press of Caption costs, through gradio_client.

Starts ``python app.py`` on 127.0.0.1 (a free port) with the given model folder, then, N times:

- ``/describe``: one call from the photo to the caption, the heatmaps (the grid image with a
  labelled heatmap per word, and their alt texts) and the spoken caption, downloaded by the
  client. This is "submit to caption, heatmaps and audio", the figure the goals are about
  (p50 at most 1 s for the page; issue 10: at most 300 ms).
- the same ``/describe`` from a client made with ``ssl_verify=False``: gradio_client by default
  builds a new HTTP client for each of its five connections per call, loading its certificate
  bundle each time (about 30 ms), even over plain HTTP, where there is nothing to verify;
- a round of three calls, as a client wanting them one at a time would make: /caption, /speak
  (the hedged caption), /heatmaps. The app keeps recent results by photo content, so /heatmaps
  does not caption the same photo again.

Each round uses a new copy of the photo with one pixel changed, so that no call is answered from
the previous round's kept result. Prints p50 and p90 per call. Loopback only; the server is
stopped at the end.

Then, with the server stopped, the same /describe work in this process without Gradio
(``AppState.describe_everything`` on the same photo files: reading, model, grid, speech),
split into its parts, so that what Gradio and the transport add is the difference.

    python benchmarks/app_latency.py [--model assets/model] [--runs 20] [--beam-size 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from captioner.pipeline import DEFAULT_EXAMPLES, DEFAULT_MODEL
from captioner.serve import AppDidNotStart, start_app, stop

STARTUP_SECONDS = 300
CALL_TIMEOUT = 120  # seconds for one call


def default_photo(folder: Path) -> Path:
    """The first bundled example photo, or a drawn one (a red disc on blue) if there is none."""
    examples = sorted(Path(DEFAULT_EXAMPLES).glob("*.jpg"))
    if examples:
        return examples[0]
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (448, 448), "blue")
    ImageDraw.Draw(image).ellipse((112, 112, 336, 336), fill="red")
    path = folder / "red_circle.png"
    image.save(path)
    return path


def variant(photo: Path, index: int, folder: Path) -> Path:
    """A copy of ``photo`` with its top-left pixel set from ``index``: new content, same caption work."""
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    image.putpixel((0, 0), (index % 256, index // 256 % 256, 7))
    path = folder / f"round{index}.png"
    image.save(path)
    return path


def resident_mib(pid: int) -> float:
    """The resident memory of a process in MiB (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder")
    parser.add_argument("-n", "--runs", type=int, default=20, help="measured rounds (1-1000)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--photo", type=Path, help="photo to caption (default: first example photo)")
    parser.add_argument("--beam-size", type=int, help="beam width (default: the model's)")
    parser.add_argument("--rate", type=int, default=175, help="speech rate, words per minute")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000 or not 0 <= args.warmup <= 100:
        parser.error("--runs must be 1-1000 and --warmup 0-100")
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model folder; train one or pass --model")

    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory(prefix="app-latency-") as tmp:
        photo = args.photo or default_photo(Path(tmp))
        start = time.perf_counter()
        try:
            process, url = start_app({"CAPTIONER_MODEL": str(args.model)}, Path(tmp) / "app.log", STARTUP_SECONDS)
        except AppDidNotStart as exc:
            raise SystemExit(str(exc)) from exc
        print(f"app ready in {time.perf_counter() - start:.1f} s; photo {photo}")
        warmed = [line for line in (Path(tmp) / "app.log").read_text().splitlines() if line.startswith("Warmed up")]
        print(f"  of which the app's own warm-up: {warmed[0] if warmed else 'not logged'}")
        try:
            client = Client(url, verbose=False, httpx_kwargs={"timeout": CALL_TIMEOUT})
            beam = [args.beam_size] if args.beam_size else []
            # gradio_client verifies certificates by default, and builds a new HTTP client (loading its
            # certificate bundle, about 30 ms) for every connection, even over plain HTTP: this one does not
            plain = Client(url, verbose=False, ssl_verify=False, httpx_kwargs={"timeout": CALL_TIMEOUT})
            times: dict[str, list[float]] = {"/describe": [], "/describe, ssl_verify=False": [], "/caption": [],
                                              "/speak": [], "/heatmaps": [], "3-call round": []}
            for index in range(args.warmup + args.runs):
                took = {}
                for key, which, k in (("/describe", client, 0), ("/describe, ssl_verify=False", plain, 1)):
                    fresh = handle_file(str(variant(photo, 3 * index + k, Path(tmp))))  # written before the clock
                    t0 = time.perf_counter()
                    out = which.predict(fresh, *beam, api_name="/describe")
                    took[key] = time.perf_counter() - t0
                    if not out[6] or len(out[4]) != len(out[3]):
                        raise SystemExit(f"/describe did not return audio and one alt text per word: {out}")
                one = handle_file(str(variant(photo, 3 * index + 2, Path(tmp))))
                t0 = time.perf_counter()
                _, hedged, _, _ = client.predict(one, *beam, api_name="/caption")
                took["/caption"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                client.predict(hedged, args.rate, api_name="/speak")
                took["/speak"] = time.perf_counter() - t1
                t2 = time.perf_counter()
                client.predict(one, *beam, api_name="/heatmaps")
                took["/heatmaps"] = time.perf_counter() - t2
                took["3-call round"] = time.perf_counter() - t0
                if index >= args.warmup:
                    for key, value in took.items():
                        times[key].append(value)
            print(f"caption: {hedged!r}")
            print(f"{'call':<28} {'p50 ms':>8} {'p90 ms':>8}   ({args.runs} rounds after {args.warmup} warm-up)")
            for key, values in times.items():
                print(f"{key:<28} {1000 * np.median(values):8.0f} {1000 * np.percentile(values, 90):8.0f}")
            for key in ("/describe", "/describe, ssl_verify=False"):
                p50 = 1000 * np.median(times[key])
                print(f"goals, {key} (submit to caption, heatmaps and audio): p50 at most 1000 ms "
                      f"({'met' if p50 <= 1000 else 'not met'}), at most 300 ms ({'met' if p50 <= 300 else 'not met'})")
            print(f"app resident memory after {args.warmup + args.runs} rounds: {resident_mib(process.pid):.0f} MiB")
            client_costs(lambda which: which.predict(handle_file(str(variant(photo, 9999, Path(tmp)))), *beam,
                                                     api_name="/describe"), client, plain)
        finally:
            stop(process)
        in_process(args, photo, Path(tmp), np.median(times["/describe"]))


def client_costs(describe, client, plain) -> None:
    """What one /describe costs gradio_client itself: the HTTP requests and new ``httpx`` clients it
    makes (counted by wrapping httpx for one call of each client), and what making one costs."""
    import httpx

    counts = {"requests": 0, "clients": 0}
    send, init = httpx.Client.send, httpx.Client.__init__

    def counting_send(self, *a, **k):
        counts["requests"] += 1
        return send(self, *a, **k)

    def counting_init(self, *a, **k):
        counts["clients"] += 1
        init(self, *a, **k)

    for name, which in (("default client", client), ("ssl_verify=False", plain)):
        counts.update(requests=0, clients=0)
        httpx.Client.send, httpx.Client.__init__ = counting_send, counting_init
        try:
            describe(which)
        finally:
            httpx.Client.send, httpx.Client.__init__ = send, init
        print(f"one /describe, {name}: {counts['requests']} HTTP requests, {counts['clients']} new httpx clients")
    for verify in (True, False):
        took = []
        for _ in range(10):
            t0 = time.perf_counter()
            httpx.Client(verify=verify).close()
            took.append(time.perf_counter() - t0)
        print(f"making one httpx.Client(verify={verify}): p50 {1000 * np.median(took):.1f} ms")


def in_process(args, photo: Path, folder: Path, client_p50: float) -> None:
    """The /describe work without Gradio, on the same photo files, with its parts timed."""
    from captioner import app_logic, speech

    captioner, error = app_logic.load_captioner(args.model)
    if captioner is None:
        raise SystemExit(error)
    state = app_logic.AppState(captioner, speech_status=speech.check())
    parts: dict[str, list[float]] = {"read": [], "encoder": [], "decoder": [], "grid and speech": [], "all": []}
    for index in range(args.warmup + args.runs):
        path = variant(photo, 3 * index, folder)  # the file the default client uploaded in that round
        t0 = time.perf_counter()
        done = state.describe_everything(str(path), args.beam_size, None, args.rate)
        took = time.perf_counter() - t0
        if index < args.warmup:
            continue
        seconds = done.described.seconds
        for key in ("read", "encoder", "decoder"):
            parts[key].append(seconds.get(key, float("nan")))
        parts["grid and speech"].append(took - sum(seconds.get(k, 0.0) for k in ("read", "encoder", "decoder")))
        parts["all"].append(took)
    print(f"the same /describe work in this process, without Gradio ({args.runs} rounds):")
    for key, values in parts.items():
        print(f"  {key:<16} p50 {1000 * np.median(values):6.0f} ms")
    print(f"  Gradio, HTTP and the client add about {1000 * (client_p50 - np.median(parts['all'])):.0f} ms "
          f"to the p50 of /describe")


if __name__ == "__main__":
    main()
