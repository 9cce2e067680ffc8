"""Prometheus metrics of the loop, and the small HTTP server for /metrics, /healthz and /status.

Only used when METRICS_PORT is set. The metrics live in their own
CollectorRegistry (not prometheus_client's global one), so importing this module
registers nothing and tests can build as many independent sets as they like.
`Metrics` turns each PassReport and each API attempt into samples; `Server`
serves them, plus a health answer it asks for on each /healthz request.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from ecs_cluster_manager.config import ConfigError
from ecs_cluster_manager.model import plan
from ecs_cluster_manager.model.reasons import SKIP_REASONS
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.observe.events import EventStats
from ecs_cluster_manager.ops.liveness import Liveness

log = structlog.get_logger(__name__)

PREFIX = "ecs_cluster_manager"

# Pass durations: a converged pass is a handful of calls (well under a second);
# retries with backoff and throttling stretch it to tens of seconds.
# An event's time is whole seconds, so the latency to its update is 0 to a few seconds.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# The `reason` label of service_skips_total: the decision's code (model/reasons.py), never its words, so the
# label stays low-cardinality (the words carry stack names, error messages and counts).
REASON_CODES = frozenset(reason.value for reason in SKIP_REASONS)


class MetricsError(ConfigError):
    """The metrics server cannot start (port in use, bad address); the message names the setting."""


class Metrics:
    """Every metric of one process, in a registry of its own."""

    def __init__(
        self,
        interval: float,
        registry: CollectorRegistry | None = None,
        *,
        liveness: Liveness | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        # Read here, written by the Monitor: the one record of start-up and the last success.
        self.liveness = liveness or Liveness(clock)
        self._hosts_labels: set[str] = set()
        self._service_labels: set[str] = set()
        self._retries_seen: dict[str, int] = {}
        self._waits_seen: dict[str, float] = {}
        self._events_seen: dict[str, int] = {}
        self._events_lock = threading.Lock()  # the events thread and the loop both report
        r = self.registry

        self.passes = Counter(f"{PREFIX}_passes", "Reconcile passes run.", registry=r)
        self.passes_failed = Counter(
            f"{PREFIX}_passes_failed", "Passes that could not read the cluster (nothing was written).", registry=r
        )
        self.pass_duration = Histogram(
            f"{PREFIX}_pass_duration_seconds", "Wall time of one pass.", buckets=DURATION_BUCKETS, registry=r
        )
        self.api_calls = Counter(
            f"{PREFIX}_api_calls",
            "AWS API HTTP attempts by operation and outcome (ok, throttled, error, unreachable).",
            ["operation", "outcome"],
            registry=r,
        )
        self.api_retries = Counter(
            f"{PREFIX}_api_retries", "Calls retried after a transient fault, by operation.", ["operation"], registry=r
        )
        self.api_budget_wait = Counter(
            f"{PREFIX}_api_budget_wait_seconds",
            "Seconds ECS calls waited for a token of the API budget (API_BUDGET), by throttling category.",
            ["category"],
            registry=r,
        )
        self.api_throttled = Counter(
            f"{PREFIX}_api_throttled",
            "HTTP attempts the API throttled anyway (ThrottlingException: others share the bucket), by operation.",
            ["operation"],
            registry=r,
        )
        self.writes_deferred = Counter(
            f"{PREFIX}_writes_deferred",
            "UpdateService calls a pass deferred to a later pass because the API budget could not pay for them.",
            registry=r,
        )
        self.hosts = Gauge(
            f"{PREFIX}_hosts", "Eligible container instances per host filter, as of the last successful pass.",
            ["filter"], registry=r,
        )
        self.service_desired = Gauge(
            f"{PREFIX}_service_desired_count", "desiredCount of each managed service after the last pass.",
            ["service"], registry=r,
        )
        self.service_target = Gauge(
            f"{PREFIX}_service_target_count", "desiredCount the last pass decided each managed service should have.",
            ["service"], registry=r,
        )
        self.service_updates = Counter(
            f"{PREFIX}_service_updates", "UpdateService calls that changed a managed service's desiredCount.",
            ["service"], registry=r,
        )
        self.tasks_preempted = Counter(
            f"{PREFIX}_tasks_preempted",
            "Tasks of preemptible services stopped to make room for a make-room service's task, by the service "
            "whose task was stopped and the service room was made for.",
            ["service", "for_service"], registry=r,
        )
        self.service_skips = Counter(
            f"{PREFIX}_service_skips", "Passes that left a managed service alone, by reason code.",
            ["service", "reason"], registry=r,
        )
        # Coverage, as of the last reading of each service (each exact count of its hosts).
        self.hosts_eligible = Gauge(
            f"{PREFIX}_hosts_eligible", "Hosts that should run the service's task, at its last coverage reading.",
            ["service"], registry=r,
        )
        self.hosts_covered = Gauge(
            f"{PREFIX}_hosts_covered", "Eligible hosts running a RUNNING task of the service.", ["service"], registry=r
        )
        self.hosts_missing_task = Gauge(
            f"{PREFIX}_hosts_missing_task",
            "Wanted hosts with no task of the service at all (none beyond its sizing target).",
            ["service"],
            registry=r,
        )
        self.hosts_extra_tasks = Gauge(
            f"{PREFIX}_hosts_extra_tasks", "Hosts running more tasks of the service than their share.", ["service"],
            registry=r,
        )
        self.tasks_misplaced = Gauge(
            f"{PREFIX}_tasks_misplaced", "Tasks of the service on hosts that are not eligible (draining, filtered).",
            ["service"], registry=r,
        )
        self.tasks_outdated = Gauge(
            f"{PREFIX}_tasks_outdated", "Tasks of the service not on its PRIMARY deployment's task definition.",
            ["service"], registry=r,
        )
        self._coverage_gauges = (
            self.hosts_eligible,
            self.hosts_covered,
            self.hosts_missing_task,
            self.hosts_extra_tasks,
            self.tasks_misplaced,
            self.tasks_outdated,
        )
        self._coverage_labels: set[str] = set()
        self.managed_services = Gauge(
            f"{PREFIX}_managed_services",
            "Services the last successful pass found through SERVICES, SERVICE_REGEX and MANAGED_TAG and handled.",
            registry=r,
        )
        self.passes_by_trigger = Counter(
            f"{PREFIX}_passes_by_trigger", "Passes by what started them: interval or event.", ["trigger"],
            registry=r,
        )
        self.events_received = Counter(f"{PREFIX}_events_received", "Messages read from EVENTS_QUEUE_URL.", registry=r)
        self.events_relevant = Counter(
            f"{PREFIX}_events_relevant", "Container instance events that could change a decision.", registry=r
        )
        self.events_ignored = Counter(
            f"{PREFIX}_events_ignored", "Container instance events that started no pass, by reason.", ["reason"],
            registry=r,
        )
        self.events_malformed = Counter(
            f"{PREFIX}_events_malformed", "Messages that were not a readable ECS event (deleted).", registry=r
        )
        # Registered with the events source's first report: without EVENTS_QUEUE_URL there is no such series,
        # so an alert on `== 0` cannot fire for a daemon that has no events queue.
        self.events_source_up: Gauge | None = None
        # Registered with the first pass that kept READY_ATTRIBUTE, for the same reason.
        self.hosts_ready: Gauge | None = None
        self.hosts_not_ready: Gauge | None = None
        self.event_to_update = Histogram(
            f"{PREFIX}_event_to_update_seconds",
            "From an event's time to the UpdateService it caused.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_success_timestamp = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds", "Unix time the last successful pass ended.", registry=r
        )
        self.seconds_since_last_success = Gauge(
            f"{PREFIX}_seconds_since_last_success",
            "Seconds since the last successful pass ended (since start-up before the first one).",
            registry=r,
        )
        self.seconds_since_last_success.set_function(self.liveness.seconds_since_success)
        self.last_success_timestamp.set_function(lambda: self.liveness.snapshot().last_success_unix or 0.0)
        # Exported so an alert can say "3 x interval" without knowing the setting.
        self.interval = Gauge(f"{PREFIX}_interval_seconds", "Configured seconds between passes.", registry=r)
        self.interval.set(interval)

    def count_call(self, operation: str, outcome: str) -> None:
        """Api.on_call hook: one HTTP attempt."""
        self.api_calls.labels(operation=operation, outcome=outcome).inc()
        if outcome == "throttled":
            self.api_throttled.labels(operation=operation).inc()

    def count_budget_waits(self, waited: Mapping[str, float]) -> None:
        """Add what the transport's budget_waited (running seconds by category) gained since the last call."""
        for category, total in list(waited.items()):
            gained = total - self._waits_seen.get(category, 0.0)
            if gained > 0:
                self.api_budget_wait.labels(category=category).inc(gained)
            self._waits_seen[category] = total

    def count_retries(self, retries: Mapping[str, int]) -> None:
        """Add what Api.retries (a running total by operation) gained since the last call."""
        for operation, total in list(retries.items()):
            gained = total - self._retries_seen.get(operation, 0)
            if gained > 0:
                self.api_retries.labels(operation=operation).inc(gained)
            self._retries_seen[operation] = total

    def count_events(self, stats: EventStats) -> None:
        """Add what the events source's running totals gained since the last call, and its state."""
        with self._events_lock:
            self._count_events(stats)

    def _count_events(self, stats: EventStats) -> None:
        seen = self._events_seen
        for counter, total, key in (
            (self.events_received, stats.received, "received"),
            (self.events_relevant, stats.relevant, "relevant"),
            (self.events_malformed, stats.malformed, "malformed"),
        ):
            if total > seen.get(key, 0):
                counter.inc(total - seen.get(key, 0))
            seen[key] = total
        for reason, total in stats.ignored.items():
            key = f"ignored:{reason}"
            if total > seen.get(key, 0):
                self.events_ignored.labels(reason=reason).inc(total - seen.get(key, 0))
            seen[key] = total
        if self.events_source_up is None:
            self.events_source_up = Gauge(
                f"{PREFIX}_events_source_up",
                "1 while the events queue answers, 0 while it fails (polling goes on); only with EVENTS_QUEUE_URL.",
                registry=self.registry,
            )
        self.events_source_up.set(1 if stats.healthy else 0)

    def observe(self, report: PassReport) -> None:
        """Record one pass."""
        self.passes.inc()
        self.passes_by_trigger.labels(trigger=report.trigger).inc()
        if report.event_time is not None:
            for written in report.write_times:
                self.event_to_update.observe(max(0.0, written - report.event_time))
        self.pass_duration.observe(report.duration)
        if report.deferred:
            self.writes_deferred.inc(report.deferred)
        if not report.observed:
            self.passes_failed.inc()
        else:
            self._set_hosts(report.hosts)
            if report.managed is not None:
                self.managed_services.set(report.managed)

        for decision in report.decisions:
            if decision.action == plan.UPDATE:
                self.service_updates.labels(service=decision.service).inc()
            elif decision.action == plan.SKIP:
                self.service_skips.labels(service=decision.service, reason=decision.code.value).inc()
            desired = decision.target if decision.action == plan.UPDATE else decision.current
            if desired is not None:
                self.service_desired.labels(service=decision.service).set(desired)
            if decision.target is not None:
                self.service_target.labels(service=decision.service).set(decision.target)
        for preempted in report.preempted:
            self.tasks_preempted.labels(service=preempted.service, for_service=preempted.for_service).inc()
        if report.hosts_marked is not None:
            self._set_readiness(report)
        for service, found in report.coverage.items():
            values = (
                found.eligible,
                found.covered,
                len(found.missing),
                len(found.extra),
                len(found.misplaced),
                len(found.outdated),
            )
            for gauge, value in zip(self._coverage_gauges, values, strict=True):
                gauge.labels(service=service).set(value)
            self._coverage_labels.add(service)
        if report.observed:
            # Only a complete pass knows the whole set of managed services; a
            # service that left it stops being exported instead of going stale.
            current = {d.service for d in report.decisions}
            for service in self._service_labels - current:
                self.service_desired.remove(service)
                self.service_target.remove(service)
            self._service_labels = current
            for service in self._coverage_labels - current:
                for gauge in self._coverage_gauges:
                    gauge.remove(service)
            self._coverage_labels &= current

    def _set_readiness(self, report: PassReport) -> None:
        if self.hosts_ready is None or self.hosts_not_ready is None:
            self.hosts_ready = Gauge(
                f"{PREFIX}_hosts_ready",
                "Hosts with the READY_ATTRIBUTE attribute: every managed service they are eligible for runs there.",
                registry=self.registry,
            )
            self.hosts_not_ready = Gauge(
                f"{PREFIX}_hosts_not_ready",
                "Hosts the last pass found not ready (a managed service's task not RUNNING there, or draining).",
                registry=self.registry,
            )
        self.hosts_ready.set(report.hosts_marked or 0)
        if report.readiness is not None:
            self.hosts_not_ready.set(len(report.readiness.not_ready))

    def _set_hosts(self, hosts: Mapping[str, int]) -> None:
        for expression, count in hosts.items():
            self.hosts.labels(filter=expression).set(count)
        for expression in self._hosts_labels - hosts.keys():
            self.hosts.remove(expression)
        self._hosts_labels = set(hosts)


