"""Liveness of the loop: the heartbeat file, /healthz, /status, and the metrics behind METRICS_PORT.

The loop hands every PassReport to a Monitor. A regular pass (trigger
"interval": a full count of the hosts) that read the cluster counts as a
success; an event pass counts its hosts from the store without listing them,
so it never vouches for the loop, however many succeed (it still reports its
error when it fails). On a success the Monitor touches HEARTBEAT_FILE, which
`run.py healthcheck` (the Docker HEALTHCHECK) checks, and /healthz answers 200
while the last success ended less than 3 x INTERVAL ago. Until the first pass
has had that long to run, both count as healthy only through their own grace:
/healthz from the Monitor's start, the Docker check through its start period.
/status is a JSON document: per managed service, its decision of the last pass
and its coverage as last read, each with the time it was read.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ecs_cluster_manager.config import Config
from ecs_cluster_manager.model.coverage import Coverage
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.ops.liveness import Liveness

if TYPE_CHECKING:
    from ecs_cluster_manager.aws.ecs import Api
    from ecs_cluster_manager.observe.events import EventSource
    from ecs_cluster_manager.ops.metrics import Metrics, Server

log = structlog.get_logger(__name__)

STALE_AFTER_INTERVALS = 3


def stale_after(config: Config) -> float:
    """Seconds after the last successful pass at which the loop counts as unhealthy."""
    return STALE_AFTER_INTERVALS * config.interval


def vouches(report: PassReport) -> bool:
    """Whether a pass counts as a success for health: a regular pass (a full count) that read the cluster."""
    return report.observed and report.trigger == "interval"


class Monitor:
    """Records each pass: the heartbeat file always, metrics and /healthz when METRICS_PORT is set.

    `api`, when given, is where API calls and retries are counted from;
    `clock` is a monotonic clock, replaceable in tests.
    """

    def __init__(self, config: Config, api: Api | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.api = api
        self.clock = clock
        self.heartbeat = Path(config.heartbeat_file)
        self.liveness = Liveness(clock)
        self.metrics: Metrics | None = None
        self.server: Server | None = None
        self._previous_on_call = None if api is None else api.on_call
        self.managed: int | None = None  # services the last successful pass managed
        self.events: EventSource | None = None  # the events source, when EVENTS_QUEUE_URL is set
        # /status: per service, its last decision (with the pass's time) and its last coverage reading.
        self._status_lock = threading.Lock()  # the loop writes, the metrics server's threads read
        self._decisions: dict[str, dict[str, Any]] = {}
        self._coverage: dict[str, Coverage] = {}
        self._coverage_errors: dict[str, dict[str, Any]] = {}
        self._readiness: dict[str, Any] | None = None  # READY_ATTRIBUTE: the last pass's readiness

    def start(self) -> None:
        """Start the grace period, and the metrics server when METRICS_PORT is set.

        Raises metrics.MetricsError (a ConfigError naming METRICS_PORT or
        METRICS_ADDR) when the server cannot listen.
        """
        self.liveness.restart()
        # A heartbeat left by an earlier process (a restarted container keeps
        # /tmp) must not vouch for this one before it has read the cluster.
        try:
            self.heartbeat.unlink(missing_ok=True)
        except OSError as error:
            log.warning("heartbeat_not_removed", path=str(self.heartbeat), error=str(error))
        if self.config.metrics_port is None:
            return

        from ecs_cluster_manager.ops.metrics import Metrics, Server

        metrics = Metrics(self.config.interval, liveness=self.liveness)
        server = Server(
            metrics.registry,
            self.status,
            self.config.metrics_port,
            self.config.metrics_addr,
            status=self.status_document,
        )
        server.start()
        self.metrics, self.server = metrics, server
        if self.api is not None:
            previous = self._previous_on_call

            def on_call(operation: str, outcome: str) -> None:
                metrics.count_call(operation, outcome)
                if previous is not None:
                    previous(operation, outcome)

            self.api.on_call = on_call

    def attach_events(self, source: EventSource) -> None:
        """Report the events source's counts and health in /metrics and /healthz from now on."""
        self.events = source
        if self.metrics is not None:
            source.on_update = self.metrics.count_events

    def record(self, report: PassReport) -> None:
        """Take in one finished pass."""
        if vouches(report) or not report.observed:  # an event pass that read what it needed changes nothing here
            self.liveness.record(vouches(report), "; ".join(report.errors) or None)
        if report.observed and report.managed is not None:
            self.managed = report.managed
        self._keep_status(report)
        if self.metrics is not None:
            self.metrics.observe(report)
            if self.api is not None:
                self.metrics.count_retries(self.api.retries)
                self.metrics.count_budget_waits(self.api.transport.budget_waited)
            if self.events is not None:
                self.metrics.count_events(self.events.snapshot())
        if vouches(report):
            self._touch_heartbeat()

    def _keep_status(self, report: PassReport) -> None:
        read_at = report.started_at + report.duration
        with self._status_lock:
            for d in report.decisions:
                self._decisions[d.service] = {
                    "action": d.action,
                    "current": d.current,
                    "target": d.target,
                    "hosts": d.hosts,
                    "reason": d.reason,
                    "error": d.error,
                    "readAt": round(read_at, 3),
                }
            self._coverage.update(report.coverage)
            for service in report.coverage:
                self._coverage_errors.pop(service, None)
            for service, error in report.coverage_errors.items():
                self._coverage_errors[service] = {"error": error, "readAt": round(read_at, 3)}
            if report.hosts_marked is not None or report.readiness_error is not None:
                self._readiness = _readiness_json(self.config, report, read_at, self._readiness)
            if report.observed:  # a complete pass knows every managed service: forget the others
                current = {d.service for d in report.decisions}
                for kept in (self._decisions, self._coverage, self._coverage_errors):
                    for service in set(kept) - current:
                        del kept[service]

    def status_document(self) -> dict[str, Any]:
        """The /status document: per service, the last decision and the last coverage, each with its read time."""
        with self._status_lock:
            services = {
                name: {
                    "decision": self._decisions.get(name),
                    "coverage": self._coverage[name].as_json() if name in self._coverage else None,
                    "coverageError": self._coverage_errors.get(name),
                }
                for name in sorted({*self._decisions, *self._coverage})
            }
            readiness = self._readiness
        document: dict[str, Any] = {"cluster": self.config.cluster, "services": services}
        if self.config.ready_attribute is not None:
            document["readiness"] = readiness
        return document

    def _touch_heartbeat(self) -> None:
        try:
            self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
            self.heartbeat.write_text(f"{time.time():.3f}\n")
        except OSError as error:
            log.warning("heartbeat_not_written", path=str(self.heartbeat), error=str(error))

    def status(self) -> tuple[bool, str]:
        """(healthy, one line saying why): what /healthz answers."""
        limit = stale_after(self.config)
        now = self.clock()
        state = self.liveness.snapshot()
        last_success, started, last_error = state.last_success, state.started, state.last_error
        detail = f"; last error: {' '.join(last_error.split())}" if last_error else ""
        if self.events is not None:
            stats = self.events.snapshot()
            if not stats.healthy:
                detail += f"; events source degraded (polling goes on): {' '.join((stats.last_error or '').split())}"
        if self.managed == 0:
            detail += f"; managing no services: none in cluster {self.config.cluster} matches {self.config.selection}"
        if last_success is not None:
            age = now - last_success
            if age < limit:
                return True, f"ok: last successful pass {age:.0f}s ago (limit {limit:g}s){detail}"
            return False, f"unhealthy: last successful pass {age:.0f}s ago (limit {limit:g}s){detail}"
        age = now - started
        if age < limit:
            return True, f"ok: starting, no successful pass yet ({age:.0f}s of {limit:g}s grace){detail}"
        return False, f"unhealthy: no successful pass in the {age:.0f}s since start (limit {limit:g}s){detail}"

    def close(self) -> None:
        """Stop the metrics server and give the Api its own call hook back."""
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.api is not None and self.metrics is not None:
            self.api.on_call = self._previous_on_call


