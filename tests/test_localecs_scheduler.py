"""The local API's tasks: CreateService keeps what moto drops, services place their tasks, ListTasks and
DescribeTasks behave as ECS's do. Every check goes through a plain boto3 client."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon_helpers import RUN_PY, daemon_env
from localecs import LocalECS

CLUSTER = "tasks"
DISTINCT = [{"type": "distinctInstance"}]
ROLLING = {"minimumHealthyPercent": 50, "maximumPercent": 100}


def task_definition(local: LocalECS) -> str:
    return local.register_task_definition("by-hand", memory=64)


def describe(local: LocalECS, name: str) -> dict[str, Any]:
    return dict(local.client().describe_services(cluster=CLUSTER, services=[name])["services"][0])


def test_create_service_by_hand_keeps_placement_and_deployment_settings(ecs: LocalECS) -> None:
    """A service created through the API (not the helper) keeps its constraints, strategy and deployment
    configuration, so check finds no false `no-distinct-instance` or `deployment-deadlock` (issue 17, row 9)."""
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    created = ecs.client().create_service(
        cluster=CLUSTER,
        serviceName="by-hand",
        taskDefinition=task_definition(ecs),
        desiredCount=0,
        launchType="EC2",
        placementConstraints=DISTINCT,
        placementStrategy=[{"type": "spread", "field": "instanceId"}],
        deploymentConfiguration=ROLLING,
    )["service"]
    assert created["placementConstraints"] == DISTINCT
    service = describe(ecs, "by-hand")
    assert service["placementConstraints"] == DISTINCT
    assert service["placementStrategy"] == [{"type": "spread", "field": "instanceId"}]
    assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 50
    result = subprocess.run(
        [sys.executable, RUN_PY, "check", "--json"],
        env=daemon_env(ecs, CLUSTER=CLUSTER, SERVICES="by-hand"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no-distinct-instance" not in result.stdout and "deployment-deadlock" not in result.stdout


def test_services_place_one_task_per_eligible_host_and_follow_memberof(ecs: LocalECS) -> None:
    """With scheduling on, a distinctInstance service places one task per host its memberOf allows, no more."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    web = ecs.add_hosts(CLUSTER, 2, attributes={"role": "web"})
    ecs.add_hosts(CLUSTER, 2, attributes={"role": "batch"})
    constraints = [*DISTINCT, {"type": "memberOf", "expression": "attribute:role == web"}]
    ecs.create_service(CLUSTER, "web-agent", desired_count=4, placement_constraints=constraints)
    tasks = ecs.tasks(CLUSTER, "web-agent")
    assert sorted(t["containerInstanceArn"] for t in tasks) == sorted(web)
    service = describe(ecs, "web-agent")
    assert service["runningCount"] == 2
    assert "was unable to place a task" in service["events"][0]["message"]
    assert "DistinctInstance placement constraint unsatisfied" in service["events"][0]["message"]


