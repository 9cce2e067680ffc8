"""The Lambda handler fed real EventBridge event documents, in process, against the local ECS API."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from ecs_cluster_manager import lambda_handler
from ecs_cluster_manager.config import ConfigError
from localecs import LocalECS

EVENTS = Path(__file__).resolve().parent / "events"
# The documented example event names cluster "default"; the local world uses the same name.
CLUSTER = "default"
ECS_OPERATIONS = ("ListServices", "DescribeServices", "ListContainerInstances", "UpdateService", "DescribeClusters")
SETTINGS = (
    "CLUSTER",
    "SERVICES",
    "SERVICE_REGEX",
    "MANAGED_TAG",
    "DRY_RUN",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "SCALE_DOWN_AFTER",
    "CLOUDFORMATION_GUARD",
    "AWS_PROFILE",
)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def instance_event(
    world: World, host: int, version: int, *, status: str = "ACTIVE", connected: bool = True, cpu: int = 1988
) -> dict[str, Any]:
    """The documented instance event, rewritten for one host of the local world (a new `version` each change)."""
    event = copy.deepcopy(load_event("container-instance-state-change"))
    detail = event["detail"]
    detail.update(
        containerInstanceArn=world.hosts[host],
        clusterArn=world.cluster_arn,
        status=status,
        agentConnected=connected,
        version=version,
    )
    detail["remainingResources"][0]["integerValue"] = cpu
    return event


def api_calls(local: LocalECS) -> int:
    return sum(local.count(operation) for operation in ECS_OPERATIONS)


@dataclass(frozen=True)
class World:
    local: LocalECS
    cluster_arn: str
    hosts: list[str]


@pytest.fixture
def world(ecs: LocalECS, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Cluster "default" with 3 hosts and service web (distinctInstance) at 0; the handler configured for it."""
    cluster_arn = ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 3)
    ecs.create_service(CLUSTER, "web", desired_count=0, placement_constraints=[{"type": "distinctInstance"}])
    ecs.clear_calls()
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in ecs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLUSTER", CLUSTER)
    monkeypatch.setenv("SERVICES", "web")
    saved_logging = structlog.get_config()
    lambda_handler.reset()
    yield World(ecs, cluster_arn, hosts)
    lambda_handler.reset()
    structlog.configure(**saved_logging)


def test_instance_state_change_sizes_the_service(world: World) -> None:
    """The documented instance state change event for the cluster sets desiredCount to the host count."""
    summary = lambda_handler.handler(load_event("container-instance-state-change"), None)
    assert world.local.desired_count(CLUSTER, "web") == 3
    assert summary["ok"] is True and summary["updated"] == 1
    assert [(d["service"], d["action"], d["target"]) for d in summary["decisions"]] == [("web", "update", 3)]
    assert json.loads(json.dumps(summary)) == summary


def test_scale_down_is_immediate(world: World) -> None:
    """Without memory between invocations a drained host lowers desiredCount in the very next invocation."""
    lambda_handler.handler(instance_event(world, 0, 1), None)
    world.local.drain(CLUSTER, world.hosts[0])
    summary = lambda_handler.handler(instance_event(world, 0, 2, status="DRAINING"), None)
    assert world.local.desired_count(CLUSTER, "web") == 2
    assert summary["decisions"][0]["reason"] == "scale down: fewer ACTIVE hosts (drained or deregistered)"


def test_lost_agent_lowers_at_once_without_memory(world: World) -> None:
    """A lost agent, which the daemon holds for SCALE_DOWN_AFTER passes, lowers at once here: no memory."""
    lambda_handler.handler(instance_event(world, 0, 1), None)
    world.local.set_agent_connected(CLUSTER, world.hosts[0], False)
    summary = lambda_handler.handler(instance_event(world, 0, 2, connected=False), None)
    assert world.local.desired_count(CLUSTER, "web") == 2
    assert summary["decisions"][0]["reason"] == "scale down: agent lost"


