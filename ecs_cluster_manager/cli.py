"""The process: read the configuration, set up logging and signals, then run the command.

`ecs-cluster-manager`, `python -m ecs_cluster_manager` and `python run.py` all
land in `main`. Exit codes: 0 success (and on SIGTERM/SIGINT); 1 a --once pass,
or `check`, found a service it could not handle, or managed none; 2 a
configuration error (one line on stderr); 128 + the signal number (130, 143)
when a second SIGINT/SIGTERM ends the process without waiting.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecs_cluster_manager.aws.ecs import Api

from ecs_cluster_manager.model.exits import EXIT_CONFIG


def _fail(message: str) -> int:
    print(f"ecs-cluster-manager: error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    from ecs_cluster_manager import config as settings

    try:
        config = settings.load(sys.argv[1:] if argv is None else argv)
    except settings.ConfigError as error:
        return _fail(str(error))

    if config.command == "healthcheck":
        from ecs_cluster_manager.ops import health

        return health.check_heartbeat(config)

    from ecs_cluster_manager.ops import logs

    logs.configure(config.log_level, config.log_format)

    from ecs_cluster_manager.aws.ecs import Api, CredentialsError

    stop = threading.Event()
    try:
        api = Api(config.region, config.profile, stop=stop, api_budget=config.api_budget)
    except CredentialsError as error:
        return _fail(str(error))

    if config.command == "check":
        from ecs_cluster_manager import check

        return check.main(api, config)

    _watch_signals(stop, api, threading.get_ident())  # this thread runs the loop

    from ecs_cluster_manager.daemon import loop

    return loop(api, config, stop, os.environ, fail=_fail)


def _watch_signals(stop: threading.Event, api: Api, loop_thread: int) -> None:
    """SIGTERM/SIGINT set `stop`; a second one exits at once with 128 + its number.

    `loop_thread` is the ident of the thread that runs the loop: the `stopping`
    event names its call on the wire (the events thread's long poll is not
    what the process waits for).

    The signal handler itself does nothing: Python runs it in the main thread
    between two bytecodes, perhaps while that thread holds the very lock
    `stop.set()` takes (inside `stop.wait()`), which would hang the process for
    good. Its C half writes the signal's number to a pipe instead, and a thread
    of its own reads the pipe and acts.
    """
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    signal.set_wakeup_fd(writer, warn_on_full_buffer=False)

    def ignore(_signum: int, _frame: object) -> None:
        """The number is already in the pipe."""

    signal.signal(signal.SIGTERM, ignore)
    signal.signal(signal.SIGINT, ignore)

    def watch() -> None:
        while True:
            signum = os.read(reader, 1)[0]
            if signum not in (signal.SIGTERM, signal.SIGINT):
                continue
            if stop.is_set():  # the second signal: the operator will not wait for the call on the wire
                os.write(2, f"ecs-cluster-manager: {signal.Signals(signum).name} again, exiting now\n".encode())
                os._exit(128 + signum)
            # First: this thread does not keep the process alive once the loop ends.
            _log_stopping(api, signum, loop_thread)
            stop.set()

    threading.Thread(target=watch, name="signals", daemon=True).start()


def _log_stopping(api: Api, signum: int, loop_thread: int) -> None:
    """The `stopping` event: which signal, and what the loop's thread still waits for before it exits."""
    import structlog

    in_flight = api.in_flight(loop_thread)
    if in_flight is None:
        waiting_for = "nothing on the wire: stopping at once"
    else:
        operation, started = in_flight
        waiting_for = (
            f"{operation} on the wire for {time.monotonic() - started:.1f}s "
            f"(read timeout {api.read_timeout:g}s, {api.botocore_attempts} attempts); "
            "signal again to exit now"
        )
    structlog.get_logger(__name__).info(
        "stopping", signal=signal.Signals(signum).name, waiting_for=waiting_for, operation=in_flight and in_flight[0]
    )
