"""End to end: `python run.py` as a subprocess against the local ECS API, checked with a plain boto3 client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import RUN_PY, Daemon, daemon_env, decisions, events, free_port, http_get, run_once
from ecs_cluster_manager.model import plan
from localecs import LocalECS

CLUSTER = "prod"
DISTINCT = [{"type": "distinctInstance"}]


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """A cluster with 3 hosts and services a and b at desiredCount 0."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3)
    for name in ("a", "b"):
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    ecs.clear_calls()
    return ecs


def counts(local: LocalECS, *names: str) -> list[int]:
    return [local.desired_count(CLUSTER, name) for name in names]


def test_scales_up_to_the_host_count(cluster: LocalECS) -> None:
    """Each managed service goes to the number of hosts, and follows when hosts are added."""
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a,b")
    assert result.returncode == 0, result.stderr
    assert counts(cluster, "a", "b") == [3, 3]
    cluster.add_hosts(CLUSTER, 2)
    assert run_once(cluster, CLUSTER=CLUSTER, SERVICES="a b").returncode == 0
    assert counts(cluster, "a", "b") == [5, 5]


def test_decision_events_carry_the_fields(cluster: LocalECS) -> None:
    """Each decision is logged with cluster, service, hosts, current, target, action and reason."""
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    decision = decisions(result.stdout)["a"]
    assert {k: decision[k] for k in ("cluster", "service", "hosts", "current", "target", "action")} == {
        "cluster": CLUSTER,
        "service": "a",
        "hosts": 3,
        "current": 0,
        "target": 3,
        "action": "update",
    }
    assert decision["reason"]
    summary = [e for e in events(result.stdout) if e["event"] == "pass"]
    assert len(summary) == 1 and summary[0]["api_calls"] == cluster.count("DescribeClusters") + cluster.count(
        "ListContainerInstances"
    ) + cluster.count(
        "DescribeServices"
    ) + cluster.count("UpdateService")
    assert "duration" in summary[0]
    assert "testing" not in result.stdout  # the dummy credentials never reach a log line


def test_scales_down_when_a_host_drains_or_is_deregistered(cluster: LocalECS) -> None:
    """DRAINING and deregistered hosts are not counted."""
    hosts = cluster.client().list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    cluster.drain(CLUSTER, hosts[0])
    assert run_once(cluster, CLUSTER=CLUSTER, SERVICES="a").returncode == 0
    assert counts(cluster, "a") == [2]
    cluster.deregister(CLUSTER, hosts[1])
    assert run_once(cluster, CLUSTER=CLUSTER, SERVICES="a").returncode == 0
    assert counts(cluster, "a") == [1]


def test_disconnected_agents_are_not_counted(cluster: LocalECS) -> None:
    """A host whose agent is disconnected does not count (the filter is sent and evaluated)."""
    hosts = cluster.client().list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    cluster.set_agent_connected(CLUSTER, hosts[0], False)
    run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    assert counts(cluster, "a") == [2]


def test_a_converged_pass_writes_nothing(cluster: LocalECS) -> None:
    """When every service is at its target, no UpdateService call is made."""
    run_once(cluster, CLUSTER=CLUSTER, SERVICES="a b")
    cluster.clear_calls()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a b")
    assert result.returncode == 0
    assert cluster.count("UpdateService") == 0
    assert {d["action"] for d in decisions(result.stdout).values()} == {"unchanged"}


@pytest.mark.parametrize(("argv", "settings"), [(["--dry-run"], {}), (["--noop"], {}), ([], {"DRY_RUN": "true"})])
def test_dry_run_changes_nothing(cluster: LocalECS, argv: list[str], settings: dict[str, str]) -> None:
    """A dry run logs action dry-run with the target and never calls UpdateService."""
    result = run_once(cluster, *argv, CLUSTER=CLUSTER, SERVICES="a", **settings)
    assert result.returncode == 0
    assert counts(cluster, "a") == [0]
    assert cluster.count("UpdateService") == 0
    decision = decisions(result.stdout)["a"]
    assert (decision["action"], decision["target"]) == ("dry-run", 3)


