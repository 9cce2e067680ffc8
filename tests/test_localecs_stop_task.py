"""The local API's StopTask and "ECS Task State Change" events, through plain boto3 clients.

A service's stopped task is started again where one fits, as ECS's service
scheduler does; a task of no service is not. With task events enabled, the
scheduler's starts and every stop reach the queue as ECS's task events.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from localecs import LocalECS

CLUSTER = "stop-task"
OTHER = "stop-task-other"
READY = "ecs-cluster-manager.ready"
HOST_MEMORY = 7482  # MiB a local host registers
TASK_DETAIL_KEYS = {
    "clusterArn", "containerInstanceArn", "taskArn", "group", "lastStatus", "desiredStatus", "taskDefinitionArn",
    "version", "updatedAt",
}


@pytest.fixture
def cluster(ecs: LocalECS) -> LocalECS:
    """A clean local ECS with scheduling on and one empty cluster."""
    ecs.scheduler.enabled = True
    ecs.create_cluster(CLUSTER)
    return ecs


def receive(ecs: LocalECS, queue_url: str, *, wait: int = 1) -> list[dict[str, Any]]:
    """Every message body now on the queue, parsed, deleting each; waits up to `wait` s for the first."""
    sqs = ecs.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if bodies else wait)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(message["Body"]) for message in messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def describe_task(local: LocalECS, task_arn: str) -> dict[str, Any]:
    return dict(local.client().describe_tasks(cluster=CLUSTER, tasks=[task_arn])["tasks"][0])


def test_a_stopped_service_task_is_started_again_where_it_fits(cluster: LocalECS) -> None:
    """StopTask stops the task with its reason; the service starts another on the one host that fits: not the
    host without the ready attribute, not the full one, not the one already running its task (distinctInstance)."""
    ready = cluster.add_hosts(CLUSTER, 2, attributes={READY: "true"})
    [not_ready] = cluster.add_hosts(CLUSTER, 1)
    [full] = cluster.add_hosts(CLUSTER, 1, attributes={READY: "true"}, reserved_memory=HOST_MEMORY)
    constraints = [{"type": "distinctInstance"}, {"type": "memberOf", "expression": f"attribute:{READY} == true"}]
    cluster.create_service(CLUSTER, "agent", desired_count=2, placement_constraints=constraints)
    before = cluster.tasks(CLUSTER, "agent")
    assert sorted(t["containerInstanceArn"] for t in before) == sorted(ready)
    victim = next(t for t in before if t["containerInstanceArn"] == ready[0])
    client = cluster.client()
    stopped = client.stop_task(cluster=CLUSTER, task=victim["taskArn"], reason="Preempted for node-agent")["task"]
    assert stopped["lastStatus"] == "STOPPED" and stopped["stoppedReason"] == "Preempted for node-agent"
    after = cluster.tasks(CLUSTER, "agent")
    assert len(after) == 2 and victim["taskArn"] not in {t["taskArn"] for t in after}
    assert sorted(t["containerInstanceArn"] for t in after) == sorted(ready)
    assert not_ready not in {t["containerInstanceArn"] for t in after} and full not in {
        t["containerInstanceArn"] for t in after
    }
    described = describe_task(cluster, victim["taskArn"])
    assert described["lastStatus"] == described["desiredStatus"] == "STOPPED"
    assert described["stoppedReason"] == "Preempted for node-agent" and described["stopCode"] == "UserInitiated"
    assert client.describe_services(cluster=CLUSTER, services=["agent"])["services"][0]["runningCount"] == 2


def test_a_stopped_service_task_moves_to_another_host_when_its_own_has_no_room(cluster: LocalECS) -> None:
    """The task's host filled meanwhile (another task took its room), the service starts its task elsewhere."""
    hosts = cluster.add_hosts(CLUSTER, 2)
    big = cluster.register_task_definition("big", memory=HOST_MEMORY - 100)
    cluster.create_service(CLUSTER, "big", desired_count=1, task_definition=big)
    [task] = cluster.tasks(CLUSTER, "big")
    first = task["containerInstanceArn"]
    cluster.client().stop_task(cluster=CLUSTER, task=task["taskArn"], reason="make room")
    cluster.task_placed(CLUSTER, first, cpu=0, memory=200)  # the room it left is taken
    [again] = cluster.tasks(CLUSTER, "big")
    assert again["containerInstanceArn"] == next(h for h in hosts if h != first)


def test_a_task_of_no_service_stopped_is_not_restarted(cluster: LocalECS) -> None:
    """A RunTask task stopped stays stopped, with its reason, and nothing takes its place."""
    cluster.add_hosts(CLUSTER, 1)
    client = cluster.client()
    definition = cluster.register_task_definition("one-off")
    [task] = client.run_task(cluster=CLUSTER, taskDefinition=definition)["tasks"]
    client.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="done")
    assert client.list_tasks(cluster=CLUSTER)["taskArns"] == []
    assert client.list_tasks(cluster=CLUSTER, desiredStatus="STOPPED")["taskArns"] == [task["taskArn"]]
    assert describe_task(cluster, task["taskArn"])["stoppedReason"] == "done"