def test_tasks_leave_drained_and_deregistered_hosts(ecs: LocalECS) -> None:
    """A drained host's task is stopped (and placed nowhere else with distinctInstance); a deregistered one's too."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    hosts = ecs.add_hosts(CLUSTER, 3)
    ecs.create_service(CLUSTER, "agent", desired_count=3, placement_constraints=DISTINCT)
    assert len(ecs.tasks(CLUSTER, "agent")) == 3
    ecs.drain(CLUSTER, hosts[0])
    assert sorted(t["containerInstanceArn"] for t in ecs.tasks(CLUSTER, "agent")) == sorted(hosts[1:])
    ecs.deregister(CLUSTER, hosts[1])
    assert [t["containerInstanceArn"] for t in ecs.tasks(CLUSTER, "agent")] == [hosts[2]]


def test_a_new_task_definition_starts_a_primary_deployment_and_replaces_the_tasks(ecs: LocalECS) -> None:
    """UpdateService with a taskDefinition: a new PRIMARY deployment; the tasks are replaced unless stops are held."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 2)
    ecs.create_service(CLUSTER, "agent", desired_count=2, placement_constraints=DISTINCT)
    assert len(ecs.tasks(CLUSTER, "agent")) == 2  # placed (lazily, at this read) with the first task definition
    new = ecs.register_task_definition("agent-v2")
    ecs.scheduler.hold_stops = True
    ecs.update_task_definition(CLUSTER, "agent", new)
    deployments = {d["status"]: d["taskDefinition"] for d in describe(ecs, "agent")["deployments"]}
    assert deployments["PRIMARY"] == new and deployments["ACTIVE"] != new
    assert {t["taskDefinitionArn"] for t in ecs.tasks(CLUSTER, "agent")} == {deployments["ACTIVE"]}
    ecs.scheduler.hold_stops = False
    ecs.scheduler.changed()
    assert {t["taskDefinitionArn"] for t in ecs.tasks(CLUSTER, "agent")} == {new}
    assert [d["status"] for d in describe(ecs, "agent")["deployments"]] == ["PRIMARY"]


def test_list_tasks_filters_by_service_and_pages_and_describe_tasks_takes_100(ecs: LocalECS) -> None:
    """ListTasks honours serviceName (moto ignores it) with 100-task pages; DescribeTasks refuses 101 tasks and
    does not move a task's state on when read (moto's state manager would)."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 150)
    ecs.create_service(CLUSTER, "wide", desired_count=150, placement_constraints=DISTINCT)
    ecs.create_service(CLUSTER, "narrow", desired_count=2, placement_constraints=DISTINCT)
    client = ecs.client()
    first = client.list_tasks(cluster=CLUSTER, serviceName="wide")
    assert len(first["taskArns"]) == 100 and "nextToken" in first
    second = client.list_tasks(cluster=CLUSTER, serviceName="wide", nextToken=first["nextToken"])
    assert len(second["taskArns"]) == 50 and "nextToken" not in second
    narrow = client.list_tasks(cluster=CLUSTER, serviceName="narrow")["taskArns"]
    assert len(narrow) == 2 and not set(narrow) & set(first["taskArns"] + second["taskArns"])
    with pytest.raises(ClientError) as caught:
        client.describe_tasks(cluster=CLUSTER, tasks=first["taskArns"] + second["taskArns"][:1])
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    for _ in range(3):
        described = client.describe_tasks(cluster=CLUSTER, tasks=narrow)["tasks"]
        assert [t["lastStatus"] for t in described] == ["RUNNING", "RUNNING"]
        assert all(t["group"] == "service:narrow" for t in described)
    with pytest.raises(ClientError) as caught:
        client.list_tasks(cluster=CLUSTER, serviceName="no-such-service")
    assert caught.value.response["Error"]["Code"] == "ServiceNotFoundException"


def test_a_service_event_added_by_hand_is_the_newest_until_the_scheduler_writes_one(ecs: LocalECS) -> None:
    """add_service_event puts ECS's kind of event on top of DescribeServices' events; the scheduler's own
    placement failure goes above it at its next run that fails to place."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    ecs.add_hosts(CLUSTER, 1)
    big = ecs.register_task_definition("big", memory=5000)
    ecs.create_service(CLUSTER, "agent", desired_count=1, task_definition=big)
    assert "has reached a steady state" in describe(ecs, "agent")["events"][0]["message"]
    ecs.add_service_event(CLUSTER, "agent", "service agent was unable to place a task: by hand")
    events = describe(ecs, "agent")["events"]
    assert events[0]["message"] == "service agent was unable to place a task: by hand"
    assert "has reached a steady state" in events[1]["message"] and events[0]["createdAt"] >= events[1]["createdAt"]
    ecs.update_desired_count(CLUSTER, "agent", 2)  # one host, no room for a second task
    assert "has insufficient memory available" in describe(ecs, "agent")["events"][0]["message"]
