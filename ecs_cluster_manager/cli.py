"""The process: read the configuration, set up logging and signals, then run the command.

`ecs-cluster-manager`, `python -m ecs_cluster_manager` and `python run.py` all
land in `main`. Exit codes: 0 success (and on SIGTERM/SIGINT); 1 a --once pass,
or `check`, found a service it could not handle; 2 a configuration error (one
line on stderr).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _fail(message: str) -> int:
    print(f"ecs-cluster-manager: error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    from . import config as settings

    try:
        config = settings.load(sys.argv[1:] if argv is None else argv)
    except settings.ConfigError as error:
        return _fail(str(error))

    if config.command == "healthcheck":
        from . import health

        return health.check_heartbeat(config)

    from . import logs

    logs.configure(config.log_level, config.log_format)

    from .ecs import Api, CredentialsError

    stop = threading.Event()
    try:
        api = Api(config.region, config.profile, stop=stop)
    except CredentialsError as error:
        return _fail(str(error))

    if config.command == "check":
        from . import check

        return check.main(api, config)

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    from .daemon import loop

    return loop(api, config, stop, os.environ, fail=_fail)