def test_stopping_twice_changes_nothing_and_an_unknown_task_is_invalid(cluster: LocalECS) -> None:
    """A second StopTask keeps the first reason and frees no memory again (moto frees it twice); an unknown task
    is an InvalidParameterException (moto answers with a server error)."""
    [host] = cluster.add_hosts(CLUSTER, 1)
    client = cluster.client()
    definition = cluster.register_task_definition("twice", memory=512)
    [task] = client.run_task(cluster=CLUSTER, taskDefinition=definition)["tasks"]

    def memory_left() -> int:
        [instance] = client.describe_container_instances(cluster=CLUSTER, containerInstances=[host])[
            "containerInstances"
        ]
        return next(int(r["integerValue"]) for r in instance["remainingResources"] if r["name"] == "MEMORY")

    client.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="first")
    left = memory_left()
    again = client.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="second")["task"]
    assert again["stoppedReason"] == "first" and memory_left() == left == HOST_MEMORY
    with pytest.raises(ClientError) as caught:
        client.stop_task(cluster=CLUSTER, task=task["taskArn"].rsplit("/", 1)[0] + "/0123456789abcdef", reason="x")
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"


# -- ECS Task State Change events -------------------------------------------------


def task_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["detail-type"] == "ECS Task State Change"]


def test_task_events_for_a_start_and_a_stop_reach_a_queue_whose_rule_takes_them(cluster: LocalECS) -> None:
    """With task_events=True the scheduler's start (RUNNING) and StopTask (STOPPED, with stoppedReason) are events
    with ECS's detail; the restarted task's start is one too."""
    queue = cluster.enable_events(CLUSTER, task_events=True)
    [host] = cluster.add_hosts(CLUSTER, 1)
    receive(cluster, queue)
    cluster.create_service(CLUSTER, "agent", desired_count=1)
    [task] = cluster.tasks(CLUSTER, "agent")
    [started] = task_events(receive(cluster, queue))
    assert started["source"] == "aws.ecs" and started["resources"] == [task["taskArn"]]
    detail = started["detail"]
    assert TASK_DETAIL_KEYS <= set(detail) and "stoppedReason" not in detail
    assert detail["clusterArn"].endswith(f":cluster/{CLUSTER}") and detail["containerInstanceArn"] == host
    assert (detail["taskArn"], detail["group"], detail["lastStatus"], detail["desiredStatus"]) == (
        task["taskArn"], "service:agent", "RUNNING", "RUNNING"
    )
    assert detail["taskDefinitionArn"] == task["taskDefinitionArn"] and detail["version"] == 1
    cluster.client().stop_task(cluster=CLUSTER, task=task["taskArn"], reason="Preempted")
    [replacement] = cluster.tasks(CLUSTER, "agent")
    events = receive(cluster, queue)
    by_task = {(e["detail"]["taskArn"], e["detail"]["lastStatus"]): e["detail"] for e in task_events(events)}
    assert set(by_task) == {(task["taskArn"], "STOPPED"), (replacement["taskArn"], "RUNNING")}
    stopped = by_task[(task["taskArn"], "STOPPED")]
    assert stopped["desiredStatus"] == "STOPPED" and stopped["stoppedReason"] == "Preempted"
    assert stopped["version"] == 2 and stopped["group"] == "service:agent"
    # The host's own state-change event for the stop comes as before.
    assert [e["detail"]["containerInstanceArn"] for e in events if e not in task_events(events)] == [host]


def test_without_the_option_a_queue_gets_no_task_events(cluster: LocalECS) -> None:
    """By default nothing new reaches the queue; and a rule without the task detail-type filters out the task events
    another cluster's rule makes the local API publish."""
    queue = cluster.enable_events(CLUSTER)
    [host] = cluster.add_hosts(CLUSTER, 1)
    cluster.create_service(CLUSTER, "agent", desired_count=1)
    [task] = cluster.tasks(CLUSTER, "agent")
    assert not cluster.events.task_events_active
    cluster.create_cluster(OTHER)
    other_queue = cluster.enable_events(OTHER, task_events=True)
    cluster.client().stop_task(cluster=CLUSTER, task=task["taskArn"], reason="x")
    cluster.tasks(CLUSTER, "agent")
    events = receive(cluster, queue)
    assert [e["detail-type"] for e in events] == ["ECS Container Instance State Change"] * 2
    assert {e["resources"][0] for e in events} == {host}
    assert receive(cluster, other_queue) == []
