"""Offline text-to-speech into WAV files: pyttsx3 (with espeak-ng) first, the espeak-ng program second.

pyttsx3 keeps one engine per process and its espeak driver is not thread-safe.
Reused within one process it also misbehaves: asked for 375 words per minute
after an earlier request, it spoke at 175 in some runs and at other rates in
others, while a fresh process got the rate right every time. So each request
runs pyttsx3 in a new child process (``python -m captioner.speech``, about
0.2 s), one request at a time behind a lock, under a time limit; a hung
child is killed. If pyttsx3 fails, the ``espeak-ng`` program is tried. If
neither works, :func:`check` says so and the app captions without speech.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RATE = 175  # words per minute, espeak-ng's own default
MIN_RATE = 80
MAX_RATE = 400
TIMEOUT = 30.0  # seconds for one synthesis
MAX_CHARS = 2000  # a caption is a sentence; this bounds the work a request can ask for
ENGINES = ("pyttsx3", "espeak-ng")

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_lock = threading.Lock()


class SpeechError(RuntimeError):
    """Speech could not be made; the message says why."""


@dataclass(frozen=True)
class SpeechStatus:
    available: bool
    engine: str | None  # the engine that worked, or None
    message: str  # one sentence for the visitor


def clamp_rate(rate) -> int:
    """A speech rate in words per minute, limited to MIN_RATE..MAX_RATE; None gives the default."""
    if rate is None:
        return DEFAULT_RATE
    return int(min(MAX_RATE, max(MIN_RATE, round(float(rate)))))


def synthesize(text: str, path: str | Path, rate=DEFAULT_RATE, engines=ENGINES, timeout: float = TIMEOUT) -> str:
    """Speak ``text`` into the WAV file ``path``; return the name of the engine that did it.

    Raises SpeechError if the text is empty or too long, or if no engine produced audio.
    """
    text = " ".join(str(text or "").split())
    if not text:
        raise SpeechError("There is nothing to read aloud.")
    if len(text) > MAX_CHARS:
        raise SpeechError(f"The text is longer than {MAX_CHARS} characters.")
    path = Path(path).resolve()
    rate = clamp_rate(rate)
    failures = []
    with _lock:
        for engine in engines:
            try:
                _RUNNERS[engine](text, path, rate, timeout)
                _check_wav(path)
                return engine
            except SpeechError as exc:
                failures.append(f"{engine}: {exc}")
    raise SpeechError("No speech engine could read this aloud (" + "; ".join(failures) + ").")


def check(engines=ENGINES, timeout: float = TIMEOUT) -> SpeechStatus:
    """Try a short synthesis and say whether speech works here, and with which engine."""
    with tempfile.TemporaryDirectory(prefix="captioner-speech-check-") as folder:
        try:
            engine = synthesize("Ready.", Path(folder) / "check.wav", engines=engines, timeout=timeout)
        except SpeechError as exc:
            return SpeechStatus(False, None, f"Reading aloud is not available on this server: {exc} "
                                             "Captions still work.")
    return SpeechStatus(True, engine, f"Reading aloud uses {engine}, offline.")


def wav_duration(path: str | Path) -> float:
    """Length of a WAV file in seconds."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def _check_wav(path: Path) -> None:
    try:
        if wav_duration(path) <= 0:
            raise SpeechError("it produced no audio")
    except (OSError, EOFError, wave.Error) as exc:
        raise SpeechError(f"it wrote no valid WAV file ({exc})") from exc


def _run(command: list[str], text: str, timeout: float, env: dict | None = None) -> None:
    try:
        done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child
        raise SpeechError(f"it took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise SpeechError(str(exc)) from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SpeechError(detail)


def _run_pyttsx3(text: str, path: Path, rate: int, timeout: float) -> None:
    path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    _run([sys.executable, "-m", "captioner.speech", "--rate", str(rate), str(path)], text, timeout, env)


def _run_espeak(text: str, path: Path, rate: int, timeout: float) -> None:
    program = shutil.which("espeak-ng") or shutil.which("espeak")
    if program is None:
        raise SpeechError("the espeak-ng program is not installed")
    path.unlink(missing_ok=True)
    _run([program, "-s", str(rate), "-w", str(path), "--stdin"], text, timeout)


_RUNNERS = {"pyttsx3": _run_pyttsx3, "espeak-ng": _run_espeak}


def _child(argv: list[str] | None = None) -> int:
    """In a fresh process: read text on stdin and let pyttsx3 save it as a WAV file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE)
    parser.add_argument("out")
    args = parser.parse_args(argv)
    import pyttsx3

    engine = pyttsx3.init()
    engine.setProperty("rate", clamp_rate(args.rate))
    engine.save_to_file(sys.stdin.read(), args.out)
    engine.runAndWait()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