def test_a_missing_service_does_not_stop_the_others(cluster: LocalECS) -> None:
    """A missing or deleted service is skipped with an error; the others are updated; --once exits 1."""
    cluster.create_service(CLUSTER, "gone")
    cluster.delete_service(CLUSTER, "gone")
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a nope gone b")
    assert result.returncode == 1
    assert counts(cluster, "a", "b") == [3, 3]
    found = decisions(result.stdout)
    assert found["nope"]["action"] == "skip" and found["nope"]["level"] == "error"
    assert found["gone"]["action"] == "skip" and "INACTIVE" in found["gone"]["reason"]


def test_service_named_twice_is_managed_once(cluster: LocalECS) -> None:
    """A service given by name and by ARN is described and updated once."""
    arn = cluster.client().describe_services(cluster=CLUSTER, services=["a"])["services"][0]["serviceArn"]
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES=f"a, {arn}")
    assert result.returncode == 0
    assert cluster.count("UpdateService") == 1
    assert counts(cluster, "a") == [3]


def test_a_failed_page_of_the_host_listing_writes_nothing(cluster: LocalECS) -> None:
    """When page 2 of ListContainerInstances fails, no service is changed in that pass."""
    cluster.add_hosts(CLUSTER, 150)

    def fail_second_page(request: object) -> object:
        if getattr(request, "operation", "") == "ListContainerInstances" and "nextToken" in getattr(
            request, "params", {}
        ):
            return cluster_fault_error()
        return None

    cluster.fault_hook = fail_second_page
    try:
        result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a b")
    finally:
        cluster.fault_hook = None
    assert result.returncode == 1
    assert cluster.count("UpdateService") == 0
    assert counts(cluster, "a", "b") == [0, 0]
    assert any(e["event"] == "pass_failed" for e in events(result.stdout))


def cluster_fault_error() -> object:
    from localecs import Fault

    return Fault.error(500)


def test_issue_scale_250_hosts_12_services(ecs: LocalECS) -> None:
    """250 ACTIVE hosts (50 disconnected) and 12 services: all go to 200 in one pass with the fewest calls."""
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 250)
    for arn in hosts[:50]:
        ecs.set_agent_connected(CLUSTER, arn, False)
    names = [f"svc-{i:02d}" for i in range(12)]
    for name in names:
        ecs.create_service(CLUSTER, name, placement_constraints=DISTINCT)
    ecs.clear_calls()

    result = run_once(ecs, CLUSTER=CLUSTER, SERVICES=" ".join(names))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [ecs.desired_count(CLUSTER, n) for n in names] == [200] * 12
    # First pass, exact: 3 pages of ACTIVE hosts, one of disconnected ones, one of DRAINING ones.
    assert ecs.count("ListContainerInstances") <= 5
    assert ecs.count("DescribeClusters") <= 1
    assert ecs.count("DescribeServices") <= 2
    assert ecs.count("UpdateService") == 12

    ecs.clear_calls()
    again = run_once(ecs, CLUSTER=CLUSTER, SERVICES=" ".join(names))
    assert again.returncode == 0
    assert ecs.count("UpdateService") == 0


def test_loop_follows_hosts_and_damps_scale_down(cluster: LocalECS, tmp_path: Path) -> None:
    """In the loop, a new host raises the count at once; a lost agent lowers it only after 2 passes."""
    hosts = cluster.client().list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="0.3", HEARTBEAT_FILE=str(tmp_path / "hb")) as daemon:
        assert daemon.wait_for(lambda: counts(cluster, "a") == [3])
        cluster.add_hosts(CLUSTER, 1)
        assert daemon.wait_for(lambda: counts(cluster, "a") == [4])
        cluster.set_agent_connected(CLUSTER, hosts[0], False)
        start = daemon.passes()
        assert daemon.wait_for(lambda: counts(cluster, "a") == [3])
        # At least two passes saw the lower target before it was applied (the writing pass logs its `pass`
        # line when it ends, after its coverage read).
        assert daemon.wait_for(lambda: daemon.passes() - start >= 2, timeout=5)
        held = [e for e in daemon.events if e.get("event") == "decision" and "held" in e.get("reason", "")]
        assert held and held[0]["action"] == "unchanged"
        assert daemon.stop() == 0
    assert (tmp_path / "hb").exists()


