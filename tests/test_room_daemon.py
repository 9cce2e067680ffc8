"""Room made for a daemon's task on a full host, end to end: `python run.py` against the local API, scheduling on.

The cluster: 3 hosts; the managed service `agent` (1024 MiB, distinctInstance)
runs on two, and the third is full: a task of the preemptible service `web`
(4000 MiB), one of the preemptible `cache` (200 MiB), one of `db` (1500 MiB,
not preemptible: stopping it alone would free enough with less memory taken)
and a task of no service, leaving 482 MiB. `agent` is created first, so the
local scheduler places its task before the others' when room is made.
"""

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
from localecs import LocalECS

CLUSTER = "room"
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 0, "maximumPercent": 100}
MAKE_ROOM = "ecs-cluster-manager:make-room"
PREEMPTIBLE = "ecs-cluster-manager:preemptible"
HOST_MEMORY = 7482
MISSING_ATTRIBUTE = (
    "service agent was unable to place a task because no container instance met all of its requirements. "
    "The closest matching container-instance {host} is missing an attribute required by your task."
)


def full_host(local: LocalECS, *, make_room: bool = True, preemptible: bool = True) -> tuple[list[str], str]:
    """The cluster of the module docstring, agent at desiredCount 0; returns (hosts, the full host)."""
    local.scheduler.enabled = True
    local.create_cluster(CLUSTER)
    hosts = local.add_hosts(CLUSTER, 3)
    agent_tags = {MAKE_ROOM: "true"} if make_room else {}
    local.create_service(
        CLUSTER, "agent", task_definition=local.register_task_definition("agent", memory=1024),
        placement_constraints=DISTINCT, deployment_configuration=ROLLING, tags=agent_tags,
    )
    moved = {PREEMPTIBLE: "true"} if preemptible else {}
    for name, memory, tags in (("web", 4000, moved), ("cache", 200, moved), ("db", 1500, {})):
        local.create_service(
            CLUSTER, name, desired_count=1, task_definition=local.register_task_definition(name, memory=memory),
            tags=tags,
        )
    [full] = {local.tasks(CLUSTER, name)[0]["containerInstanceArn"] for name in ("web", "cache", "db")}
    local.task_placed(CLUSTER, full, cpu=0, memory=HOST_MEMORY - 5700 - 482)  # a task of no service
    return hosts, full


def stop_calls(local: LocalECS) -> list[dict[str, Any]]:
    return [call.params for call in local.calls if call.operation == "StopTask"]


def named(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events if e.get("event") == event]


def agent_hosts(local: LocalECS) -> set[str]:
    return {t["containerInstanceArn"] for t in local.tasks(CLUSTER, "agent") if t["lastStatus"] == "RUNNING"}


def run_daemon(local: LocalECS, tmp_path: Path, **settings: str) -> Daemon:
    return Daemon(
        local, CLUSTER=CLUSTER, SERVICES="agent", INTERVAL="0.3", COVERAGE_GRACE="1",
        HEARTBEAT_FILE=str(tmp_path / "hb"), **settings,
    )


def test_a_full_host_gets_its_daemon_task_after_exactly_the_needed_task_is_stopped(
    ecs: LocalECS, tmp_path: Path
) -> None:
    """Past the grace the manager stops web's task alone (the one task that frees enough; db would too, but it is
    not preemptible), with its reason; agent's task is placed there and web's again on another host; room_made
    names it all, the counter counts it, and nothing else is stopped."""
    local = ecs
    hosts, full = full_host(local)
    [web_task] = local.tasks(CLUSTER, "web")
    ec2 = {h["containerInstanceArn"]: h["ec2InstanceId"] for h in local.hosts(CLUSTER)}
    port = free_port()
    with run_daemon(local, tmp_path, METRICS_PORT=str(port)) as daemon:
        assert daemon.wait_for(lambda: len(named(daemon, "room_made")) == 1, timeout=30), daemon.lines[-5:]
        [made] = named(daemon, "room_made")
        assert made["level"] == "warning" and made["service"] == "agent"
        assert (made["containerInstanceArn"], made["ec2InstanceId"]) == (full, ec2[full])
        assert made["tasks"] == [web_task["taskArn"]] and made["services"] == ["web"]
        assert "insufficient memory" in made["reason"]
        assert daemon.wait_for(lambda: agent_hosts(local) == set(hosts), timeout=20)
        [moved] = local.tasks(CLUSTER, "web")
        assert moved["containerInstanceArn"] != full and moved["taskArn"] != web_task["taskArn"]
        assert {local.tasks(CLUSTER, name)[0]["containerInstanceArn"] for name in ("cache", "db")} == {full}
        assert daemon.wait_for(lambda: bool(named(daemon, "coverage_restored")), timeout=20)
        _, metrics = http_get(port, "/metrics")
        assert re.search(
            r'^ecs_cluster_manager_tasks_preempted_total\{for_service="agent",service="web"\} 1\.0$', metrics, re.M
        ), metrics
        time.sleep(1.5)  # more passes, past another grace: nothing more is stopped
        assert daemon.stop() == 0
    assert stop_calls(local) == [
        {"cluster": CLUSTER, "task": web_task["taskArn"], "reason": "ecs-cluster-manager: making room for agent"}
    ]
    [stopped] = local.client().describe_tasks(cluster=CLUSTER, tasks=[web_task["taskArn"]])["tasks"]
    assert stopped["lastStatus"] == "STOPPED"
    assert stopped["stoppedReason"] == "ecs-cluster-manager: making room for agent"


