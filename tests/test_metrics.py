"""Metrics, /healthz and the heartbeat: in-process units first, then `python run.py` against the local ECS API."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon_helpers import RUN_PY, Daemon, daemon_env
from ecs_cluster_manager import config as settings
from ecs_cluster_manager.model import manage, plan, sizing
from ecs_cluster_manager.model.models import Service
from ecs_cluster_manager.model.reasons import SKIP_REASONS, Reason
from ecs_cluster_manager.model.report import PassReport
from ecs_cluster_manager.ops import health
from ecs_cluster_manager.ops.liveness import Liveness
from ecs_cluster_manager.ops.metrics import REASON_CODES, Metrics, MetricsError, Server
from localecs import LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]
FILTER = "agentConnected == true"
P = "ecs_cluster_manager_"


# -- helpers ------------------------------------------------------------------


class Clock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, body, content type) of one request to the metrics server."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get("Content-Type", "")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def make_config(tmp_path: Path, **environ: str) -> settings.Config:
    base = {"CLUSTER": CLUSTER, "SERVICES": "a", "INTERVAL": "10", "HEARTBEAT_FILE": str(tmp_path / "heartbeat")}
    return settings.load([], {**base, **environ})


def decision(
    service: str, action: str, current: int | None, target: int | None, reason: str, code: Reason = Reason.CONVERGED
) -> plan.Decision:
    return plan.Decision(service, f"arn:{service}", action, current, target, 3, reason, code, action == plan.SKIP)


def report(*decisions: plan.Decision, hosts: dict[str, int] | None = None, errors: tuple[str, ...] = ()) -> PassReport:
    return PassReport(
        cluster=CLUSTER, started_at=time.time(), duration=0.2, hosts=dict(hosts or {}),
        decisions=list(decisions), errors=list(errors),
    )


def service(**fields: object) -> Service:
    base: dict[str, object] = {
        "arn": "arn:s", "name": "s", "cluster_arn": "arn:c", "status": "ACTIVE", "desired_count": 1,
    }
    return Service(**{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """Cluster prod with 3 hosts and services a and b (distinctInstance) at desiredCount 0."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3)
    for name in ("a", "b"):
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    ecs.clear_calls()
    return ecs


# -- reason codes ---------------------------------------------------------------


def test_unmanageable_services_carry_their_code() -> None:
    """manage.py's rule gives `inactive` for a service not ACTIVE, `unmanageable` for DAEMON and Fargate ones."""
    codes = [manage.unmanageable(service(**fields)) for fields in (
        {"status": "INACTIVE"}, {"status": "DRAINING"}, {"scheduling_strategy": "DAEMON"}, {"launch_type": "FARGATE"})]
    assert [rule.code if rule else None for rule in codes] == [
        Reason.INACTIVE, Reason.INACTIVE, Reason.UNMANAGEABLE, Reason.UNMANAGEABLE]


def test_reason_codes_are_a_small_fixed_set() -> None:
    """The skip label takes the skip codes of model/reasons.py only, whatever the words of the reason say."""
    assert REASON_CODES == {reason.value for reason in SKIP_REASONS}
    assert len(REASON_CODES) <= 12
    metrics = Metrics(interval=10)
    for i in range(50):
        metrics.observe(report(decision("a", plan.SKIP, 1, None, f"update failed: error {i}", Reason.UPDATE_FAILED)))
    labels = {s.labels["reason"] for m in metrics.registry.collect() for s in m.samples if "reason" in s.labels}
    assert labels == {"update_failed"}


