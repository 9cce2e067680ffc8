"""The polling loop: one reconcile pass, then sleep INTERVAL, until told to stop.

Transient faults never end the loop: a failed pass is logged and the next one
runs on schedule. Only a missing cluster on the very first pass (a typo in
CLUSTER, most likely) ends it, with exit code 2; so does a metrics server that
cannot listen on METRICS_PORT, before any pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import structlog

from . import health
from .config import Config, ConfigError
from .ecs import Api, task_identity
from .reconcile import Memory, PassReport, run_pass

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def loop(
    api: Api,
    config: Config,
    stop: threading.Event,
    environ: Mapping[str, str],
    *,
    fail: Callable[[str], int],
    observers: tuple[Callable[[PassReport], None], ...] = (),
) -> int:
    """Run passes until `stop` is set (or once); returns the process exit code."""
    identity = task_identity(environ)
    monitor = health.Monitor(config, api)
    try:
        monitor.start()
    except ConfigError as error:  # the metrics server cannot listen: METRICS_PORT / METRICS_ADDR
        return fail(str(error))
    log.info(
        "start",
        cluster=config.cluster,
        services=list(config.services),
        service_regex=config.service_regex.pattern if config.service_regex else None,
        managed_tag=str(config.managed_tag) if config.managed_tag else None,
        interval=config.interval,
        once=config.once,
        dry_run=config.dry_run,
        region=api.region,
        self_service=identity.service_name if identity else None,
    )
    memory = Memory()
    first = True
    try:
        while not stop.is_set():
            report = run_pass(api, config, None if config.once else memory, stop=stop, identity=identity)
            monitor.record(report)
            for observer in observers:
                observer(report)
            if first and report.cluster_missing:
                return fail(f"CLUSTER: cluster {config.cluster!r} not found in region {api.region}")
            first = False
            if config.once:
                return EXIT_OK if report.ok or report.stopped else EXIT_FAILED
            stop.wait(config.interval)
    finally:
        monitor.close()
    log.info("stop", cluster=config.cluster)
    return EXIT_OK
