"""READY_ATTRIBUTE end to end: `python run.py` against the local API, which places gated application tasks.

The daemon service `agent` is managed; the application service `web` requires
`memberOf(attribute:ecs-cluster-manager.ready == true)` and is not managed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from daemon_helpers import RUN_PY, Daemon, daemon_env, free_port, http_get
from localecs import LocalECS

CLUSTER = "ready"
ATTRIBUTE = "ecs-cluster-manager.ready"
GATE = [{"type": "memberOf", "expression": f"attribute:{ATTRIBUTE} == true"}]
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 100}
FULL_MEMORY = 7482  # all a local host registers: a host with this much taken cannot take a task


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """Two hosts, the daemon service `agent` (no task yet) and the gated application service `web` (4 tasks)."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    ecs.create_service(CLUSTER, "agent", placement_constraints=DISTINCT, deployment_configuration=ROLLING)
    ecs.create_service(CLUSTER, "web", desired_count=4, placement_constraints=GATE)
    return ecs


def marked(local: LocalECS) -> set[str]:
    """The hosts with the ready attribute, as ListAttributes answers."""
    answer = local.client().list_attributes(
        cluster=CLUSTER, targetType="container-instance", attributeName=ATTRIBUTE, attributeValue="true"
    )
    return {a["targetId"] for a in answer["attributes"]}


def running_on(local: LocalECS, service: str) -> dict[str, int]:
    """Host ARN -> RUNNING tasks of the service there."""
    hosts: dict[str, int] = {}
    for task in local.tasks(CLUSTER, service):
        if task["lastStatus"] == "RUNNING" and task.get("containerInstanceArn"):
            hosts[task["containerInstanceArn"]] = hosts.get(task["containerInstanceArn"], 0) + 1
    return hosts


def run_check(local: LocalECS, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUN_PY, "check", *args],
        env=daemon_env(local, **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_json(local: LocalECS, **settings: str) -> tuple[int, dict[str, Any]]:
    result = run_check(local, "--json", **settings)
    return result.returncode, json.loads(result.stdout)


def tail(daemon: Daemon) -> str:
    return "".join(daemon.lines[-60:])


def remaining_memory(local: LocalECS, arn: str) -> int:
    described = local.client().describe_container_instances(cluster=CLUSTER, containerInstances=[arn])
    resources = described["containerInstances"][0]["remainingResources"]
    return int(next(r["integerValue"] for r in resources if r["name"] == "MEMORY"))


def host_arns(local: LocalECS) -> list[str]:
    return [h["containerInstanceArn"] for h in local.hosts(CLUSTER)]


def watch(local: LocalECS, daemon: Daemon, until: Any, timeout: float = 20) -> list[str]:
    """Poll until `until()`; at every poll, every host with the attribute runs the agent's task. Returns violations."""
    violations: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agents = running_on(local, "agent")
        for arn in marked(local):
            if arn not in agents:
                violations.append(f"{arn} has {ATTRIBUTE} without the agent's task")
        web = running_on(local, "web")
        ready = marked(local)
        for arn in web:
            if arn not in ready:
                violations.append(f"a web task runs on {arn}, which never had {ATTRIBUTE}")
        if until():
            return violations
        time.sleep(0.1)
    raise AssertionError(f"timed out; daemon output:\n{tail(daemon)}")


def test_a_new_host_gets_the_attribute_only_once_its_daemon_task_runs(cluster: LocalECS) -> None:
    """The attribute follows the agent's RUNNING task; web is placed only on hosts that have it."""
    local = cluster
    assert running_on(local, "web") == {}  # no host is ready yet: the gated service places nothing
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE, COVERAGE_GRACE="30"
    ) as daemon:
        everywhere = lambda: len(marked(local)) == 2 and sum(running_on(local, "web").values()) == 4  # noqa: E731
        violations = watch(local, daemon, everywhere)
        assert violations == []
        # A new host too full for the agent's task: not ready, so no web task lands there.
        full = local.add_hosts(CLUSTER, 1, reserved_memory=FULL_MEMORY)[0]
        violations = watch(local, daemon, lambda: daemon.passes() >= 8, timeout=20)
        assert full not in marked(local)
        assert full not in running_on(local, "web")
        assert violations == []
        # Room on it: the agent's task is placed, then the host is marked ready.
        local.task_stopped(CLUSTER, full, memory=FULL_MEMORY)
        violations = watch(local, daemon, lambda: full in marked(local))
        assert violations == []
        assert full in running_on(local, "agent")
        ready = [e for e in daemon.events if e.get("event") == "hosts_ready"]
        assert any(full in e["hosts"] for e in ready)