def test_every_skip_a_real_pass_makes_has_a_known_code(cluster: LocalECS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes that skip services for each reason the pass knows label each skip with its code."""
    from ecs_cluster_manager.aws.ecs import Api
    from ecs_cluster_manager.engine.passes import run_pass
    from localecs import Fault, fault_on

    for name, setting in cluster.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, setting)
    cluster.create_service(CLUSTER, "gone")
    cluster.delete_service(CLUSTER, "gone")
    cluster.create_service(CLUSTER, "badtag", tags={sizing.TASKS_PER_HOST_TAG: "two"})
    cluster.create_service(CLUSTER, "daemon", scheduling_strategy="DAEMON")
    cluster.create_service(CLUSTER, "stacked", tags={sizing.STACK_NAME_TAG: "web"}, placement_constraints=DISTINCT)
    api = Api(cluster.region, attempts=1, botocore_attempts=1)
    config = settings.load([], {"CLUSTER": CLUSTER, "SERVICES": "a nope gone badtag daemon stacked"})

    def codes() -> dict[str, str]:
        found = run_pass(api, config)
        return {d.service: d.code.value for d in found.decisions if d.action == plan.SKIP}

    denied = fault_on("DescribeStacks", Fault.error(400, "AccessDenied", "no"), service="cloudformation")
    rejected = fault_on("UpdateService", Fault.error(400, "InvalidParameterException", "no"))
    cluster.fault_hook = lambda request: denied(request) or rejected(request)
    assert codes() == {"nope": "missing", "gone": "inactive", "badtag": "bad_tag", "daemon": "unmanageable",
                       "stacked": "cloudformation", "a": "update_failed"}
    cluster.fault_hook = fault_on("ListContainerInstances", Fault.error(400, "InvalidParameterException", "no"))
    assert codes()["a"] == "host_count_failed"
    stop = threading.Event()
    stop.set()
    cluster.fault_hook = None
    shutting = run_pass(api, config, stop=stop)
    assert {d.code.value for d in shutting.decisions if d.service == "a"} == {"shutting_down"}


# -- Metrics --------------------------------------------------------------------


def test_metrics_follow_the_reports() -> None:
    """Passes, failures, hosts, per-service counts, updates and skips (by code) come out of the reports."""
    clock = Clock()
    metrics = Metrics(30, clock=clock)
    metrics.observe(report(
        decision("a", plan.UPDATE, 1, 3, "scale up"),
        decision("b", plan.SKIP, 2, None, "tag ecs-cluster-manager:min='x' is not a whole number", Reason.BAD_TAG),
        decision("c", plan.UNCHANGED, 3, 3, "converged"),
        hosts={FILTER: 3, f"{FILTER} and (attribute:role == web)": 2},
    ))
    text = generate_latest(metrics.registry).decode()
    assert value(text, P + "passes_total") == 1
    assert value(text, P + "passes_failed_total") == 0
    assert value(text, P + "pass_duration_seconds_count") == 1
    assert value(text, P + "hosts", filter=FILTER) == 3
    assert value(text, P + "hosts", filter=f"{FILTER} and (attribute:role == web)") == 2
    assert value(text, P + "service_desired_count", service="a") == 3  # the count just written
    assert value(text, P + "service_desired_count", service="b") == 2
    assert value(text, P + "service_target_count", service="c") == 3
    assert value(text, P + "service_target_count", service="b") is None
    assert value(text, P + "service_updates_total", service="a") == 1
    assert value(text, P + "service_updates_total", service="c") is None
    assert value(text, P + "service_skips_total", service="b", reason="bad_tag") == 1
    assert value(text, P + "interval_seconds") == 30
    assert value(text, P + "last_success_timestamp_seconds") == 0  # Metrics only reads the Liveness record
    metrics.liveness.record(True)
    text = generate_latest(metrics.registry).decode()
    assert abs((value(text, P + "last_success_timestamp_seconds") or 0) - time.time()) < 60


def test_metrics_forget_services_and_filters_that_leave() -> None:
    """After a complete pass, a service or filter no longer in use stops being exported; a failed pass keeps them."""
    metrics = Metrics(30, clock=Clock())
    metrics.observe(report(decision("a", plan.UNCHANGED, 3, 3, "converged"),
                           decision("b", plan.UNCHANGED, 3, 3, "converged"), hosts={FILTER: 3, "other": 1}))
    failed = decision("a", plan.SKIP, 3, None, "host count failed", Reason.HOST_COUNT_FAILED)
    metrics.observe(report(failed, errors=("counting hosts failed",)))
    text = generate_latest(metrics.registry).decode()
    assert value(text, P + "service_desired_count", service="b") == 3
    assert value(text, P + "hosts", filter="other") == 1
    assert value(text, P + "passes_failed_total") == 1
    assert value(text, P + "service_skips_total", service="a", reason="host_count_failed") == 1

    metrics.observe(report(decision("a", plan.UNCHANGED, 3, 3, "converged"), hosts={FILTER: 3}))
    text = generate_latest(metrics.registry).decode()
    assert value(text, P + "service_desired_count", service="b") is None
    assert value(text, P + "service_target_count", service="b") is None
    assert value(text, P + "hosts", filter="other") is None
    assert value(text, P + "service_desired_count", service="a") == 3


def test_seconds_since_last_success_is_computed_at_scrape_time() -> None:
    """The gauge counts from start-up until the first success, then from the end of the last successful pass."""
    clock = Clock()
    liveness = Liveness(clock)
    metrics = Metrics(10, liveness=liveness)
    clock.now += 7
    assert value(generate_latest(metrics.registry).decode(), P + "seconds_since_last_success") == 7
    liveness.record(True)
    clock.now += 4
    liveness.record(False, "describing services failed")
    clock.now += 2
    assert value(generate_latest(metrics.registry).decode(), P + "seconds_since_last_success") == 6


def test_retries_are_counted_from_the_running_totals() -> None:
    """Api.retries is a running total; each retry is exported once however often it is read."""
    metrics = Metrics(10)
    metrics.count_retries({"ListContainerInstances": 2})
    metrics.count_retries({"ListContainerInstances": 2, "UpdateService": 1})
    metrics.count_retries({"ListContainerInstances": 5, "UpdateService": 1})
    text = generate_latest(metrics.registry).decode()
    assert value(text, P + "api_retries_total", operation="ListContainerInstances") == 5
    assert value(text, P + "api_retries_total", operation="UpdateService") == 1


def test_metrics_use_their_own_registry() -> None:
    """Two Metrics objects coexist and nothing lands in prometheus_client's global registry."""
    from prometheus_client import REGISTRY

    first, second = Metrics(10), Metrics(10)
    first.count_call("ListServices", "ok")
    assert value(generate_latest(second.registry).decode(), P + "api_calls_total",
                 operation="ListServices", outcome="ok") is None
    assert P + "passes_total" not in generate_latest(REGISTRY).decode()


# -- Monitor and /healthz --------------------------------------------------------


def test_healthz_status_follows_the_last_successful_pass(tmp_path: Path) -> None:
    """Healthy in the 3 x INTERVAL grace after start and after each success; unhealthy after, naming the last error."""
    clock = Clock()
    monitor = health.Monitor(make_config(tmp_path, INTERVAL="10"), clock=clock)
    monitor.start()
    clock.now += 29
    healthy, text = monitor.status()
    assert healthy and text.startswith("ok: starting")
    monitor.record(report(errors=("counting hosts failed: ListContainerInstances: unreachable",)))
    clock.now += 2
    healthy, text = monitor.status()
    assert not healthy
    assert "no successful pass" in text and "limit 30s" in text and "counting hosts failed" in text

    monitor.record(report(hosts={FILTER: 3}))
    clock.now += 29
    assert monitor.status() == (True, "ok: last successful pass 29s ago (limit 30s)")
    clock.now += 2
    healthy, text = monitor.status()
    assert not healthy and text.startswith("unhealthy: last successful pass 31s ago")
    assert "\n" not in text


def test_event_passes_alone_do_not_keep_the_loop_healthy(tmp_path: Path) -> None:
    """Regular passes failing for 300 s while event passes succeed: /healthz turns 503 after 3 x INTERVAL (90 s)
    from the last regular success, and the event passes write no heartbeat."""
    clock = Clock()
    config = make_config(tmp_path, INTERVAL="30")
    heartbeat = Path(config.heartbeat_file)
    monitor = health.Monitor(config, clock=clock)
    monitor.start()
    monitor.record(report(hosts={FILTER: 3}))  # the first regular pass
    assert heartbeat.exists()
    heartbeat.unlink()
    throttled = "counting hosts failed: ListContainerInstances: ThrottlingException: Rate exceeded"
    for second in range(1, 301):
        clock.now += 1
        if second % 30 == 0:
            monitor.record(report(errors=(throttled,)))
        event_pass = report(hosts={FILTER: 3})
        event_pass.trigger = "event"
        monitor.record(event_pass)
        healthy, text = monitor.status()
        assert healthy == (second < 90), (second, text)
    assert text.startswith("unhealthy: last successful pass 300s ago (limit 90s)") and "ThrottlingException" in text
    assert not heartbeat.exists()
    monitor.record(report(hosts={FILTER: 3}))  # a regular pass succeeds again
    assert monitor.status()[0] and heartbeat.exists()
    monitor.close()


def test_monitor_touches_the_heartbeat_only_after_a_successful_pass(tmp_path: Path) -> None:
    """The heartbeat is written after an observed pass, not after a failed one; a leftover one is removed at start."""
    config = make_config(tmp_path)
    heartbeat = Path(config.heartbeat_file)
    heartbeat.write_text("left by an earlier process\n")
    monitor = health.Monitor(config)
    monitor.start()
    assert not heartbeat.exists()
    monitor.record(report(errors=("describing services failed",)))
    assert not heartbeat.exists()
    monitor.record(report(hosts={FILTER: 2}))
    assert heartbeat.exists() and abs(float(heartbeat.read_text()) - time.time()) < 60
    assert monitor.server is None  # no METRICS_PORT, no server
    monitor.close()


# -- the HTTP server -------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[int, list[tuple[bool, str]]]]:
    """A Server on a free port whose health answer the test sets; yields (port, [answer])."""
    answer = [(True, "ok: fine")]
    metrics = Metrics(10)
    metrics.count_call("ListContainerInstances", "ok")
    server = Server(metrics.registry, lambda: answer[0], free_port(), "127.0.0.1")
    server.start()
    try:
        assert server.bound_port is not None
        yield server.bound_port, answer
    finally:
        server.close()


def test_server_serves_metrics_healthz_and_nothing_else(served: tuple[int, list[tuple[bool, str]]]) -> None:
    """GET /metrics is the Prometheus text format, /healthz 200 or 503 with the reason, any other path 404."""
    port, answer = served
    status, body, content_type = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert value(body, P + "api_calls_total", operation="ListContainerInstances", outcome="ok") == 1
    assert get(port, "/healthz") == (200, "ok: fine\n", "text/plain; charset=utf-8")
    answer[0] = (False, "unhealthy: no successful pass in the 31s since start (limit 30s)")
    status, body, _ = get(port, "/healthz")
    assert status == 503 and body == "unhealthy: no successful pass in the 31s since start (limit 30s)\n"
    assert get(port, "/")[0] == 404
    assert get(port, "/metricsx")[0] == 404
    assert get(port, "/healthz", method="HEAD")[:2] == (503, "")


def test_server_close_releases_the_port() -> None:
    """After close() the port can be bound again at once, so a restart in the same process works."""
    port = free_port()
    server = Server(Metrics(10).registry, lambda: (True, "ok"), port, "127.0.0.1")
    server.start()
    server.close()
    again = Server(Metrics(10).registry, lambda: (True, "ok"), port, "127.0.0.1")
    again.start()
    again.close()


def test_port_in_use_is_a_one_line_error_naming_metrics_port() -> None:
    """Binding a port another process holds raises MetricsError (a ConfigError) naming METRICS_PORT."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = Server(Metrics(10).registry, lambda: (True, "ok"), port, "127.0.0.1")
        with pytest.raises(MetricsError) as caught:
            server.start()
    assert isinstance(caught.value, settings.ConfigError)
    message = str(caught.value)
    assert message.startswith("METRICS_PORT:") and "already in use" in message and "\n" not in message


def test_unusable_address_names_metrics_addr() -> None:
    """An address that does not resolve is blamed on METRICS_ADDR."""
    server = Server(Metrics(10).registry, lambda: (True, "ok"), free_port(), "no-such-host.invalid")
    with pytest.raises(MetricsError, match=r"^METRICS_ADDR:"):
        server.start()


# -- `run.py healthcheck` --------------------------------------------------------


def healthcheck(tmp_path: Path, interval: str = "10") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTER", "SERVICES", "INTERVAL", "HEARTBEAT_FILE")}
    env.update(HEARTBEAT_FILE=str(tmp_path / "heartbeat"), INTERVAL=interval)
    return subprocess.run(
        [sys.executable, RUN_PY, "healthcheck"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_healthcheck_passes_with_a_fresh_heartbeat(tmp_path: Path) -> None:
    """`run.py healthcheck` exits 0 when the heartbeat is younger than 3 x INTERVAL."""
    (tmp_path / "heartbeat").write_text(f"{time.time()}\n")
    result = healthcheck(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy")


def test_healthcheck_fails_with_a_stale_heartbeat(tmp_path: Path) -> None:
    """`run.py healthcheck` exits 1 when the heartbeat is older than 3 x INTERVAL."""
    heartbeat = tmp_path / "heartbeat"
    heartbeat.write_text("0\n")
    old = time.time() - 31
    os.utime(heartbeat, (old, old))
    result = healthcheck(tmp_path, interval="10")
    age_bound = time.time() - old  # the age it saw is at most this: the process may be slow to start on a busy host
    assert result.returncode == 1
    found = re.match(r"unhealthy: last successful pass (\d+)s ago \(limit 30s\)$", result.stderr.strip())
    assert found and 31 <= int(found.group(1)) <= round(age_bound), (result.stderr, age_bound)
    old = time.time() - 31
    os.utime(heartbeat, (old, old))
    assert healthcheck(tmp_path, interval="12").returncode == 0  # the limit really is 3 x INTERVAL


def test_healthcheck_fails_without_a_heartbeat(tmp_path: Path) -> None:
    """`run.py healthcheck` exits 1 when no pass has ever succeeded (no heartbeat file)."""
    result = healthcheck(tmp_path)
    assert result.returncode == 1
    assert "no successful pass yet" in result.stderr


# -- `python run.py` against the local ECS API ---------------------------------


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        status, body, _ = get(port, path)
    except OSError:
        return 0, ""
    return status, body


def test_daemon_exports_its_passes(cluster: LocalECS, tmp_path: Path) -> None:
    """With METRICS_PORT, run.py serves metrics that match the cluster, /healthz 200, and keeps the heartbeat fresh."""
    port = free_port()
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a,b", INTERVAL="0.5", METRICS_PORT=str(port),
                METRICS_ADDR="127.0.0.1", HEARTBEAT_FILE=str(tmp_path / "heartbeat")) as daemon:
        assert daemon.wait_passes(3), daemon.lines
        status, text = scrape(port)
        assert status == 200
        hosts = len(cluster.client().list_container_instances(cluster=CLUSTER)["containerInstanceArns"])
        for name in ("a", "b"):
            assert cluster.desired_count(CLUSTER, name) == hosts
            assert value(text, P + "service_desired_count", service=name) == hosts
            assert value(text, P + "service_target_count", service=name) == hosts
            assert value(text, P + "service_updates_total", service=name) == 1  # the first pass, then converged
        assert value(text, P + "hosts", filter=FILTER) == hosts
        assert (value(text, P + "passes_total") or 0) >= 3
        assert value(text, P + "passes_failed_total") == 0
        assert (value(text, P + "pass_duration_seconds_count") or 0) >= 3
        assert (value(text, P + "api_calls_total", operation="ListContainerInstances", outcome="ok") or 0) >= 3
        assert value(text, P + "api_calls_total", operation="UpdateService", outcome="ok") == 2
        assert (value(text, P + "seconds_since_last_success") or 99) < 5
        assert P + "events_source_up" not in text  # no EVENTS_QUEUE_URL: no events source to be up or down
        assert scrape(port, "/healthz")[0] == 200
        assert scrape(port, "/nothing")[0] == 404
        checked = subprocess.run(
            [sys.executable, RUN_PY, "healthcheck"], env=daemon_env(cluster, tmp_path, INTERVAL="0.5"),
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert checked.returncode == 0, checked.stderr
        assert daemon.stop() == 0
    assert scrape(port)[0] == 0  # the server went away with the process


def test_healthz_turns_503_while_the_api_is_down_and_recovers(cluster: LocalECS, tmp_path: Path) -> None:
    """With every call failing, /healthz is 503 after 3 x INTERVAL; the first pass after recovery converges."""
    from localecs import Fault

    port = free_port()
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="0.5", METRICS_PORT=str(port),
                METRICS_ADDR="127.0.0.1", HEARTBEAT_FILE=str(tmp_path / "heartbeat")) as daemon:
        assert daemon.wait_for(lambda: cluster.desired_count(CLUSTER, "a") == 3)
        # The first pass has ended (its coverage read comes after the write), not just the start-up grace.
        assert daemon.wait_for(lambda: scrape(port, "/healthz")[1].startswith("ok: last successful pass"))
        cluster.fault_hook = lambda request: Fault.error(500)
        try:
            down_since = time.monotonic()
            assert daemon.wait_for(lambda: scrape(port, "/healthz")[0] == 503, timeout=30)
            assert time.monotonic() - down_since >= 0.5  # not at once: only 3 x INTERVAL (1.5 s) after the last success
            status, body = scrape(port, "/healthz")
            assert status == 503 and body.startswith("unhealthy: last successful pass")
            assert daemon.wait_for(lambda: (value(scrape(port)[1], P + "passes_failed_total") or 0) >= 1, timeout=60)
            text = scrape(port)[1]
            assert sum(v for (name, labels), v in samples(text).items()
                       if name == P + "api_calls_total" and ("outcome", "error") in labels) > 0
            assert sum(v for (name, _), v in samples(text).items() if name == P + "api_retries_total") > 0
            cluster.fault_hook = None
            cluster.add_hosts(CLUSTER, 1)  # arrived during the outage
        finally:
            cluster.fault_hook = None
        assert daemon.wait_for(lambda: scrape(port, "/healthz")[0] == 200, timeout=60)
        assert cluster.desired_count(CLUSTER, "a") == 4
        assert daemon.stop() == 0


def test_metrics_port_in_use_exits_2(cluster: LocalECS) -> None:
    """A METRICS_PORT held by another process ends run.py before any pass: exit 2, one line naming METRICS_PORT."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, RUN_PY],
            env=daemon_env(cluster, CLUSTER=CLUSTER, SERVICES="a", METRICS_PORT=str(port), METRICS_ADDR="127.0.0.1"),
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "METRICS_PORT" in lines[0] and "already in use" in lines[0]
    assert cluster.count("ListContainerInstances") == 0


def test_events_counts_triggers_and_latency_are_exported() -> None:
    """The events source's running totals are exported once each; passes by trigger; event-to-update latency."""
    from ecs_cluster_manager.observe.events import EventStats

    metrics = Metrics(300)
    metrics.count_events(EventStats(received=5, relevant=2, malformed=1, ignored={"no_change": 2}, healthy=True))
    metrics.count_events(EventStats(received=7, relevant=3, malformed=1, ignored={"no_change": 3}, healthy=False))
    event_pass = report(decision("a", plan.UPDATE, 3, 4, "scale up"), hosts={FILTER: 4})
    event_pass.trigger, event_pass.event_time = "event", 1000.0
    event_pass.write_times = [1000.8]
    metrics.observe(event_pass)
    metrics.observe(report(hosts={FILTER: 4}))
    text = generate_latest(metrics.registry).decode()
    assert value(text, P + "events_received_total") == 7
    assert value(text, P + "events_relevant_total") == 3
    assert value(text, P + "events_malformed_total") == 1
    assert value(text, P + "events_ignored_total", reason="no_change") == 3
    assert value(text, P + "events_source_up") == 0
    assert value(text, P + "passes_by_trigger_total", trigger="event") == 1
    assert value(text, P + "passes_by_trigger_total", trigger="interval") == 1
    assert value(text, P + "event_to_update_seconds_count") == 1
    assert value(text, P + "event_to_update_seconds_bucket", le="1.0") == 1
    assert value(text, P + "event_to_update_seconds_bucket", le="0.5") == 0


def test_events_source_up_exists_only_with_an_events_source() -> None:
    """Without EVENTS_QUEUE_URL there is no events_source_up series (0 would read as a failing queue); the events
    source's first report creates it, 1 while the queue answers and 0 while it fails."""
    from ecs_cluster_manager.observe.events import EventStats

    metrics = Metrics(30)
    metrics.observe(report(hosts={FILTER: 3}))
    assert P + "events_source_up" not in generate_latest(metrics.registry).decode()
    metrics.count_events(EventStats(healthy=True))
    assert value(generate_latest(metrics.registry).decode(), P + "events_source_up") == 1
    metrics.count_events(EventStats(healthy=False))
    assert value(generate_latest(metrics.registry).decode(), P + "events_source_up") == 0