def check_heartbeat(config: Config) -> int:
    """Exit code for `run.py healthcheck`: 0 when the last successful pass is recent, else 1."""
    path = Path(config.heartbeat_file)
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):  # a directory's mtime says nothing about the daemon
            print(f"unhealthy: {path} is not a regular file", file=sys.stderr)
            return 1
        age = time.time() - status.st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no successful pass yet ({path} does not exist)", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"unhealthy: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return 1
    limit = stale_after(config)
    if age > limit:
        print(f"unhealthy: last successful pass {age:.0f}s ago (limit {limit:g}s)", file=sys.stderr)
        return 1
    print(f"healthy: last successful pass {age:.0f}s ago")
    return 0


def _readiness_json(
    config: Config, report: PassReport, read_at: float, before: dict[str, Any] | None
) -> dict[str, Any]:
    """/status's `readiness`: the attribute, the hosts that have it, and each host not ready with why.

    A pass that could not decide keeps the last decision and says why (`error`).
    """
    if report.readiness is None:
        kept = dict(before or {"attribute": config.ready_attribute, "hostsReady": None, "notReady": []})
        kept["error"] = report.readiness_error
        return kept
    return {
        "attribute": config.ready_attribute,
        "hostsReady": report.hosts_marked,
        "notReady": [
            {"containerInstanceArn": host.arn, "why": host.why, "waitingFor": list(host.waiting_for)}
            for host in report.readiness.not_ready
        ],
        "error": report.readiness_error,
        "readAt": round(read_at, 3),
    }