def test_warm_container_ignores_task_placements_of_known_instances(world: World) -> None:
    """A task placed on a known instance (only remainingResources changed), a duplicate or an older version
    starts no pass and makes no ECS call; a status change of the same instance does; a cold container runs."""
    assert "ignored" not in lambda_handler.handler(instance_event(world, 1, 10), None)  # cold: unknown instance
    world.local.clear_calls()
    placed = lambda_handler.handler(instance_event(world, 1, 11, cpu=1024), None)
    duplicate = lambda_handler.handler(instance_event(world, 1, 11, cpu=1024), None)
    older = lambda_handler.handler(instance_event(world, 1, 9), None)
    assert [placed, duplicate, older] == [
        {"ignored": True, "reason": "no_change"},
        {"ignored": True, "reason": "duplicate"},
        {"ignored": True, "reason": "stale"},
    ]
    assert api_calls(world.local) == 0
    world.local.drain(CLUSTER, world.hosts[1])
    summary = lambda_handler.handler(instance_event(world, 1, 12, status="DRAINING"), None)
    assert summary["decisions"][0]["target"] == 2
    lambda_handler.reset()  # a new (cold) container knows no instance: the same kind of event runs a pass
    assert "ignored" not in lambda_handler.handler(instance_event(world, 1, 13, cpu=512), None)


def test_scheduled_event_runs_a_pass(world: World) -> None:
    """The safety-net "Scheduled Event" runs a pass like an instance event does."""
    summary = lambda_handler.handler(load_event("scheduled-event"), None)
    assert world.local.desired_count(CLUSTER, "web") == 3 and summary["updated"] == 1


def test_cluster_given_as_arn_matches_events_by_name(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """With CLUSTER set to the cluster's ARN, an event naming the cluster by its own ARN still starts a pass."""
    monkeypatch.setenv("CLUSTER", world.cluster_arn)
    event = load_event("container-instance-state-change")
    # The documented event's account differs from the local one: only the cluster name matches.
    assert event["detail"]["clusterArn"] != world.cluster_arn
    summary = lambda_handler.handler(event, None)
    assert "ignored" not in summary
    assert world.local.desired_count(CLUSTER, "web") == 3


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("container-instance-deregistered-other-cluster", "event is for cluster 'other', not 'default'"),
        ("task-state-change", "unsupported detail-type 'ECS Task State Change'"),
    ],
)
def test_irrelevant_events_make_no_ecs_call(world: World, name: str, reason: str) -> None:
    """Events for another cluster or of another detail-type are ignored with a reason, before any ECS call."""
    summary = lambda_handler.handler(load_event(name), None)
    assert summary == {"ignored": True, "reason": reason}
    assert api_calls(world.local) == 0
    assert world.local.desired_count(CLUSTER, "web") == 0
    json.dumps(summary)


def test_event_without_cluster_is_ignored(world: World) -> None:
    """An instance event whose detail lacks clusterArn is ignored rather than acted on or crashing."""
    event = copy.deepcopy(load_event("container-instance-state-change"))
    del event["detail"]["clusterArn"]
    assert lambda_handler.handler(event, None) == {"ignored": True, "reason": "event has no detail.clusterArn"}
    assert api_calls(world.local) == 0


def test_client_is_made_once_per_container(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm invocations reuse the configuration and the ECS client built by the first one."""
    built: list[object] = []
    real_api = lambda_handler.Api

    def counting_api(*args: Any, **kwargs: Any) -> object:
        api = real_api(*args, **kwargs)
        built.append(api)
        return api

    monkeypatch.setattr(lambda_handler, "Api", counting_api)
    event = load_event("scheduled-event")
    for _ in range(3):
        lambda_handler.handler(event, None)
    assert len(built) == 1


def test_config_error_is_raised_and_not_cached(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing CLUSTER raises ConfigError naming it; once the variable is set the next invocation works."""
    monkeypatch.delenv("CLUSTER")
    with pytest.raises(ConfigError, match="CLUSTER"):
        lambda_handler.handler(load_event("scheduled-event"), None)
    monkeypatch.setenv("CLUSTER", CLUSTER)
    assert lambda_handler.handler(load_event("scheduled-event"), None)["updated"] == 1


def test_failed_pass_is_reported_not_raised(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass against a missing cluster returns a summary with ok false and the error, still JSON-able."""
    monkeypatch.setenv("CLUSTER", "gone")
    event = load_event("container-instance-state-change")
    event["detail"]["clusterArn"] = "arn:aws:ecs:us-east-1:111122223333:cluster/gone"
    summary = lambda_handler.handler(event, None)
    assert summary["ok"] is False and summary["errors"]
    json.dumps(summary)
