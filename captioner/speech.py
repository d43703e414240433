"""Offline text-to-speech into WAV files: pyttsx3 (with espeak-ng) first, the espeak-ng program second.

pyttsx3 keeps one engine per process and its espeak driver is not thread-safe,
so it runs in one child process (``python -m captioner.speech``, see
:class:`_Server`) that serves one request at a time behind a lock, under a
time limit; a hung or failed child is killed and the next request starts a
new one. Its driver drops a speaking rate that libespeak-ng has not applied
yet (see :func:`_speak`), which once made a reused engine speak at the wrong
rate; the child now waits for each rate and checks it. If pyttsx3 fails, the
``espeak-ng`` program is tried. If neither works, :func:`check` says so and
the app captions without speech.
"""
from __future__ import annotations

import atexit
import json
import os
import select
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


class _Server:
    """One long-lived pyttsx3 child process that speaks one request after another.

    The child (``python -m captioner.speech``) starts pyttsx3 once, then reads
    one JSON request per line on stdin and answers each with one JSON line on
    its own pipe. A child per request paid for starting Python and pyttsx3
    every time, which cost more than the synthesis itself. A child that
    fails, hangs past the time limit or was started under other environment
    variables (for example another PYTHONPATH) is stopped, and the next
    request starts a fresh one. Only called with
    ``_lock`` held.
    """

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.env: dict | None = None

    def speak(self, request: dict, env: dict, timeout: float) -> None:
        """Send one request and wait for its answer; raises SpeechError (and stops the child) on failure."""
        if self.process is not None and (self.process.poll() is not None or self.env != env):
            self.close()
        if self.process is None:
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "captioner.speech"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True, env=env)
            except OSError as exc:
                raise SpeechError(str(exc)) from exc
            self.env = env
        process = self.process
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            if not ready:
                raise SpeechError(f"it took longer than {timeout:.0f} s")
            line = process.stdout.readline()
            answer = json.loads(line) if line.strip() else {"error": f"it stopped (exit status {process.wait(5)})"}
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            self.close()
            raise SpeechError(f"the pyttsx3 process failed ({exc})") from exc
        except SpeechError:
            self.close()
            raise
        if answer.get("error"):
            self.close()  # the next request gets a fresh engine
            raise SpeechError(answer["error"])

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.communicate()
            self.process = None


_server = _Server()
atexit.register(_server.close)


def _run_pyttsx3(text: str, path: Path, rate: int, timeout: float) -> None:
    path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    _server.speak({"text": text, "rate": rate, "out": str(path)}, env, timeout)


def _run_espeak(text: str, path: Path, rate: int, timeout: float) -> None:
    program = shutil.which("espeak-ng") or shutil.which("espeak")
    if program is None:
        raise SpeechError("the espeak-ng program is not installed")
    path.unlink(missing_ok=True)
    _run([program, "-s", str(rate), "-w", str(path), "--stdin"], text, timeout)


_RUNNERS = {"pyttsx3": _run_pyttsx3, "espeak-ng": _run_espeak}


def _child() -> int:
    """The pyttsx3 process: start pyttsx3, then speak each request on stdin into a WAV file.

    Each line of stdin is one JSON request {"text": ..., "rate": words per minute, "out": WAV path};
    each gets one JSON line back, {} or {"error": one sentence}. pyttsx3's espeak driver prints to
    stdout, so the answers go out on a copy of stdout and Python's own stdout goes nowhere. The
    child exits when stdin closes (the parent stopped it or exited).
    """
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    os.dup2(sys.stdout.fileno(), 1)
    try:
        engine, failure = _start_pyttsx3(), None
    except Exception as exc:  # reported for each request
        engine, failure = None, f"pyttsx3 could not start: {exc}"
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            error = failure or _speak(engine, json.loads(line))
        except Exception as exc:  # answered, so that the parent can say what went wrong
            error = f"{type(exc).__name__}: {exc}"
        answers.write(json.dumps({"error": error} if error else {}) + "\n")
        answers.flush()
    return 0


def _start_pyttsx3():
    import pyttsx3
    from pyttsx3.drivers import _espeak

    engine = pyttsx3.init()
    _espeak.Synchronize()  # the driver's start-up settings are applied
    engine.runAndWait()  # leaves the driver idle, so that setProperty takes effect at once
    return engine


def _speak(engine, request: dict) -> str | None:
    """One request; returns None, or what went wrong."""
    from pyttsx3.drivers import _espeak

    # pyttsx3 starts libespeak-ng in its asynchronous mode: a setting goes into a queue that
    # another thread serves, and runAndWait first calls espeak_Cancel, which drops whatever that
    # thread has not yet taken. Under load the rate was dropped, and a WAV asked for at 175 words
    # a minute came out at exactly the driver's start-up rate of 200 (1.62 s instead of 1.86 s);
    # a reused engine also kept the previous request's rate. So the rate is applied and waited
    # for before the text is queued, and checked.
    rate = clamp(request["rate"], MIN_RATE, MAX_RATE, DEFAULT_RATE, int)
    engine.setProperty("rate", rate)
    _espeak.Synchronize()
    if engine.getProperty("rate") != rate:
        return f"pyttsx3 did not take the rate {rate} (it reports {engine.getProperty('rate')})"
    engine.save_to_file(request["text"], request["out"])
    engine.runAndWait()
    return None


if __name__ == "__main__":
    sys.exit(_child())
