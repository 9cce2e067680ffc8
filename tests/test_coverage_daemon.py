"""Coverage end to end against the local API with scheduling on: `python run.py` (logs, /status, gauges) and `check`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import RUN_PY, Daemon, daemon_env, free_port, http_get
from localecs import Fault, LocalECS, fault_on

CLUSTER = "cover"
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 100}
FULL_MEMORY = 7482  # all a local host registers: a host with this much taken cannot take the service's task
UNABLE = "was unable to place a task because no container instance met all of its requirements"


@pytest.fixture
def scheduling(ecs: LocalECS) -> LocalECS:
    """The local API with services placing their tasks, and a cluster of 3 hosts."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 3)
    return ecs


def hosts(local: LocalECS) -> list[dict[str, Any]]:
    return local.hosts(CLUSTER)


def run_check(local: LocalECS, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUN_PY, "check", *args],
        env=daemon_env(local, CLUSTER=CLUSTER, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_json(local: LocalECS, **settings: str) -> tuple[int, dict[str, Any]]:
    result = run_check(local, "--json", **settings)
    return result.returncode, json.loads(result.stdout)


def gauge(text: str, name: str, service: str) -> float | None:
    match = re.search(rf'^ecs_cluster_manager_{name}{{service="{service}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


def status(port: int) -> dict[str, Any]:
    """The daemon's /status document ({"services": {}} while its server is not up yet)."""
    try:
        code, body = http_get(port, "/status")
    except OSError:
        return {"services": {}}
    assert code == 200, body
    return dict(json.loads(body))


def test_host_too_full_is_missing_with_reason_everywhere_then_restored(scheduling: LocalECS, tmp_path: Path) -> None:
    """A host without room for the task: missing with ECS's reason in the logs, /status, gauges and check; then back."""
    local = scheduling
    full = hosts(local)[2]
    local.task_placed(CLUSTER, full["containerInstanceArn"], memory=FULL_MEMORY)
    local.create_service(CLUSTER, "agent", placement_constraints=DISTINCT, deployment_configuration=ROLLING)
    port = free_port()
    with Daemon(
        local,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="0.3",
        COVERAGE_GRACE="1",
        METRICS_PORT=str(port),
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:

        def gaps() -> list[dict[str, Any]]:
            return [e for e in daemon.events if e.get("event") == "coverage_gap"]

        assert daemon.wait_for(lambda: len(gaps()) == 1, timeout=30), daemon.lines[-5:]
        [gap] = gaps()
        assert gap["level"] == "warning" and gap["service"] == "agent"
        assert gap["containerInstanceArn"] == full["containerInstanceArn"]
        assert gap["ec2InstanceId"] == full["ec2InstanceId"]
        assert UNABLE in gap["reason"] and "insufficient memory" in gap["reason"]

        document = status(port)["services"]["agent"]
        assert document["decision"]["target"] == 3 and document["decision"]["readAt"]
        found = document["coverage"]
        assert (found["eligible"], found["covered"]) == (3, 2)
        assert found["missing"] == [
            {"containerInstanceArn": full["containerInstanceArn"], "ec2InstanceId": full["ec2InstanceId"]}
        ]
        assert "insufficient memory" in found["reason"] and found["readAt"]
        _, metrics = http_get(port, "/metrics")
        assert gauge(metrics, "hosts_eligible", "agent") == 3
        assert gauge(metrics, "hosts_covered", "agent") == 2
        assert gauge(metrics, "hosts_missing_task", "agent") == 1
        assert gauge(metrics, "hosts_extra_tasks", "agent") == 0

        # check, run meanwhile: the placement failures have gone on longer than the grace, so it fails.
        result = run_check(local, COVERAGE_GRACE="1", SERVICES="agent")
        assert result.returncode == 1, result.stdout + result.stderr
        line = next(row for row in result.stdout.splitlines() if "missing-task" in row)
        assert "error" in line and full["ec2InstanceId"] in line and "insufficient memory" in line
        assert "2/3 eligible host(s) run a task" in result.stdout
        code, checked = check_json(local, COVERAGE_GRACE="1", SERVICES="agent")
        assert code == 1 and checked["coverage"]["agent"]["missing"] == found["missing"]
        assert "insufficient memory" in checked["coverage"]["agent"]["reason"]
        # Within a long grace the same gap is only a warning.
        assert check_json(local, COVERAGE_GRACE="3600", SERVICES="agent")[0] == 0

        # Room is made: ECS places the task, and the gap ends once.
        local.task_stopped(CLUSTER, full["containerInstanceArn"], memory=FULL_MEMORY)
        assert daemon.wait_for(
            lambda: any(e.get("event") == "coverage_restored" for e in daemon.events), timeout=20
        )
        assert daemon.wait_for(lambda: status(port)["services"]["agent"]["coverage"]["covered"] == 3, timeout=10)
        _, metrics = http_get(port, "/metrics")
        assert gauge(metrics, "hosts_missing_task", "agent") == 0
        time.sleep(1.0)
        assert len(gaps()) == 1  # once per host, not once per pass
        assert daemon.stop() == 0
    # A converged daemon writes one `pass` line per pass, and each service's decision only when it changed.
    decisions = [e for e in daemon.events if e.get("event") == "decision"]
    assert len(decisions) <= 2, decisions
    assert check_json(local, COVERAGE_GRACE="1", SERVICES="agent")[0] == 0


def test_two_tasks_on_one_host_are_extra_and_distinct_instance_is_advised(scheduling: LocalECS) -> None:
    """Without distinctInstance, 3 tasks on 2 eligible hosts put two on one host: extra, with the advice."""
    local = scheduling
    local.drain(CLUSTER, hosts(local)[2]["containerInstanceArn"])
    local.create_service(CLUSTER, "stacked", desired_count=3, deployment_configuration=ROLLING)
    result = run_check(local, SERVICES="stacked")
    line = next(row for row in result.stdout.splitlines() if "extra-tasks" in row)
    assert "distinctInstance" in line
    _, checked = check_json(local, SERVICES="stacked")
    found = checked["coverage"]["stacked"]
    assert (found["eligible"], found["covered"], len(found["extra"])) == (2, 2, 1)
    assert found["extra"][0]["ec2InstanceId"] in {h["ec2InstanceId"] for h in hosts(local)}


def test_task_left_on_a_drained_host_is_misplaced(scheduling: LocalECS, tmp_path: Path) -> None:
    """A drained host whose task ECS has not stopped yet: that task is misplaced, in check and in /status."""
    local = scheduling
    local.create_service(
        CLUSTER, "agent", desired_count=3, placement_constraints=DISTINCT, deployment_configuration=ROLLING
    )
    assert len(local.tasks(CLUSTER, "agent")) == 3
    port = free_port()
    with Daemon(
        local,
        CLUSTER=CLUSTER,
        SERVICES="agent",
        INTERVAL="0.3",
        METRICS_PORT=str(port),
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: (status(port)["services"].get("agent") or {}).get("coverage") is not None)
        local.scheduler.hold_stops = True  # a deployment waiting on its minimum healthy percent
        drained = hosts(local)[0]
        local.drain(CLUSTER, drained["containerInstanceArn"])
        expected = [{key: drained[key] for key in ("containerInstanceArn", "ec2InstanceId")}]
        assert daemon.wait_for(lambda: status(port)["services"]["agent"]["coverage"]["misplaced"] == expected), (
            status(port)
        )
        _, metrics = http_get(port, "/metrics")
        assert gauge(metrics, "tasks_misplaced", "agent") == 1
        assert daemon.stop() == 0
    _, checked = check_json(local, SERVICES="agent")
    assert checked["coverage"]["agent"]["misplaced"] == expected
    assert checked["coverage"]["agent"]["eligible"] == 2


def test_old_tasks_are_outdated_until_replaced(scheduling: LocalECS) -> None:
    """After a new task definition is deployed, the old tasks are outdated until ECS replaces them."""
    local = scheduling
    local.create_service(
        CLUSTER, "agent", desired_count=3, placement_constraints=DISTINCT, deployment_configuration=ROLLING
    )
    assert check_json(local, SERVICES="agent")[1]["coverage"]["agent"]["outdated"] == []
    local.scheduler.hold_stops = True  # the deployment has not replaced anything yet
    local.update_task_definition(CLUSTER, "agent", local.register_task_definition("agent-v2"))
    _, checked = check_json(local, SERVICES="agent")
    assert len(checked["coverage"]["agent"]["outdated"]) == 3
    assert any(f["code"] == "outdated-tasks" for f in checked["findings"])
    local.scheduler.hold_stops = False
    local.scheduler.changed()
    _, checked = check_json(local, SERVICES="agent")
    assert checked["coverage"]["agent"]["outdated"] == []
    assert checked["coverage"]["agent"]["covered"] == 3


def test_a_failing_coverage_read_never_holds_up_sizing(scheduling: LocalECS, tmp_path: Path) -> None:
    """ListTasks denied: the services are still sized, the failure is logged and shown in /status, and the
    pass's remaining coverage reads are deferred rather than each failing in turn."""
    local = scheduling
    for name in ("a", "b"):
        local.create_service(CLUSTER, name, placement_constraints=DISTINCT, deployment_configuration=ROLLING)
    local.fault_hook = fault_on("ListTasks", Fault.error(400, "AccessDeniedException", "not authorized"))
    port = free_port()
    with Daemon(
        local,
        CLUSTER=CLUSTER,
        SERVICES="a b",
        INTERVAL="0.3",
        METRICS_PORT=str(port),
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:
        assert daemon.wait_for(lambda: [local.desired_count(CLUSTER, n) for n in ("a", "b")] == [3, 3])
        assert daemon.wait_for(lambda: (status(port)["services"].get("b") or {}).get("coverageError") is not None)
        failed = [e for e in daemon.events if e.get("event") == "coverage_failed"]
        # One failure ends the pass's coverage reads; the services take turns, so each one's failure shows.
        assert {e["service"] for e in failed} == {"a", "b"}
        assert all(len(e["deferred"]) <= 1 for e in failed)
        assert all(e["ok"] for e in daemon.events if e.get("event") == "pass")
        assert (tmp_path / "hb").exists()  # a pass whose coverage read failed still counts as successful
        assert daemon.stop() == 0


def test_hosts_beyond_a_max_tag_are_not_missing(scheduling: LocalECS, tmp_path: Path) -> None:
    """ecs-cluster-manager:max=2 on 6 hosts with its 2 tasks running: no coverage_gap, nothing missing in /status or
    the gauge, and check finds no gap (the 4 other hosts are not wanted)."""
    local = scheduling
    local.add_hosts(CLUSTER, 3)
    local.create_service(
        CLUSTER,
        "capped",
        placement_constraints=DISTINCT,
        deployment_configuration={"minimumHealthyPercent": 0, "maximumPercent": 100},
        tags={"ecs-cluster-manager:max": "2"},
    )
    port = free_port()
    with Daemon(
        local,
        CLUSTER=CLUSTER,
        SERVICES="capped",
        INTERVAL="0.3",
        COVERAGE_GRACE="0",
        METRICS_PORT=str(port),
        HEARTBEAT_FILE=str(tmp_path / "hb"),
    ) as daemon:

        def covered() -> dict[str, Any] | None:
            found = status(port)["services"].get("capped", {}).get("coverage")
            return found if found and found["covered"] == 2 else None

        assert daemon.wait_for(lambda: covered() is not None, timeout=30), daemon.lines[-5:]
        assert daemon.wait_passes(daemon.passes() + 3)
        found = covered()
        assert found is not None
        assert not [e for e in daemon.events if e.get("event") == "coverage_gap"]
        _, metrics = http_get(port, "/metrics")
        assert gauge(metrics, "hosts_missing_task", "capped") == 0
        assert gauge(metrics, "hosts_eligible", "capped") == 6
        assert found["missing"] == []
        assert (found["eligible"], found["wanted"], found["covered"]) == (6, 2, 2)
        assert daemon.stop() == 0
    assert local.desired_count(CLUSTER, "capped") == 2
    code, checked = check_json(local, SERVICES="capped")
    assert code == 0, checked
    assert checked["coverage"]["capped"]["missing"] == []
    assert not [f for f in checked["findings"] if f["code"] == "missing-task"]