def test_a_host_whose_daemon_task_is_gone_past_the_grace_loses_the_attribute(cluster: LocalECS) -> None:
    """The agent's task stops and cannot come back: after COVERAGE_GRACE the attribute goes; web keeps running."""
    local = cluster
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE, COVERAGE_GRACE="1"
    ) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2 and sum(running_on(local, "web").values()) == 4)
        victim = host_arns(local)[0]
        web_before = running_on(local, "web").get(victim, 0)
        assert web_before > 0
        task = next(t for t in local.tasks(CLUSTER, "agent") if t.get("containerInstanceArn") == victim)
        # One MiB too few for the agent's task to come back once it stops.
        local.task_placed(CLUSTER, victim, memory=remaining_memory(local, victim) + 1)
        local.client().stop_task(cluster=CLUSTER, task=task["taskArn"], reason="test: agent crashed")
        deadline = time.monotonic() + 20
        while victim in marked(local) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert victim not in marked(local), tail(daemon)
        assert running_on(local, "web").get(victim, 0) == web_before  # a deleted attribute moves no task
        gone = [e for e in daemon.events if e.get("event") == "host_not_ready"]
        assert gone and gone[0]["containerInstanceArn"] == victim
        assert "agent missing its task" in gone[0]["reason"]


def test_a_draining_host_loses_the_attribute(cluster: LocalECS) -> None:
    local = cluster
    with Daemon(local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2)
        drained = host_arns(local)[1]
        local.drain(CLUSTER, drained)
        deadline = time.monotonic() + 20
        while drained in marked(local) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert drained not in marked(local), tail(daemon)
        assert len(marked(local)) == 1


def test_with_task_events_a_daemon_task_that_runs_marks_its_host_within_2s(cluster: LocalECS) -> None:
    """With events and a long INTERVAL, the agent's task reaching RUNNING on a new host marks it in about a second."""
    local = cluster
    queue = local.enable_events(CLUSTER, task_events=True)
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="120", EVENTS_QUEUE_URL=queue, READY_ATTRIBUTE=ATTRIBUTE
    ) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2)
        full = local.add_hosts(CLUSTER, 1, reserved_memory=FULL_MEMORY)[0]
        watch(local, daemon, lambda: local.desired_count(CLUSTER, "agent") == 3)
        time.sleep(1.0)
        assert full not in marked(local)
        local.task_stopped(CLUSTER, full, memory=FULL_MEMORY)  # room: the agent's task starts there
        started = time.monotonic()
        watch(local, daemon, lambda: full in running_on(local, "agent"))
        watch(local, daemon, lambda: full in marked(local), timeout=5)
        assert time.monotonic() - started < 2.5
        assert any(e.get("event") == "task_event" for e in daemon.events)


def test_dry_run_writes_no_attribute_and_says_what_it_would(cluster: LocalECS) -> None:
    local = cluster
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE, DRY_RUN="1"
    ) as daemon:
        local.update_desired_count(CLUSTER, "agent", 2)
        assert daemon.wait_for(
            lambda: any(e.get("event") == "readiness" and e.get("would_put") for e in daemon.events), timeout=20
        ), tail(daemon)
        assert marked(local) == set()
        assert local.count("PutAttributes") == 0