@pytest.mark.parametrize(
    ("make_room", "preemptible", "notice"),
    [(False, True, None), (True, False, "room_not_found")],
    ids=["no-make-room-tag", "no-preemptible-tag"],
)
def test_nothing_is_stopped_without_both_tags(
    ecs: LocalECS, tmp_path: Path, make_room: bool, preemptible: bool, notice: str | None
) -> None:
    """Without the make-room tag on agent, or the preemptible tag on web and cache, the gap is reported past the
    grace and no task is stopped; with no preemptible task that frees enough the manager says so, once."""
    local = ecs
    _, full = full_host(local, make_room=make_room, preemptible=preemptible)
    with run_daemon(local, tmp_path) as daemon:
        assert daemon.wait_for(lambda: bool(named(daemon, "coverage_gap")), timeout=30), daemon.lines[-5:]
        time.sleep(1.5)  # more than another grace of passes
        assert daemon.stop() == 0
    assert stop_calls(local) == []
    assert agent_hosts(local) == {h["containerInstanceArn"] for h in local.hosts(CLUSTER)} - {full}
    if notice is None:
        assert not [e for e in daemon.events if str(e.get("event", "")).startswith("room_")]
    else:
        [said] = named(daemon, notice)
        assert said["containerInstanceArn"] == full and said["service"] == "agent" and said["tasks"] == []


def test_nothing_is_stopped_when_the_reason_is_not_resources(ecs: LocalECS, tmp_path: Path) -> None:
    """ECS says the host misses an attribute: stopping tasks would not help, so none is stopped, and the manager
    says why once for the host, not every pass."""
    local = ecs
    _, full = full_host(local)
    local.update_desired_count(CLUSTER, "agent", 3)
    assert len(local.tasks(CLUSTER, "agent")) == 2  # the scheduler has run: its insufficient-memory event is there
    local.add_service_event(CLUSTER, "agent", MISSING_ATTRIBUTE.format(host=full.rsplit("/", 1)[-1]))
    with run_daemon(local, tmp_path) as daemon:
        assert daemon.wait_for(lambda: bool(named(daemon, "room_not_made")), timeout=30), daemon.lines[-5:]
        time.sleep(1.5)
        assert daemon.stop() == 0
    assert stop_calls(local) == []
    [said] = named(daemon, "room_not_made")
    assert said["level"] == "warning" and said["containerInstanceArn"] == full
    assert "missing an attribute" in said["reason"] and "not a lack of memory, CPU or ports" in said["why"]


def test_a_dry_run_names_what_it_would_stop_and_stops_nothing(ecs: LocalECS, tmp_path: Path) -> None:
    """With DRY_RUN the manager logs room_would_be_made naming web's task on the full host, and stops nothing."""
    local = ecs
    _, full = full_host(local)
    local.update_desired_count(CLUSTER, "agent", 3)
    [web_task] = local.tasks(CLUSTER, "web")
    with run_daemon(local, tmp_path, DRY_RUN="true") as daemon:
        assert daemon.wait_for(lambda: bool(named(daemon, "room_would_be_made")), timeout=30), daemon.lines[-5:]
        assert daemon.stop() == 0
    [would] = named(daemon, "room_would_be_made")
    assert would["containerInstanceArn"] == full and would["tasks"] == [web_task["taskArn"]]
    assert would["services"] == ["web"] and would["dry_run"] is True and "insufficient memory" in would["reason"]
    assert stop_calls(local) == [] and not named(daemon, "room_made")
    assert [t["taskArn"] for t in local.tasks(CLUSTER, "web")] == [web_task["taskArn"]]


def run_check(local: LocalECS, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUN_PY, "check", "--json"],
        env=daemon_env(local, CLUSTER=CLUSTER, SERVICES="agent", COVERAGE_GRACE="0", **settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def make_room_findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [f for f in json.loads(result.stdout)["findings"] if f["code"] == "make-room"]


def test_check_names_the_host_and_the_tasks_it_would_stop_and_stops_nothing(ecs: LocalECS) -> None:
    """check's make-room finding names the full host, web's task and its service; without a preemptible task that
    frees enough it warns instead; check stops nothing either way."""
    local = ecs
    _, full = full_host(local)
    local.update_desired_count(CLUSTER, "agent", 3)
    [web_task] = local.tasks(CLUSTER, "web")
    ec2 = {h["containerInstanceArn"]: h["ec2InstanceId"] for h in local.hosts(CLUSTER)}
    result = run_check(local)
    assert result.returncode == 1, result.stdout + result.stderr  # the missing task is an error past the grace
    [finding] = make_room_findings(result)
    assert finding["severity"] == "info" and finding["service"] == "agent"
    message = finding["message"]
    assert ec2[full] in message and full in message and "would stop 1 task(s)" in message
    assert f"{web_task['taskArn'].rsplit('/', 1)[-1]} (service web)" in message and "(service db)" not in message
    assert "1024 MiB" in message and "insufficient memory" in message
    local.client().untag_resource(
        resourceArn=local.client().describe_services(cluster=CLUSTER, services=["web"])["services"][0]["serviceArn"],
        tagKeys=[PREEMPTIBLE],
    )
    [warning] = make_room_findings(run_check(local))
    assert warning["severity"] == "warning" and "no set of tasks of preemptible services" in warning["message"]
    assert stop_calls(local) == []
