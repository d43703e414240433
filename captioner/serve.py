"""Run the web app (``app.py``) in a child process on 127.0.0.1 and wait until its page answers.

For the browser tests, the latency benchmark and any script that needs the app as a visitor meets it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"


class AppDidNotStart(RuntimeError):
    """The app exited or did not answer in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env: dict, log_path: Path, timeout: float = 300, app: Path = APP,
              cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``python app.py`` with ``env`` added to this environment, on 127.0.0.1 and a free port.

    Returns (process, url) once the page answers; raises AppDidNotStart (with the log's end) if the
    process exits or ``timeout`` seconds pass first. Stop it with :func:`stop`.
    """
    port = free_port()
    env = {**os.environ, **env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, str(app)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=cwd)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return process, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                raise AppDidNotStart(f"the app did not start; its log:\n{Path(log_path).read_text()[-3000:]}")
            time.sleep(1)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Ask the app to stop; kill it if it has not within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