def test_status_and_gauge_show_readiness(cluster: LocalECS) -> None:
    local = cluster
    full = local.add_hosts(CLUSTER, 1, reserved_memory=FULL_MEMORY)[0]
    port = free_port()
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE, METRICS_PORT=str(port)
    ) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2)

        def not_ready() -> list[dict[str, Any]]:
            code, body = http_get(port, "/status")
            return list(json.loads(body).get("readiness", {}).get("notReady", [])) if code == 200 else []

        assert daemon.wait_for(lambda: any(h["containerInstanceArn"] == full for h in not_ready()), timeout=20)
        entry = next(h for h in not_ready() if h["containerInstanceArn"] == full)
        assert "agent" in entry["why"]
        _, metrics = http_get(port, "/metrics")
        assert "ecs_cluster_manager_hosts_ready 2.0" in metrics or "ecs_cluster_manager_hosts_ready 2\n" in metrics


def test_check_shows_each_host_ready_or_not_and_why(cluster: LocalECS) -> None:
    """check, per host: ready (attribute set) or not, why, and what the daemon would write; --json too."""
    local = cluster
    full = local.add_hosts(CLUSTER, 1, reserved_memory=FULL_MEMORY)[0]
    with Daemon(local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", READY_ATTRIBUTE=ATTRIBUTE) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2 and len(running_on(local, "agent")) == 2)
    settings = {"CLUSTER": CLUSTER, "SERVICES": "agent", "READY_ATTRIBUTE": ATTRIBUTE}
    table = run_check(local, **settings)
    lines = table.stdout.splitlines()
    not_ready = [line for line in lines if "not-ready" in line]
    assert len(not_ready) == 1, table.stdout
    assert "no RUNNING task of agent" in not_ready[0]
    assert f"lacks {ATTRIBUTE}" in not_ready[0]
    assert len([line for line in lines if line.split()[1:3] == ["info", "ready"]]) == 2, table.stdout
    code, document = check_json(local, **settings)
    by_host = {h["containerInstanceArn"]: h for h in document["readiness"]}
    assert by_host[full]["ready"] is False and by_host[full]["attribute"] is False
    assert sum(1 for h in by_host.values() if h["ready"] and h["attribute"]) == 2
    assert by_host[full]["ec2InstanceId"].startswith("i-")
    # A host that has the attribute but whose agent task is gone for longer than the grace: the daemon would delete.
    local.set_attributes(CLUSTER, full, {ATTRIBUTE: "true"})
    code, document = check_json(local, COVERAGE_GRACE="0", **settings)
    by_host = {h["containerInstanceArn"]: h for h in document["readiness"]}
    assert by_host[full]["attribute"] is True and by_host[full]["daemonWould"] == "delete", by_host[full]


def test_with_events_and_a_long_interval_a_gap_past_the_grace_still_removes_the_attribute(cluster: LocalECS) -> None:
    """Only time makes a gap pass COVERAGE_GRACE: with events and INTERVAL=300 the loop still looks again, at least
    every quarter of the grace while a host misses its task, so the attribute goes about when the grace ends."""
    local = cluster
    queue = local.enable_events(CLUSTER, task_events=True)
    with Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="300", EVENTS_QUEUE_URL=queue, READY_ATTRIBUTE=ATTRIBUTE,
        COVERAGE_GRACE="2",
    ) as daemon:
        watch(local, daemon, lambda: len(marked(local)) == 2)
        victim = host_arns(local)[0]
        web = running_on(local, "web").get(victim, 0)
        task = next(t for t in local.tasks(CLUSTER, "agent") if t.get("containerInstanceArn") == victim)
        local.task_placed(CLUSTER, victim, memory=remaining_memory(local, victim) + 1)
        local.client().stop_task(cluster=CLUSTER, task=task["taskArn"], reason="test: agent crashed")
        stopped = time.monotonic()
        # The stop's events start a pass that sees the host missing; nothing else would start one for 300 s.
        deadline = stopped + 20
        while victim in marked(local) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert victim not in marked(local), tail(daemon)
        assert time.monotonic() - stopped < 12
        assert running_on(local, "web").get(victim, 0) == web
