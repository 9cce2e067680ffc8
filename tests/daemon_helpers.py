"""Running `python run.py` the way a user does, against the local ECS API, and reading its JSON logs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from localecs import LocalECS

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = str(ROOT / "run.py")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:PORT/PATH, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def daemon_env(local: LocalECS, tmp_path: Path | None = None, **settings: str) -> dict[str, str]:
    """The environment of a daemon pointed at the local API through AWS_ENDPOINT_URL."""
    env = local.env()
    env["LOG_FORMAT"] = "json"
    if tmp_path is not None:
        env["HEARTBEAT_FILE"] = str(tmp_path / "heartbeat")
    env.update(settings)
    return env


def run_once(local: LocalECS, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python run.py --once ARGS` to completion."""
    return subprocess.run(
        [sys.executable, RUN_PY, "--once", *args],
        env=daemon_env(local, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(output: str) -> list[dict[str, Any]]:
    """The JSON log events in a daemon's stdout."""
    parsed = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


def decisions(output: str) -> dict[str, dict[str, Any]]:
    """The last decision event per service."""
    return {e["service"]: e for e in events(output) if e.get("event") == "decision"}


def _collect(stream: IO[str] | None, lines: list[str]) -> None:
    """Append a child's output lines as they come, until it closes the stream."""
    assert stream is not None
    for line in stream:
        lines.append(line)


class Daemon:
    """A `python run.py` loop in the background, its stdout collected as JSON events."""

    def __init__(self, local: LocalECS, *args: str, **settings: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, RUN_PY, *args],
            env=daemon_env(local, **settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []  # stderr, read as it comes so a full pipe never blocks the daemon
        # The JSON events of lines[:_parsed_lines], parsed once each: tests poll `events` many times a second.
        self._parsed: list[dict[str, Any]] = []
        self._parsed_lines = 0
        self._parse_lock = threading.Lock()
        self._reader = threading.Thread(target=_collect, args=(self.process.stdout, self.lines), daemon=True)
        self._reader.start()
        self._error_reader = threading.Thread(target=_collect, args=(self.process.stderr, self.errors), daemon=True)
        self._error_reader.start()

    def stderr(self) -> str:
        """What the daemon wrote to stderr; call once it has exited."""
        self._error_reader.join(timeout=5)
        return "".join(self.errors)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON events of every complete line so far (a copy: the caller may change it)."""
        with self._parse_lock:
            complete = len(self.lines)  # each a whole line: the reader appends a line once its newline came (or EOF)
            self._parsed.extend(events("".join(self.lines[self._parsed_lines : complete])))
            self._parsed_lines = complete
            return list(self._parsed)

    def passes(self) -> int:
        return sum(1 for e in self.events if e.get("event") == "pass")

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.process.poll() is not None:
                return condition()
            time.sleep(0.05)
        return False

    def wait_passes(self, count: int, timeout: float = 20) -> bool:
        return self.wait_for(lambda: self.passes() >= count, timeout)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = "".join(self.lines[-40:])
            errors = "".join(self.errors[-20:])
            raise AssertionError(
                f"the daemon did not exit within {timeout}s of SIGTERM; its last output:\n{tail}\nstderr:\n{errors}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
