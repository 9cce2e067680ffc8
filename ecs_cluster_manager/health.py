"""Liveness of the loop: a heartbeat file for `run.py healthcheck` (the Docker HEALTHCHECK).

The loop touches HEARTBEAT_FILE after every pass that read the cluster
successfully. `healthcheck` exits 0 while that happened less than 3 x INTERVAL ago.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import structlog

from .config import Config
from .reconcile import PassReport

log = structlog.get_logger(__name__)

STALE_AFTER_INTERVALS = 3


def stale_after(config: Config) -> float:
    return STALE_AFTER_INTERVALS * config.interval


class Monitor:
    """Records each pass: the heartbeat file now, metrics where enabled."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.heartbeat = Path(config.heartbeat_file)
        self.last_success: float | None = None  # time.monotonic() of the last observed pass

    def start(self) -> None:
        pass

    def record(self, report: PassReport) -> None:
        if not report.observed:
            return
        self.last_success = time.monotonic()
        try:
            self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
            self.heartbeat.write_text(f"{time.time():.3f}\n")
        except OSError as error:
            log.warning("heartbeat_not_written", path=str(self.heartbeat), error=str(error))

    def close(self) -> None:
        pass


def check_heartbeat(config: Config) -> int:
    """Exit code for `run.py healthcheck`: 0 when the last successful pass is recent, else 1."""
    path = Path(config.heartbeat_file)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no successful pass yet ({path} does not exist)", file=sys.stderr)
        return 1
    limit = stale_after(config)
    if age > limit:
        print(f"unhealthy: last successful pass {age:.0f}s ago (limit {limit:.0f}s)", file=sys.stderr)
        return 1
    print(f"healthy: last successful pass {age:.0f}s ago")
    return 0
