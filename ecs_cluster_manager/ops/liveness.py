"""When the loop started and when its last successful pass ended: the one record of it.

The heartbeat file, /healthz and the metrics all read this; only the Monitor
(health.py) writes it, once per pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """The record at one instant; times are on the Liveness clock (monotonic)."""

    started: float
    last_success: float | None
    last_success_unix: float | None
    last_error: str | None


class Liveness:
    """Start-up time, last successful pass and the error since, safe to read from other threads.

    `clock` is monotonic and replaceable in tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_success: float | None = None
        self._last_success_unix: float | None = None
        self._last_error: str | None = None

    def restart(self) -> None:
        """Start the grace period again (the loop is about to run its first pass)."""
        with self._lock:
            self._started = self.clock()

    def record(self, observed: bool, error: str | None = None) -> None:
        """Take in one pass: `observed` when it read everything it needed, else the error that stopped it."""
        now = self.clock()
        with self._lock:
            if observed:
                self._last_success = now
                self._last_success_unix = time.time()
                self._last_error = None
            else:
                self._last_error = error or "the pass failed"

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._started, self._last_success, self._last_success_unix, self._last_error)

    def seconds_since_success(self) -> float:
        """Seconds since the last successful pass, or since start-up when there has been none."""
        state = self.snapshot()
        since = state.last_success if state.last_success is not None else state.started
        return max(0.0, self.clock() - since)
