"""The process exit codes, in one place: cli.py, the loop and `check` return them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a --once pass or `check` found a service it could not handle, or managed none
EXIT_CONFIG = 2  # a configuration error, a missing cluster or no usable credentials at start-up
