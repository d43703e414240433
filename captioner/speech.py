"""Offline text-to-speech into WAV files: pyttsx3 (with espeak-ng) first, the espeak-ng program second.

pyttsx3 keeps one engine per process and its espeak driver is not thread-safe.
Reused within one process it also misbehaves: asked for 375 words per minute
after an earlier request, it spoke at 175 in some runs and at other rates in
others, while a fresh process got the rate right every time. So each request
runs pyttsx3 in its own child process (``python -m captioner.speech``), one
request at a time behind a lock, under a time limit; a hung child is killed.
Starting Python and pyttsx3 takes about 0.1 s, so the next child is started
as soon as a request is done and waits, initialised, for the next one (see
:class:`_WarmChild`). If pyttsx3 fails, the ``espeak-ng`` program is tried.
If neither works, :func:`check` says so and the app captions without speech.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

from .limits import clamp

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
    rate = clamp(rate, MIN_RATE, MAX_RATE, DEFAULT_RATE, int)
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


class _WarmChild:
    """At most one pyttsx3 child process, started ahead of the request it will serve.

    The child imports pyttsx3 and starts its engine, then waits for one JSON
    request on stdin, speaks it into a WAV file and exits, so every request
    still gets a fresh engine. A child started under other environment
    variables (for example another PYTHONPATH) is not used: it is replaced.
    Only called with ``_lock`` held.
    """

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.env: dict | None = None

    def take(self, env: dict) -> subprocess.Popen:
        """The waiting child if it is alive and was started with ``env``; else a new one."""
        process, self.process = self.process, None
        if process is not None and (process.poll() is not None or self.env != env):
            _stop(process)
            process = None
        return process or self._start(env)

    def prepare(self, env: dict) -> None:
        """Start the child for the next request now, so that it is ready when that request comes."""
        if self.process is None:
            try:
                self.process = self._start(env)
            except OSError:  # the next request starts its own child and reports the error
                self.process = None

    def _start(self, env: dict) -> subprocess.Popen:
        self.env = env
        return subprocess.Popen([sys.executable, "-m", "captioner.speech"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def close(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.communicate()


_warm = _WarmChild()
atexit.register(_warm.close)


def _run_pyttsx3(text: str, path: Path, rate: int, timeout: float) -> None:
    path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    try:
        process = _warm.take(env)
    except OSError as exc:
        raise SpeechError(str(exc)) from exc
    request = json.dumps({"text": text, "rate": rate, "out": str(path)})
    try:
        _, stderr = process.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _stop(process)
        raise SpeechError(f"it took longer than {timeout:.0f} s") from exc
    finally:
        _warm.prepare(env)
    if process.returncode != 0:
        detail = (stderr.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        raise SpeechError(detail)


def _run_espeak(text: str, path: Path, rate: int, timeout: float) -> None:
    program = shutil.which("espeak-ng") or shutil.which("espeak")
    if program is None:
        raise SpeechError("the espeak-ng program is not installed")
    path.unlink(missing_ok=True)
    _run([program, "-s", str(rate), "-w", str(path), "--stdin"], text, timeout)


_RUNNERS = {"pyttsx3": _run_pyttsx3, "espeak-ng": _run_espeak}


def _child() -> int:
    """In a fresh process: start pyttsx3, then read one request on stdin and save it as a WAV file.

    The request is JSON: {"text": ..., "rate": words per minute, "out": WAV path}. Without one
    (the parent closed stdin, for example on exit) the child exits quietly.
    """
    try:
        import pyttsx3
        from pyttsx3.drivers import _espeak

        engine, failure = pyttsx3.init(), None
        _espeak.Synchronize()  # the driver's start-up settings are applied
        engine.runAndWait()  # leaves the driver idle, so that setProperty below takes effect at once
    except Exception as exc:  # reported only if a request comes
        engine, failure = None, exc
    raw = sys.stdin.read()
    if not raw.strip():
        return 0
    if failure is not None:
        print(f"pyttsx3 could not start: {failure}", file=sys.stderr)
        return 1
    request = json.loads(raw)
    # pyttsx3 starts libespeak-ng in its asynchronous mode: a setting goes into a queue that
    # another thread serves, and runAndWait first calls espeak_Cancel, which drops whatever that
    # thread has not yet taken. Under load the rate was dropped, and a WAV asked for at 175 words
    # a minute came out at exactly the driver's start-up rate of 200 (1.62 s instead of 1.86 s).
    # So the rate is applied and waited for before the text is queued, and checked.
    rate = clamp(request["rate"], MIN_RATE, MAX_RATE, DEFAULT_RATE, int)
    engine.setProperty("rate", rate)
    _espeak.Synchronize()
    if engine.getProperty("rate") != rate:
        print(f"pyttsx3 did not take the rate {rate} (it reports {engine.getProperty('rate')})", file=sys.stderr)
        return 1
    engine.save_to_file(request["text"], request["out"])
    engine.runAndWait()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