def test_sigterm_while_sleeping_exits_0_promptly(cluster: LocalECS) -> None:
    """ECS stops tasks with SIGTERM: the daemon ends within about a second and exits 0."""
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="60") as daemon:
        assert daemon.wait_passes(1)
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=10)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 3, f"took {elapsed:.1f}s"


def test_sigint_exits_0(cluster: LocalECS) -> None:
    """Ctrl-C (SIGINT) stops the loop cleanly with exit 0 and no traceback."""
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="60") as daemon:
        assert daemon.wait_passes(1)
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(timeout=10) == 0
        assert "Traceback" not in daemon.stderr()


@pytest.mark.parametrize(
    ("argv", "settings", "names"),
    [
        ([], {"SERVICES": "a"}, "CLUSTER"),
        ([], {"CLUSTER": CLUSTER}, "SERVICES"),
        ([], {"CLUSTER": CLUSTER, "SERVICES": " ,, "}, "SERVICES"),
        ([], {"CLUSTER": CLUSTER, "SERVICES": "a", "INTERVAL": "0"}, "INTERVAL"),
        ([], {"CLUSTER": CLUSTER, "SERVICES": "a", "INTERVAL": "abc"}, "INTERVAL"),
        (["--interval", "-1"], {"CLUSTER": CLUSTER, "SERVICES": "a"}, "--interval"),
        (["--frobnicate"], {"CLUSTER": CLUSTER, "SERVICES": "a"}, "--frobnicate"),
        ([], {"CLUSTER": CLUSTER, "SERVICES": "a", "AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, "AWS_REGION"),
        ([], {"CLUSTER": "no-such-cluster", "SERVICES": "a"}, "CLUSTER"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(
    ecs: LocalECS, argv: list[str], settings: dict[str, str], names: str
) -> None:
    """Each configuration error exits 2 with one line on stderr naming the variable or flag, no traceback."""
    env = daemon_env(ecs)
    for key in ("CLUSTER", "SERVICES"):
        env.pop(key, None)
    env.update(settings)
    result = subprocess.run(
        [sys.executable, RUN_PY, "--once", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
    assert "Traceback" not in result.stderr


# -- what an operator sees: an empty selection, credentials, signals, the endpoint ----------------------




@pytest.mark.parametrize(
    "selection",
    [
        {"MANAGED_TAG": "ecs-cluster-manager:manged=true"},
        {"SERVICE_REGEX": "log-*"},
    ],
    ids=["managed-tag-typo", "regex-matching-no-name"],
)
def test_once_that_manages_nothing_warns_and_exits_1(cluster: LocalECS, selection: dict[str, str]) -> None:
    """--once with a selection that matches no service logs a warning naming it and the cluster, and exits 1."""
    result = run_once(cluster, CLUSTER=CLUSTER, **selection)
    assert result.returncode == 1, result.stdout + result.stderr
    [warning] = [e for e in events(result.stdout) if e.get("event") == "no_managed_services"]
    assert warning["level"] == "warning" and warning["cluster"] == CLUSTER
    (name, value), = selection.items()
    assert f"{name}={value!r}" in warning["selection"]
    assert counts(cluster, "a", "b") == [0, 0]


def test_loop_that_manages_nothing_warns_when_it_starts_and_says_so_in_healthz_and_metrics(
    cluster: LocalECS, tmp_path: Path
) -> None:
    """At INTERVAL=0.2 the warning comes once, and again only after services were found and lost.

    /healthz says so in its body, and the managed-services gauge follows.
    """
    port = free_port()
    with Daemon(
        cluster,
        CLUSTER=CLUSTER,
        MANAGED_TAG="managed",
        INTERVAL="0.2",
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_passes(5)
        status, body = http_get(port, "/healthz")
        assert status == 200 and "managing no services" in body and "MANAGED_TAG='managed'" in body, body
        assert CLUSTER in body
        assert "ecs_cluster_manager_managed_services 0.0" in http_get(port, "/metrics")[1]

        cluster.client().tag_resource(
            resourceArn=cluster.client().describe_services(cluster=CLUSTER, services=["a"])["services"][0][
                "serviceArn"
            ],
            tags=[{"key": "managed", "value": "yes"}],
        )
        assert daemon.wait_for(lambda: counts(cluster, "a") == [3])
        assert daemon.wait_for(lambda: "ecs_cluster_manager_managed_services 1.0" in http_get(port, "/metrics")[1])
        assert "managing no services" not in http_get(port, "/healthz")[1]
        found = [e for e in daemon.events if e.get("event") == "managed_services_found"]
        assert found and found[0]["services"] == 1

        cluster.delete_service(CLUSTER, "a")
        start = daemon.passes()
        assert daemon.wait_passes(start + 5)
        assert daemon.stop() == 0
    warnings = [e for e in daemon.events if e.get("event") == "no_managed_services"]
    assert len(warnings) == 2, [e.get("event") for e in daemon.events]


def no_credentials_env(local: LocalECS, **settings: str) -> dict[str, str]:
    """The daemon's environment with no credentials anywhere boto3 looks."""
    env = daemon_env(local, **settings)
    for name in list(env):
        secret = name in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"}
        if secret or name.startswith("AWS_CONTAINER_"):
            del env[name]
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
    return env


@pytest.mark.parametrize("argv", [[], ["--once"]], ids=["loop", "once"])
def test_no_credentials_on_the_first_pass_exits_2_saying_where_boto3_looked(
    cluster: LocalECS, tmp_path: Path, argv: list[str]
) -> None:
    """Without any credentials the daemon exits 2 at its first pass with one line naming every place boto3 looked."""
    env = no_credentials_env(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="0.2", HEARTBEAT_FILE=str(tmp_path / "h"))
    result = subprocess.run(
        [sys.executable, RUN_PY, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ecs-cluster-manager: error: AWS credentials: ")
    for place in ("environment", "AWS_ACCESS_KEY_ID", "profile", "container role", "instance role"):
        assert place in line, line
    assert "Traceback" not in result.stderr


def test_a_credentials_fault_after_the_first_pass_is_transient(cluster: LocalECS, tmp_path: Path) -> None:
    """Credentials refused after a good first pass fail only those passes; the loop goes on and recovers."""
    from localecs import Fault, fault_on

    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="0.2", HEARTBEAT_FILE=str(tmp_path / "h")) as daemon:
        assert daemon.wait_passes(1)
        cluster.fault_hook = fault_on(
            "DescribeServices", Fault.error(400, "ExpiredTokenException", "The security token included has expired")
        )
        assert daemon.wait_for(lambda: sum(e.get("event") == "pass_failed" for e in daemon.events) >= 3)
        assert daemon.process.poll() is None
        cluster.fault_hook = None
        cluster.add_hosts(CLUSTER, 1)
        assert daemon.wait_for(lambda: counts(cluster, "a") == [4])
        assert daemon.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_slow_call_says_what_it_waits_for_and_a_second_exits_at_once(
    cluster: LocalECS, tmp_path: Path, signum: int
) -> None:
    """The first signal logs `stopping` naming the call on the wire; a second one ends the process at once."""
    import threading

    from localecs import Fault, fault_on

    slow = fault_on("ListContainerInstances", Fault.delay(8))
    on_the_wire = threading.Event()

    def hook(request: Any) -> Any:
        fault = slow(request)
        if fault is not None:
            on_the_wire.set()
        return fault

    cluster.fault_hook = hook
    with Daemon(cluster, CLUSTER=CLUSTER, SERVICES="a", INTERVAL="60", HEARTBEAT_FILE=str(tmp_path / "h")) as daemon:
        assert on_the_wire.wait(30)
        time.sleep(0.3)
        daemon.process.send_signal(signum)
        assert daemon.wait_for(lambda: any(e.get("event") == "stopping" for e in daemon.events), timeout=5)
        [stopping] = [e for e in daemon.events if e.get("event") == "stopping"]
        assert stopping["operation"] == "ListContainerInstances"
        assert "ListContainerInstances" in stopping["waiting_for"]
        assert daemon.process.poll() is None  # still waiting for the call
        started = time.monotonic()
        daemon.process.send_signal(signum)
        code = daemon.process.wait(timeout=10)
        elapsed = time.monotonic() - started
    assert code == 128 + signum
    assert elapsed < 2, f"took {elapsed:.1f}s"


def test_start_and_cluster_not_found_name_a_configured_endpoint(cluster: LocalECS) -> None:
    """A leftover AWS_ENDPOINT_URL shows: the start event and the not-found line name the endpoint."""
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    [start] = [e for e in events(result.stdout) if e.get("event") == "start"]
    assert start["endpoint"] == cluster.endpoint_url
    missing = run_once(cluster, CLUSTER="elsewhere", SERVICES="a")
    assert missing.returncode == 2
    assert cluster.endpoint_url in missing.stderr and "region us-east-1" in missing.stderr, missing.stderr


def test_debug_logs_each_api_call(cluster: LocalECS) -> None:
    """LOG_LEVEL=DEBUG adds one api_call event per HTTP attempt, with operation, duration, outcome and page."""
    cluster.add_hosts(CLUSTER, 150)  # two pages of ListContainerInstances
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a", LOG_LEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    calls = [e for e in events(result.stdout) if e.get("event") == "api_call"]
    # --once keeps nothing for a next pass: 2 pages of ACTIVE hosts and 1 of disconnected ones.
    assert [(c["operation"], c["outcome"], c["page"]) for c in calls] == [
        ("DescribeServices", "ok", None),
        ("ListContainerInstances", "ok", 1),
        ("ListContainerInstances", "ok", 2),
        ("ListContainerInstances", "ok", 1),
        ("UpdateService", "ok", None),
    ]
    assert all(c["level"] == "debug" and isinstance(c["duration"], float) for c in calls)
    quiet = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    assert not [e for e in events(quiet.stdout) if e.get("event") == "api_call"]


@pytest.mark.parametrize("after", [1, 3])
def test_the_configured_scale_down_after_is_the_number_of_passes(cluster: LocalECS, tmp_path: Path, after: int) -> None:
    """With SCALE_DOWN_AFTER=N, a lost agent is held N x INTERVAL seconds, then lowered for."""
    hosts = cluster.client().list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    hold = after * 0.3
    with Daemon(
        cluster,
        CLUSTER=CLUSTER,
        SERVICES="a",
        INTERVAL="0.3",
        SCALE_DOWN_AFTER=str(after),
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: counts(cluster, "a") == [3])
        lost_at = time.monotonic()
        cluster.set_agent_connected(CLUSTER, hosts[0], False)  # held; a drained host would go at once
        assert daemon.wait_for(lambda: counts(cluster, "a") == [2])
        assert time.monotonic() - lost_at >= hold
        assert daemon.stop() == 0
    seen = [e for e in daemon.events if e.get("event") == "decision" and e.get("hosts") == 2]
    actions = [e["action"] for e in seen]
    assert "update" in actions and set(actions[: actions.index("update")]) <= {"unchanged"}, seen
    assert all(f"of {plan.seconds(hold)})" in e["reason"] for e in seen[: actions.index("update")])
    assert seen[actions.index("update")]["reason"] == f"scale down: agent lost for {plan.seconds(hold)} or more"


def test_a_read_longer_than_10s_times_out_and_is_retried(cluster: LocalECS) -> None:
    """A call the API answers only after 16 s is cut off by the 10 s read timeout and retried, not waited for."""
    from localecs import Fault, fault_on

    cluster.fault_hook = fault_on("ListContainerInstances", Fault.delay(16), times=1)
    started = time.monotonic()
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="a")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(cluster, "a") == [3]
    [summary] = [e for e in events(result.stdout) if e.get("event") == "pass"]
    assert 9.5 < summary["duration"] < 14, summary
    assert elapsed < 20


def test_start_event_names_every_setting_that_shapes_decisions(cluster: LocalECS, tmp_path: Path) -> None:
    """The `start` event confirms SCALE_DOWN_AFTER, the CloudFormation guard and the metrics port, beside the rest."""
    port = free_port()
    result = run_once(
        cluster,
        CLUSTER=CLUSTER,
        SERVICES="a",
        SCALE_DOWN_AFTER="4",
        CLOUDFORMATION_GUARD="off",
        METRICS_PORT=str(port),
        METRICS_ADDR="127.0.0.1",
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [start] = [e for e in events(result.stdout) if e.get("event") == "start"]
    assert {k: start.get(k) for k in ("scale_down_after", "cloudformation_guard", "metrics_port", "dry_run")} == {
        "scale_down_after": 4,
        "cloudformation_guard": False,
        "metrics_port": port,
        "dry_run": False,
    }


@pytest.mark.parametrize(("interval", "warned"), [("0.5", True), ("4.9", True), ("5", False), ("30", False)])
def test_an_interval_below_5s_warns_at_start_with_its_cost(
    cluster: LocalECS, tmp_path: Path, interval: str, warned: bool
) -> None:
    """INTERVAL below 5 s is accepted, but the loop warns once at start-up with the ECS calls an hour it costs."""
    settings = {"CLUSTER": CLUSTER, "SERVICES": "a", "INTERVAL": interval, "HEARTBEAT_FILE": str(tmp_path / "hb")}
    with Daemon(cluster, **settings) as daemon:
        assert daemon.wait_passes(1, timeout=30)
        assert daemon.stop() == 0
    found = [e for e in daemon.events if e.get("event") == "interval_short"]
    assert bool(found) is warned
    if warned:
        [warning] = found
        per_hour = f"{3 * 3600 / float(interval):,.0f} calls an hour"
        assert warning["level"] == "warning" and per_hour in warning["message"], warning
        assert "throttling" in warning["message"]


def test_a_service_check_calls_an_error_is_sized_with_a_warning(cluster: LocalECS) -> None:
    """A service without distinctInstance (check's no-distinct-instance error) is still sized, but `--once` logs a
    service_misconfigured warning with check's code; a clean service gets none."""
    cluster.create_service(CLUSTER, "nodistinct")
    cluster.create_service(
        CLUSTER, "clean", placement_constraints=DISTINCT,
        deployment_configuration={"minimumHealthyPercent": 0, "maximumPercent": 100},
    )
    result = run_once(cluster, CLUSTER=CLUSTER, SERVICES="nodistinct clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(cluster, "nodistinct", "clean") == [3, 3]
    warnings = [e for e in events(result.stdout) if e.get("event") == "service_misconfigured"]
    assert [(w["service"], w["code"], w["level"]) for w in warnings] == [
        ("nodistinct", "no-distinct-instance", "warning")
    ]
    assert "distinctInstance" in warnings[0]["message"]


def test_the_loop_warns_about_a_misconfigured_service_once(cluster: LocalECS, tmp_path: Path) -> None:
    """The loop logs service_misconfigured when it first sizes the service, not on every pass."""
    cluster.create_service(CLUSTER, "nodistinct")
    settings = {"CLUSTER": CLUSTER, "SERVICES": "nodistinct", "INTERVAL": "0.2", "HEARTBEAT_FILE": str(tmp_path / "hb")}
    with Daemon(cluster, **settings) as daemon:
        assert daemon.wait_passes(4, timeout=30)
        assert daemon.stop() == 0
    assert [e["code"] for e in daemon.events if e.get("event") == "service_misconfigured"] == ["no-distinct-instance"]