HealthCheck = Callable[[], tuple[bool, str]]
StatusDocument = Callable[[], Mapping[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics, /healthz and /status; anything else is a 404."""

    server: _HttpServer
    protocol_version = "HTTP/1.1"

    # http.server dispatches to methods named do_<METHOD>.
    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type, body)
        elif path == "/healthz":
            healthy, text = self.server.health()
            self._send(200 if healthy else 503, f"{text}\n".encode(), "text/plain; charset=utf-8", body)
        elif path == "/status":
            document = json.dumps(self.server.status(), indent=2, sort_keys=True) + "\n"
            self._send(200, document.encode(), "application/json", body)
        else:
            self._send(404, b"not found: try /metrics, /healthz or /status\n", "text/plain; charset=utf-8", body)

    def _send(self, status: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        # A scrape every few seconds would drown the decision log.
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow scraper never holds up shutdown
    registry: CollectorRegistry
    health: HealthCheck
    status: StatusDocument


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class Server:
    """/metrics, /healthz and /status on METRICS_ADDR:METRICS_PORT, served from a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthCheck,
        port: int,
        addr: str,
        status: StatusDocument | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.status: StatusDocument = status or dict
        self.port = port
        self.addr = addr
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound_port(self) -> int | None:
        return int(self._server.server_address[1]) if self._server else None

    def start(self) -> None:
        """Bind and serve; MetricsError (one line, naming the setting) when the address cannot be used."""
        server_class = _HttpServer6 if ":" in self.addr else _HttpServer
        try:
            server = server_class((self.addr, self.port), _Handler)
        except socket.gaierror as error:
            raise MetricsError(f"METRICS_ADDR: cannot resolve {self.addr!r}: {error.strerror}") from None
        except OSError as error:
            raise MetricsError(_bind_message(error, self.addr, self.port)) from None
        server.registry = self.registry
        server.health = self.health
        server.status = self.status
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="metrics-server", daemon=True
        )
        self._thread.start()
        log.info("metrics_listening", addr=self.addr, port=self.bound_port)

    def close(self) -> None:
        """Stop serving and release the port (returns within the poll interval)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _bind_message(error: OSError, addr: str, port: int) -> str:
    where = f"{addr}:{port}" if ":" not in addr else f"[{addr}]:{port}"
    if error.errno == errno.EADDRINUSE:
        return f"METRICS_PORT: cannot listen on {where}: the port is already in use"
    if error.errno == errno.EACCES:
        return f"METRICS_PORT: cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"METRICS_ADDR: cannot listen on {where}: {error.strerror}"
    return f"METRICS_PORT: cannot listen on {where}: {error.strerror or error}"
